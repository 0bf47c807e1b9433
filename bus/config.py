"""Loading ``routes.yaml`` into typed, validated configuration.

Structural errors are caught by ``schemas/routes.schema.json`` (the same file editors use for completion)
and reported at the offending ``file:line:column``. Cross-references that need the adapters, mappings and
schemas (unknown adapter, missing mapping file …) are checked by :mod:`bus.lint`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

import jsonschema
import orjson
from croniter import croniter

from bus.errors import ConfigError, Location, UnknownNameError
from bus.interpolate import interpolate
from bus.ownership import EntityOwnership, parse_ownership
from bus.schemas import SCHEMA_DIR
from bus.secrets import register_settings
from bus.yamlfile import load_yaml, locate

__all__ = [
    "BatchTiming",
    "Config",
    "RetryPolicy",
    "RouteConfig",
    "SystemConfig",
    "TargetConfig",
    "load_config",
    "parse_duration",
    "routes_schema",
]

_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: float | int | str) -> float:
    """Seconds from a number or a string such as ``'500ms'``, ``'30s'``, ``'5m'``, ``'2h'``, ``'1d'``."""
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION.match(value.strip())
    if not match:
        raise ValueError(f"not a duration: {value!r} (expected e.g. '30s', '5m')")
    return float(match.group(1)) * _UNIT[match.group(2)]


@dataclass(frozen=True)
class RetryPolicy:
    """How a route retries a failed delivery: quick attempts with backoff, then park, then dead-letter."""

    attempts: int = 5
    backoff: Literal["exponential", "fixed"] = "exponential"
    initial_delay: float = 0.2
    max_delay: float = 30.0
    park: float = 60.0
    max_parks: int = 20

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any] | None, base: RetryPolicy | None = None) -> RetryPolicy:
        base = base or cls()
        if not doc:
            return base
        return cls(
            attempts=int(doc.get("attempts", base.attempts)),
            backoff=doc.get("backoff", base.backoff),
            initial_delay=parse_duration(doc.get("initial_delay", base.initial_delay)),
            max_delay=parse_duration(doc.get("max_delay", base.max_delay)),
            park=parse_duration(doc.get("park", base.park)),
            max_parks=int(doc.get("max_parks", base.max_parks)),
        )


@dataclass(frozen=True)
class BatchTiming:
    """Deliver in batches of up to ``size`` events or after ``window`` seconds, whichever comes first."""

    size: int = 100
    window: float = 30.0


@dataclass(frozen=True)
class TargetConfig:
    """One target of a route: ``system.operation`` plus per-target options."""

    system: str
    operation: str
    location: Location | None = None
    map: str | None = None
    emit: str | None = None
    emit_map: str | None = None
    emit_when: str | None = None
    when: str | None = None
    args: Mapping[str, Any] = field(default_factory=dict)
    #: ``system.operation``; kept, not derived on each read: the per-event steps ask for it several times
    name: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", f"{self.system}.{self.operation}")


@dataclass(frozen=True)
class AggregateConfig:
    """A route's aggregate step (bus.aggregate): gather the mapped events of one group (``key``, default the route's
    key) and deliver them as ONE event when ``complete`` (JMESPath over ``{items, count, first, last}``) is true or
    ``timeout`` seconds pass without a new one; ``combine`` (same context) makes the delivered data (default:
    ``last``)."""

    timeout: float
    key: str | None = None
    complete: str | None = None
    combine: str | None = None

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any] | None) -> AggregateConfig | None:
        if not doc:
            return None
        return cls(timeout=parse_duration(doc["timeout"]), key=doc.get("key"), complete=doc.get("complete"),
                   combine=doc.get("combine"))


@dataclass(frozen=True)
class RouteConfig:
    """One route: from an event type, through filter/map/validate, to one or more targets."""

    name: str
    source: str
    targets: tuple[TargetConfig, ...]
    location: Location | None = None
    filter: str | None = None
    map: str | None = None
    validate: str | None = None
    key: str | None = None
    sequence: str | None = None
    type: str | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timing: Literal["realtime"] | str | BatchTiming = "realtime"
    mode: Literal["live", "shadow"] = "live"
    skip_unchanged: bool = False
    link: str | None = None  # master-data entity whose xref links the bus writes after each delivery
    aggregate: AggregateConfig | None = None
    locations: Mapping[str, Location] = field(default_factory=dict)

    @property
    def schedule(self) -> str | None:
        """The cron expression when the route's timing is scheduled."""
        return self.timing if isinstance(self.timing, str) and self.timing != "realtime" else None

    @property
    def batch(self) -> BatchTiming | None:
        return self.timing if isinstance(self.timing, BatchTiming) else None


