"""``ironbus lint``: check routes.yaml against adapters, mappings and schemas before anything connects.

Every problem found is reported (not just the first), each with its ``file:line:column``; errors make the
command exit 1, warnings do not.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import jsonschema

from adapters.base import Adapter
from bus.config import Config, RouteConfig, load_config
from bus.errors import ConfigError, Location, UnknownNameError
from bus.interpolate import redact
from bus.ownership import ownership_problems
from bus.pipeline import Pipeline
from bus.plugins import load_adapter_class
from bus.schemas import SchemaRegistry, default_registry
from bus.yamlfile import locate

__all__ = ["Issue", "adapter_operations", "check_settings", "lint", "refuse_on_errors"]


@dataclass(frozen=True)
class Issue:
    severity: Literal["error", "warning"]
    message: str
    location: Location | None = None

    def __str__(self) -> str:
        where = f"{self.location}: " if self.location else ""
        return f"{where}{self.severity}: {self.message}"


def adapter_operations(cls: type[Adapter], settings: Any) -> list[str] | None:
    """Operation names a system of this adapter offers; None when it accepts any."""
    return cls.offered_operations(settings)


def check_settings(name: str, cls: type[Adapter], settings: Any, fallback: Location | None) -> list[Issue]:
    """The errors in one system's settings against its adapter's JSON Schema (values never echoed)."""
    issues: list[Issue] = []
    try:
        validator = jsonschema.Draft202012Validator(dict(cls.settings_schema))
        errors = list(validator.iter_errors(settings))
    except jsonschema.SchemaError as exc:
        return [Issue("error", f"adapter {cls.name!r} has an invalid settings schema: {exc.message}", fallback)]
    for error in errors:
        path = list(error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            allowed = list(error.schema.get("properties", {}))
            for extra in [k for k in error.instance if k not in allowed]:
                unknown = UnknownNameError("setting", extra, allowed)
                issues.append(Issue("error", f"system {name!r}: {unknown.message}",
                                    locate(settings, [*path, extra], fallback)))
            continue
        dotted = "".join(f".{p}" for p in path)
        # never echo a value: settings may hold secrets from ${ENV}, and jsonschema's own messages start with
        # the offending value ("'hunter2' is too short"), so only messages about keys are passed through
        if error.validator in ("required", "dependentRequired"):
            message = error.message
        elif isinstance(error.validator_value, str | int | float | bool | list) and error.validator not in (
                "oneOf", "anyOf", "allOf", "items", "prefixItems"):
            message = f"{error.validator} check failed (expected {error.validator_value!r})"
        else:
            message = f"{error.validator} check failed"
        issues.append(Issue("error", redact(f"system {name!r}: settings{dotted}: {message}"),
                            locate(settings, path, fallback)))
    return issues


def _check_route(config: Config, route: RouteConfig, classes: dict[str, type[Adapter]],
                 emitted: set[str], schemas: SchemaRegistry) -> list[Issue]:
    issues: list[Issue] = []
    prefix, _, trigger = route.source.partition(".")
    loc_from = route.locations.get("from", route.location)
    if prefix in config.systems and trigger:
        cls = classes.get(prefix)
        declared = cls.declared_triggers(config.systems[prefix].settings) if cls is not None else {}
        if cls is not None and trigger not in declared and not cls.accepts_any_trigger:
            unknown = UnknownNameError("trigger", trigger, declared)
            issues.append(Issue("error", f"system {prefix!r} (adapter {cls.name!r}): {unknown.message}", loc_from))
    elif route.source not in emitted and route.source not in schemas.names():
        issues.append(Issue("warning", f"route {route.name!r}: nothing in routes.yaml produces event type "
                            f"{route.source!r} (no trigger, no 'emit:'); only 'ironbus send' will feed it", loc_from))
    if route.link is not None:
        where = route.locations.get("link", route.location)
        if route.key is None:
            issues.append(Issue("error", f"route {route.name!r}: link needs 'key' (the canonical id the records are "
                                "linked to)", where))
        if route.link not in config.master_data:
            issues.append(Issue("warning", f"route {route.name!r}: links {route.link!r}, which master_data does not "
                                "declare (no owner: `ironbus xref check` cannot compare it)", where))
    if route.skip_unchanged and route.key is None:
        issues.append(Issue("error", f"route {route.name!r}: skip_unchanged needs 'key' (the business key whose last "
                            "payload is compared)", route.locations.get("skip_unchanged", route.location)))
    for target in route.targets:
        where = target.location or route.locations.get("to", route.location)
        if target.emit_when is not None and target.emit is None:
            issues.append(Issue("error", f"route {route.name!r} target {target.name}: emit_when needs 'emit' (the "
                                "follow-up event it lets through)", where))
        if target.system not in config.systems:
            issues.append(Issue("error", UnknownNameError("system", target.system, config.systems).message, where))
            continue
        cls = classes.get(target.system)
        if cls is None:
            continue
        offered = adapter_operations(cls, config.systems[target.system].settings)
        if offered is not None and target.operation not in offered:
            unknown = UnknownNameError("operation", target.operation, offered)
            issues.append(Issue("error", f"system {target.system!r} (adapter {cls.name!r}): {unknown.message}",
                                where))
    for problem in Pipeline(replace(config, routes=()), schemas=schemas).check_route(route):
        issues.append(Issue("error", problem.message, problem.location or route.location))
    return issues


def _check_ownership(config: Config, schemas: SchemaRegistry) -> list[Issue]:
    issues: list[Issue] = []
    known = set(schemas.names())
    for ownership in config.master_data.values():
        properties = dict(schemas.schema(ownership.schema).get("properties", {})) if ownership.schema in known \
            else None
        issues.extend(Issue("error", message, where) for message, where in
                      ownership_problems(ownership, list(config.systems), properties))
    return issues


def lint(path: str | Path = "routes.yaml", *, schemas: SchemaRegistry | None = None,
         env: dict[str, str] | None = None) -> list[Issue]:
    """Every problem in ``path`` and the files it names; an empty list means it is good to deploy."""
    try:
        config = load_config(path, env=env)
    except ConfigError as exc:
        return [Issue("error", exc.message, exc.location)]
    schemas = schemas or default_registry()
    issues: list[Issue] = []
    classes: dict[str, type[Adapter]] = {}
    for name, system in config.systems.items():
        adapter_loc = system.locations.get("adapter", system.location)
        try:
            cls = load_adapter_class(system.adapter, adapter_loc)
        except ConfigError as exc:
            issues.append(Issue("error", f"system {name!r}: {exc.message}", exc.location or adapter_loc))
            continue
        classes[name] = cls
        settings_loc = system.locations.get("settings", system.location)
        problems = check_settings(name, cls, system.settings, settings_loc)
        issues.extend(problems)
        if not problems and isinstance(system.settings, Mapping):
            issues.extend(Issue("warning", f"system {name!r} (adapter {cls.name!r}): {warning.message}",
                                locate(system.settings, list(warning.path), settings_loc))
                          for warning in cls.settings_warnings(system.settings))
    emitted = {f"{s}.{t}" for s, cls in classes.items() for t in cls.declared_triggers(config.systems[s].settings)}
    emitted |= {t.emit for r in config.routes for t in r.targets if t.emit}
    emitted |= {r.type or r.validate or "" for r in config.routes}
    if config.master_data_check is not None:
        emitted.add("masterdata.checked")  # the scheduled master-data check's report
    for route in config.routes:
        issues.extend(_check_route(config, route, classes, emitted, schemas))
    issues.extend(_check_ownership(config, schemas))
    # reading order, so an integrator can fix routes.yaml top to bottom; problems in other files come after it
    main = str(path)

    def reading_order(issue: Issue) -> tuple[bool, str, int, int]:
        loc = issue.location or Location(main)
        return (loc.file != main, loc.file, loc.line or 0, loc.column or 0)

    return sorted(issues, key=reading_order)


def refuse_on_errors(path: str | Path) -> list[Issue]:
    """Lint ``path`` as ``ironbus lint`` does; raise :class:`ConfigError` listing every error, else return the
    warnings. ``ironbus run`` calls this so it never starts with settings that lint rejects (a misspelt
    ``timestamp_heder`` would otherwise switch replay protection off without a word)."""
    issues = lint(path)
    errors = [i for i in issues if i.severity == "error"]
    if errors:
        listed = "\n".join(f"  {issue}" for issue in errors)
        raise ConfigError(f"{path}: {len(errors)} error(s); the bus does not start until 'ironbus lint' passes:\n"
                          f"{listed}")
    return issues
