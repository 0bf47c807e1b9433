"""``ironbus test``: run integrators' YAML test files for mappings and whole routes.

A test file (``*.test.yaml``) holds ``tests:``, each one either a *mapping test* (``mapping:`` + input +
expectation) or a *route test* (``route:`` + input + expectations per target). Route tests run the real
filter/map/validate steps and hand each delivery to a recording stub instead of the real system, so they need
no network. See docs/testing.md for the format.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from adapters.base import Call
from adapters.stub import StubAdapter
from bus.config import Config, load_config
from bus.envelope import Event
from bus.errors import ConfigError, DecodeError, IronbusError, Location, UnknownNameError
from bus.mapping import Mapping
from bus.pipeline import Pipeline
from bus.schemas import SchemaRegistry, default_registry
from bus.xmldict import xml_to_dict
from bus.xref import MemoryXref
from bus.yamlfile import YamlMap, load_json_text, load_yaml, locate, plain

__all__ = ["TestOutcome", "discover", "json_contains_diff", "json_equals_diff", "run_file", "run_paths"]

_TEST_KEYS = {"name", "mapping", "route", "routes", "input", "input_file", "event", "xref", "expect", "description"}
_EXPECT_KEYS = {"json_contains", "json_equals", "valid", "error", "deliveries", "filtered", "no_deliveries"}
_DELIVERY_KEYS = {"target", "json_contains", "json_equals", "valid"}


@dataclass
class TestOutcome:
    file: str
    name: str
    passed: bool
    location: Location | None = None
    details: list[str] = field(default_factory=list)
    #: what passed but looks wrong: mapping expressions that found nothing in the test's input
    notes: list[str] = field(default_factory=list)


def discover(paths: list[Path]) -> list[Path]:
    """Every ``*.test.yaml`` / ``*.test.yml`` file under the given files and folders, sorted."""
    found: list[Path] = []
    for p in paths:
        if p.is_dir():
            found.extend(sorted([*p.rglob("*.test.yaml"), *p.rglob("*.test.yml")]))
        elif p.exists():
            found.append(p)
        else:
            raise ConfigError("no such file or folder", Location(str(p)))
    return found


# -- comparisons -----------------------------------------------------------------------------------------
def json_contains_diff(expected: Any, actual: Any, path: str = "$") -> list[str]:
    """Why ``actual`` does not contain ``expected`` (objects: subset; lists: element by index)."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{path}: expected an object, got {_short(actual)}"]
        out: list[str] = []
        for key, value in expected.items():
            if key not in actual:
                out.append(f"{path}.{key}: missing (expected {_short(value)})")
            else:
                out.extend(json_contains_diff(value, actual[key], f"{path}.{key}"))
        return out
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return [f"{path}: expected a list, got {_short(actual)}"]
        if len(actual) < len(expected):
            return [f"{path}: expected at least {len(expected)} items, got {len(actual)}"]
        return [d for i, value in enumerate(expected) for d in json_contains_diff(value, actual[i], f"{path}[{i}]")]
    if expected != actual or type(expected) is not type(actual) and not _same_number(expected, actual):
        return [f"{path}: expected {_short(expected)}, got {_short(actual)}"]
    return []


def _same_number(a: Any, b: Any) -> bool:
    return isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool) \
        and not isinstance(b, bool) and a == b