@dataclass(frozen=True)
class SystemConfig:
    """A configured adapter instance: ``crm``, ``scm`` … Settings are already interpolated."""

    name: str
    adapter: str
    settings: Mapping[str, Any]
    location: Location | None = None
    rate_limit: tuple[int, float] | None = None  # (requests, per seconds)
    circuit_breaker: tuple[int, float] | None = None  # (consecutive failures, reset seconds)
    locations: Mapping[str, Location] = field(default_factory=dict)  # of each key of the system's block


@dataclass(frozen=True)
class Config:
    """A loaded ``routes.yaml``."""

    path: Path
    systems: Mapping[str, SystemConfig]
    routes: tuple[RouteConfig, ...]
    value_maps: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    master_data: Mapping[str, EntityOwnership] = field(default_factory=dict)
    #: ``(cron, entities or None)`` when routes.yaml asks for the scheduled master-data check.
    master_data_check: tuple[str, tuple[str, ...] | None] | None = None

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def resolve(self, relative: str) -> Path:
        """A path named in routes.yaml, resolved against the file's own folder."""
        p = Path(relative)
        return p if p.is_absolute() else self.base_dir / p

    def route(self, name: str) -> RouteConfig:
        for route in self.routes:
            if route.name == name:
                return route
        raise UnknownNameError("route", name, [r.name for r in self.routes])

    def system(self, name: str) -> SystemConfig:
        try:
            return self.systems[name]
        except KeyError:
            raise UnknownNameError("system", name, self.systems) from None

    def routes_from(self, event_type: str) -> list[RouteConfig]:
        return [r for r in self.routes if r.source == event_type]


@cache
def routes_schema() -> dict[str, Any]:
    """The JSON Schema of routes.yaml (``schemas/routes.schema.json``)."""
    loaded: dict[str, Any] = orjson.loads((SCHEMA_DIR / "routes.schema.json").read_bytes())
    return loaded


def _describe(error: jsonschema.ValidationError) -> str:
    # Pick the most specific sub-error of a oneOf/anyOf, which is usually the one the author meant.
    best = jsonschema.exceptions.best_match([error]) if error.context else error
    path = "/".join(str(p) for p in best.absolute_path)
    what = best.message
    if best.validator == "additionalProperties" and isinstance(best.instance, dict) \
            and isinstance(best.schema, dict):
        allowed = list(best.schema.get("properties", {}))
        extra = [k for k in best.instance if k not in allowed]
        if extra:
            err = UnknownNameError("field", extra[0], allowed)
            what = err.message
    elif best.validator == "pattern" and best.validator_value in _PATTERN_HINTS:
        # a raw regular expression means nothing to an integrator; say what a valid value looks like
        what = f"{best.instance!r} is not {_PATTERN_HINTS[best.validator_value]}"
    elif best.validator == "oneOf" and best.absolute_path and best.absolute_path[-1] == "timing":
        what = f"{best.instance!r} is not a timing; expected 'realtime', {{schedule: '<cron>'}} or " \
               "{batch: {size: N, window: DURATION}}"
    return f"{path}: {what}" if path else what


_PATTERN_HINTS = {
    "^[a-z][a-z0-9_]*\\.[A-Za-z_][A-Za-z0-9_]*$": "a target; expected 'system.operation', e.g. 'scm.update_demand'",
    "^[0-9]+(\\.[0-9]+)?(ms|s|m|h|d)$": "a duration; expected seconds or e.g. '500ms', '30s', '5m', '2h', '1d'",
    "^[A-Za-z0-9][A-Za-z0-9_.-]*$": "a valid route name; expected letters, digits, '_', '.' and '-'",
    "^[a-z][a-z0-9_]*$": "a valid system name; expected lower-case letters, digits and '_'",
}


def _error_path(error: jsonschema.ValidationError) -> list[str | int]:
    """Where in the document an error is: the offending key itself for unknown or badly named keys."""
    best = jsonschema.exceptions.best_match([error]) if error.context else error
    path: list[str | int] = list(best.absolute_path)
    if best.validator == "additionalProperties" and isinstance(best.instance, dict) \
            and isinstance(best.schema, dict):
        allowed = best.schema.get("properties", {})
        extra = [k for k in best.instance if k not in allowed]
        if extra:
            path.append(extra[0])
    elif "propertyNames" in best.absolute_schema_path and isinstance(best.instance, str):
        path.append(best.instance)
    return path