def json_equals_diff(expected: Any, actual: Any) -> list[str]:
    """A unified diff of the two documents as sorted, indented JSON (empty when equal)."""
    if expected == actual:
        return []
    exp = orjson.dumps(plain(expected), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode().splitlines()
    act = orjson.dumps(plain(actual), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode().splitlines()
    return list(difflib.unified_diff(exp, act, "expected", "actual", lineterm="", n=2))


def _short(value: Any) -> str:
    text = orjson.dumps(plain(value), option=orjson.OPT_SORT_KEYS).decode()
    return text if len(text) <= 120 else text[:117] + "..."


# -- running ---------------------------------------------------------------------------------------------
def _input(test: YamlMap, base: Path) -> Any:
    if "input_file" in test:
        file = base / str(test["input_file"])
        try:
            raw = file.read_bytes()
        except OSError:
            raise ConfigError(f"input_file {str(test['input_file'])!r} not found (looked at {file})",
                              locate(test, ["input_file"])) from None
        if file.suffix in (".yaml", ".yml"):
            return load_yaml(file)
        if file.suffix == ".xml":
            try:
                return xml_to_dict(raw, source=str(file))
            except DecodeError as exc:
                raise ConfigError(str(exc), locate(test, ["input_file"])) from None
        return load_json_text(raw, str(file))
    if "input" in test:
        # plain dicts and lists, as a decoded JSON payload would be: JMESPath's type checks (join, sort …) do not
        # know the YAML loader's located subclasses
        return plain(test["input"])
    if "event" in test:
        return test["event"].get("data") if isinstance(test["event"], dict) else None
    raise ConfigError("a test needs 'input', 'input_file' or 'event'", getattr(test, "location", None))


def _xref(test: YamlMap) -> MemoryXref:
    seed = test.get("xref") or {}
    if not isinstance(seed, dict):
        raise ConfigError("'xref' must map entity -> system -> {system_id: canonical_id}", locate(test, ["xref"]))
    return MemoryXref.from_dict(seed)


def _check_output(expect: dict[str, Any], actual: Any, schemas: SchemaRegistry) -> list[str]:
    problems: list[str] = []
    if "json_contains" in expect:
        problems += json_contains_diff(expect["json_contains"], actual)
    if "json_equals" in expect:
        problems += json_equals_diff(expect["json_equals"], actual)
    if "valid" in expect:
        try:
            schemas.validate(str(expect["valid"]), actual)
        except IronbusError as exc:
            problems.append(str(exc))
    return problems


def _find_routes(base: Path) -> Path:
    for folder in [base, *base.parents]:
        if (folder / "routes.yaml").is_file():
            return folder / "routes.yaml"
    raise ConfigError("no routes.yaml found above the test file; name it with 'routes:'", Location(str(base)))


class _Runner:
    notes: list[str]

    def __init__(self, schemas: SchemaRegistry, routes: Path | None) -> None:
        self.schemas = schemas
        self.routes = routes
        self._configs: dict[Path, Config] = {}

    def config(self, path: Path) -> Config:
        resolved = path.resolve()
        if resolved not in self._configs:
            self._configs[resolved] = load_config(resolved)
        return self._configs[resolved]

    def shared_value_maps(self, test: YamlMap, base: Path) -> dict[str, Any]:
        """The routes.yaml ``value_maps`` a mapping sees at run time; none when there is no routes.yaml."""
        if "routes" in test:
            path = base / str(test["routes"])
        elif self.routes is not None:
            path = self.routes
        else:
            try:
                path = _find_routes(base)
            except ConfigError:
                return {}  # a mapping can be tested on its own, before any routes.yaml exists
        return dict(self.config(path).value_maps)

    def mapping_test(self, test: YamlMap, base: Path, expect: dict[str, Any]) -> list[str]:
        for key in ("deliveries", "filtered", "no_deliveries"):
            if key in expect:
                raise ConfigError(f"expect.{key} only applies to route tests ('route:')", locate(test, ["expect", key]))
        mapping = Mapping.load(base / str(test["mapping"]), value_maps=self.shared_value_maps(test, base),
                               xref=_xref(test))
        doc = _input(test, base)
        given = test.get("event")
        # `event:` gives the attributes event('…') reads (emit maps read the event that caused the result)
        event: Event | None = None
        if isinstance(given, dict):
            attrs: dict[str, Any] = {k: str(given[k]) for k in ("id", "correlationid", "causationid", "subject")
                                     if k in given}
            event = Event(type=str(given.get("type", "test.event")), source=str(given.get("source", "ironbus/test")),
                          data=given.get("data", doc), key=given.get("key"), sequence=given.get("sequence"), **attrs)
        try:
            actual = mapping.apply(doc, event=event)
        except IronbusError as exc:
            return _expected_error(expect, exc)
        self.notes = [f"field {target!r} is left out: {_short_expr(expression)} finds nothing in the input"
                      for target, expression in mapping.unmatched(doc, event=event)]
        if "error" in expect:
            return [f"expected an error containing {expect['error']!r}, but the mapping succeeded: {_short(actual)}"]
        return _check_output(expect, actual, self.schemas)

    def route_test(self, test: YamlMap, base: Path, expect: dict[str, Any]) -> list[str]:
        wanted_deliveries = _deliveries(test, expect)  # checked first: a typo must fail even if nothing is sent
        routes = base / str(test["routes"]) if "routes" in test else (self.routes or _find_routes(base))
        config = self.config(routes)
        pipeline = Pipeline(config, schemas=self.schemas, xref=_xref(test))
        try:
            route = pipeline.routes_for("", str(test["route"]))[0]
        except UnknownNameError as exc:
            raise UnknownNameError("route", exc.name, exc.known, locate(test, ["route"])) from None
        given = test.get("event")
        event_doc: dict[str, Any] = given if isinstance(given, dict) else {}
        event = Event(type=str(event_doc.get("type", route.config.source)), source="ironbus/test",
                      data=_input(test, base), key=event_doc.get("key"), sequence=event_doc.get("sequence"))
        result = pipeline.run_route(route, event)
        if result.error is not None:
            return _expected_error(expect, result.error)
        if "error" in expect:
            return [f"expected an error containing {expect['error']!r}, but the route produced {result.status!r}"]
        if expect.get("filtered"):
            return [] if result.status == "filtered" else ["expected the filter to drop the event, it passed"]
        if result.status == "filtered":
            return ["the route's filter dropped the event"]
        stubs: dict[str, StubAdapter] = {}
        for dispatch in result.dispatches:
            stub = stubs.setdefault(dispatch.target_name, StubAdapter(dispatch.target.config.system, {}))
            stub.call(dispatch.target.config.operation,
                      Call(dispatch.event, dispatch.payload, dispatch.idempotency_key, route=route.name))
        problems: list[str] = []
        if expect.get("no_deliveries") and result.dispatches:
            problems.append(f"expected no deliveries, got {[d.target_name for d in result.dispatches]}")
        for i, wanted in enumerate(wanted_deliveries):
            target = str(wanted["target"])
            recorded = stubs.get(target)
            if recorded is None or not recorded.calls:
                sent = sorted(stubs) or ["nothing"]
                problems.append(f"deliveries[{i}]: expected a delivery to {target!r}, got {', '.join(sent)}")
                continue
            _, call = recorded.calls[0]
            problems += [f"{target}: {p}" for p in _check_output(wanted, call.payload, self.schemas)]
        return problems


def _deliveries(test: YamlMap, expect: dict[str, Any]) -> list[dict[str, Any]]:
    # A misspelt check would otherwise be ignored and the test could never fail, so every key is checked.
    wanted = expect.get("deliveries") or []
    where = locate(test, ["expect", "deliveries"])
    if not isinstance(wanted, list):
        raise ConfigError("expect.deliveries: expected a list of {target: system.operation, ...}", where)
    for i, entry in enumerate(wanted):
        here = locate(test, ["expect", "deliveries", i], where)
        if not isinstance(entry, dict) or "target" not in entry:
            raise ConfigError(f"expect.deliveries[{i}]: expected an object with 'target: system.operation'", here)
        for key in entry:
            if key not in _DELIVERY_KEYS:
                raise UnknownNameError("delivery expectation", key, _DELIVERY_KEYS,
                                       locate(test, ["expect", "deliveries", i, key], here))
    return wanted


def _expected_error(expect: dict[str, Any], exc: IronbusError) -> list[str]:
    wanted = expect.get("error")
    if wanted is None:
        return [f"unexpected error: {exc}"]
    return [] if str(wanted) in str(exc) else [f"expected an error containing {wanted!r}, got: {exc}"]


def _tests(doc: Any, file: Path) -> Iterator[YamlMap]:
    if not isinstance(doc, YamlMap) or not isinstance(doc.get("tests"), list):
        raise ConfigError("a test file must have a 'tests:' list", Location(str(file), 1, 1))
    for test in doc["tests"]:
        if not isinstance(test, YamlMap):
            raise ConfigError("each test must be a mapping with 'name:'", getattr(doc["tests"], "location", None))
        for key in test:
            if key not in _TEST_KEYS:
                raise UnknownNameError("test field", key, _TEST_KEYS, locate(test, [key]))
        yield test


def run_file(file: Path, *, schemas: SchemaRegistry | None = None, routes: Path | None = None) -> list[TestOutcome]:
    """Run every test in one file; a broken file is one failed outcome with its location."""
    runner = _Runner(schemas or default_registry(), routes)
    outcomes: list[TestOutcome] = []
    try:
        tests = list(_tests(load_yaml(file), file))
    except ConfigError as exc:
        return [TestOutcome(str(file), "(file)", False, exc.location, [exc.message])]
    for index, test in enumerate(tests):
        runner.notes = []
        name = str(test.get("name", f"test #{index + 1}"))
        expect = test.get("expect") or {}
        try:
            if not isinstance(expect, dict):
                raise ConfigError("'expect' must be an object of checks", locate(test, ["expect"]))
            unknown = [k for k in expect if k not in _EXPECT_KEYS]
            if unknown:
                raise UnknownNameError("expectation", unknown[0], _EXPECT_KEYS, locate(test, ["expect", unknown[0]]))
            if "mapping" in test:
                problems = runner.mapping_test(test, file.parent, expect)
            elif "route" in test:
                problems = runner.route_test(test, file.parent, expect)
            else:
                raise ConfigError("a test needs 'mapping:' or 'route:'", test.location)
        except ConfigError as exc:
            # a problem in the test file points at its line; one in a file the test uses (a mapping, routes.yaml)
            # keeps that file's location in the message and the outcome points at the test
            if exc.location is not None and exc.location.file == str(file):
                outcomes.append(TestOutcome(str(file), name, False, exc.location, [exc.message]))
            else:
                outcomes.append(TestOutcome(str(file), name, False, test.location, [str(exc)]))
            continue
        outcomes.append(TestOutcome(str(file), name, not problems, test.location, problems, runner.notes))
    return outcomes


def run_paths(paths: list[Path], *, routes: Path | None = None) -> list[TestOutcome]:
    schemas = default_registry()
    return [o for f in discover(paths) for o in run_file(f, schemas=schemas, routes=routes)]


def _short_expr(text: str) -> str:
    """An expression quoted for a one-line note (long ones are cut)."""
    return repr(text if len(text) <= 60 else text[:57] + "...")