def _check_structure(doc: Any, file: str) -> None:
    validator = jsonschema.Draft202012Validator(routes_schema())
    found = []
    for error in validator.iter_errors(doc):
        where = locate(doc, _error_path(error), Location(file)) or Location(file)
        found.append(((where.line or 0, where.column or 0), where, error))
    if not found:
        return
    # report the first problem in reading order, so fixing top to bottom converges
    _, where, error = min(found, key=lambda item: item[0])
    raise ConfigError(_describe(error), where)


def _target(entry: Any, where: Location | None) -> TargetConfig:
    if isinstance(entry, str):
        system, operation = entry.split(".", 1)
        return TargetConfig(system, operation, location=where)
    system, operation = entry["operation"].split(".", 1)
    return TargetConfig(
        system, operation, location=getattr(entry, "location", where), map=entry.get("map"), emit=entry.get("emit"),
        emit_map=entry.get("emit_map"), emit_when=entry.get("emit_when"), when=entry.get("when"),
        args=dict(entry.get("args") or {}),
    )


def _timing(doc: Any) -> Literal["realtime"] | str | BatchTiming:
    if doc is None or doc == "realtime":
        return "realtime"
    if "schedule" in doc:
        return str(doc["schedule"])
    batch = doc["batch"] or {}
    return BatchTiming(size=int(batch.get("size", 100)), window=parse_duration(batch.get("window", 30)))


def load_config(path: str | Path = "routes.yaml", env: Mapping[str, str] | None = None) -> Config:
    """Load and structurally validate ``routes.yaml``; raises :class:`ConfigError` with a location."""
    file = str(path)
    raw = load_yaml(path)
    if raw is None:
        raise ConfigError("file is empty; expected 'systems:' and 'routes:'", Location(file, 1, 1))
    _check_structure(raw, file)
    doc = interpolate(raw, env)

    systems: dict[str, SystemConfig] = {}
    for name, body in (doc.get("systems") or {}).items():
        register_settings(body.get("settings"))  # literal secrets written in the file are masked like ${ENV} ones
        rate = body.get("rate_limit")
        breaker = body.get("circuit_breaker")
        systems[name] = SystemConfig(
            name=name, adapter=body["adapter"], settings=body.get("settings") or {},
            location=locate(doc, ["systems", name]),
            locations={k: loc for k in body if (loc := locate(doc, ["systems", name, k])) is not None},
            rate_limit=(int(rate["requests"]), parse_duration(rate.get("per", 1))) if rate else None,
            circuit_breaker=(int(breaker.get("failures", 5)), parse_duration(breaker.get("reset", 30)))
            if breaker else None,
        )

    defaults = doc.get("defaults") or {}
    default_retry = RetryPolicy.from_dict(defaults.get("retry"))
    routes: list[RouteConfig] = []
    seen: dict[str, Location | None] = {}
    for index, body in enumerate(doc.get("routes") or []):
        where = locate(doc, ["routes", index])
        name = body["name"]
        if name in seen:
            first = seen[name]
            raise ConfigError(f"duplicate route name {name!r} (first defined at line {first.line if first else '?'})",
                              locate(doc, ["routes", index, "name"], where))
        seen[name] = where
        routes.append(RouteConfig(
            name=name, source=body["from"], location=where,
            targets=tuple(_target(t, locate(doc, ["routes", index, "to", i], where))
                          for i, t in enumerate(body["to"])),
            filter=body.get("filter"), map=body.get("map"), validate=body.get("validate"),
            key=body.get("key"), sequence=body.get("sequence"), type=body.get("type"),
            retry=RetryPolicy.from_dict(body.get("retry"), default_retry),
            timing=_timing(body.get("timing", defaults.get("timing"))),
            mode=body.get("mode", defaults.get("mode", "live")),
            skip_unchanged=bool(body.get("skip_unchanged", False)), link=body.get("link"),
            aggregate=AggregateConfig.from_dict(body.get("aggregate")),
            locations={k: loc for k in body if (loc := locate(doc, ["routes", index, k])) is not None},
        ))
    ownership = parse_ownership(doc.get("master_data"), lambda at: locate(doc, at))
    check = doc.get("master_data_check")
    if check is not None and not croniter.is_valid(str(check["schedule"])):
        raise ConfigError(f"master_data_check.schedule: {check['schedule']!r} is not a valid cron expression "
                          "(expected 5 fields, e.g. '0 6 * * *')", locate(doc, ["master_data_check", "schedule"]))
    return Config(path=Path(path), systems=systems, routes=tuple(routes), value_maps=dict(doc.get("value_maps") or {}),
                  master_data=ownership,
                  master_data_check=(str(check["schedule"]), tuple(check["entities"]) if check.get("entities")
                                     else None) if check is not None else None)
