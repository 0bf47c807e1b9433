"""Route steps: from one incoming event to the deliveries it causes.

:class:`Pipeline` compiles every route of a :class:`~bus.config.Config` once (filters, mappings, validators,
key expressions) and then, per event, runs filter -> map -> validate -> key/sequence for every route whose
``from`` matches the event type, and per target the optional ``when`` and target mapping. It does no I/O:
delivering the resulting :class:`Dispatch`\\ es is the worker's job, so the same code serves ``ironbus run``,
``ironbus test`` (targets replaced by recording stubs), ``replay --dry-run`` and the benchmark.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, ParamSpec, TypeVar

from bus.config import Config, RouteConfig, TargetConfig
from bus.dispatch import RouteDispatch
from bus.envelope import Event
from bus.errors import ConfigError, IronbusError, MappingError, SchemaViolation, UnknownNameError
from bus.expr import Expression, compile_expression
from bus.functions import IronbusFunctions
from bus.journal.records import idempotency_key
from bus.mapping import Mapping, load_mapping
from bus.ordering import payload_digest
from bus.schemas import SchemaRegistry, default_registry
from bus.xref import MemoryXref, XrefStore

__all__ = ["CompiledRoute", "CompiledTarget", "Dispatch", "Pipeline", "RouteResult", "idempotency_key"]

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True)
class CompiledTarget:
    config: TargetConfig
    when: Expression | None
    mapping: Mapping | None
    emit_mapping: Mapping | None
    #: ``"<route>:<system.operation>"``: the key of this target's marks (sequences applied, digests delivered)
    scope: str
    emit_when: Expression | None = None


@dataclass(frozen=True)
class CompiledRoute:
    config: RouteConfig
    filter: Expression | None
    mapping: Mapping | None
    validate: Callable[[Any], None] | None
    schema_id: str | None
    key: Expression | None
    sequence: Expression | None
    targets: tuple[CompiledTarget, ...]
    out_type: str

    @property
    def name(self) -> str:
        return self.config.name


# Dispatch and RouteResult are made for every event and target: plain slotted records, since a frozen
# dataclass pays an object.__setattr__ call per field on construction.
@dataclass(slots=True)
class Dispatch:
    """One delivery to make: the mapped event and the payload for one target of one route."""

    route: CompiledRoute
    target: CompiledTarget
    source: Event  # the incoming event (its id makes the idempotency key)
    event: Event  # the mapped (canonical) event
    payload: Any
    idempotency_key: str
    _digest: str | None = field(default=None, repr=False, compare=False)

    @property
    def target_name(self) -> str:
        return self.target.config.name

    def payload_digest(self) -> str:
        """The payload's digest (``skip_unchanged``), computed once however often it is asked for."""
        if self._digest is None:
            self._digest = payload_digest(self.payload)
        return self._digest


@dataclass(slots=True)
class RouteResult:
    """What one route made of one event.

    ``status``: ``dispatch`` (see ``dispatches``), ``filtered`` (the filter said no), ``invalid`` (mapping or
    schema failed: ``error`` says why; the event must be dead-lettered for this route).
    """

    route: CompiledRoute
    status: Literal["dispatch", "filtered", "invalid"]
    event: Event | None = None
    dispatches: list[Dispatch] = field(default_factory=list)
    error: IronbusError | None = None
    skipped_targets: list[str] = field(default_factory=list)  # targets whose `when` said no


class _Steps:
    """Runs the compile steps of one route: the first :class:`ConfigError` propagates, or, with ``collect``,
    each one is kept in ``problems`` and its step yields None, so the steps after it are still checked."""

    def __init__(self, collect: bool) -> None:
        self.collect = collect
        self.problems: list[ConfigError] = []

    def __call__(self, step: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T | None:
        try:
            return step(*args, **kwargs)
        except ConfigError as exc:
            if not self.collect:
                raise
            self.problems.append(exc)
            return None


class Pipeline:
    """Compiled routes of one configuration."""

    def __init__(self, config: Config, *, schemas: SchemaRegistry | None = None,
                 xref: XrefStore | None = None) -> None:
        self.config = config
        self.schemas = schemas or default_registry()
        self.xref: XrefStore = xref if xref is not None else MemoryXref()
        # filters, keys and `when` may call value_map() and xref() like mappings do
        self.functions = IronbusFunctions(config.value_maps, self.xref)
        self.routes: dict[str, CompiledRoute] = {}
        self._by_type: dict[str, list[CompiledRoute]] = {}
        for route in config.routes:
            compiled = self._compile(route)
            self.routes[route.name] = compiled
            self._by_type.setdefault(route.source, []).append(compiled)
        self._dispatch = {t: RouteDispatch(routes) for t, routes in self._by_type.items()}

    # -- compilation ---------------------------------------------------------------------------------------
    def _expr(self, text: str | None, route: RouteConfig, attr: str) -> Expression | None:
        if text is None:
            return None
        return compile_expression(text, f"route {route.name!r} {attr}", location=route.locations.get(attr),
                                  functions=self.functions)

    def _target_expr(self, target: TargetConfig, route: RouteConfig, attr: str) -> Expression:
        """A target's ``when`` or ``emit_when``, compiled; errors name the route, the target and the key."""
        return compile_expression(str(getattr(target, attr)), f"route {route.name!r} target {target.name} {attr}",
                                  location=target.location, functions=self.functions)

    def _mapping(self, path: str | None, route: RouteConfig, attr: str,
                 where: TargetConfig | None = None) -> Mapping | None:
        if path is None:
            return None
        file = self.config.resolve(path)
        if not file.is_file():
            loc = where.location if where is not None else route.locations.get(attr, route.location)
            raise ConfigError(f"route {route.name!r}: {attr} file {path!r} not found (looked at {file})", loc)
        return load_mapping(file, value_maps=self.config.value_maps, xref=self.xref)

    def _compile(self, route: RouteConfig, run: _Steps | None = None) -> CompiledRoute:
        """Compile one route, each step through ``run`` (by default the first problem raises)."""
        run = run or _Steps(collect=False)
        schema = run(self._schema, route) if route.validate is not None else None
        validate, schema_id = schema if schema is not None else (None, None)
        targets = tuple(
            CompiledTarget(
                config=t,
                when=run(self._target_expr, t, route, "when") if t.when else None,
                mapping=run(self._mapping, t.map, route, "map", t),
                emit_mapping=run(self._mapping, t.emit_map, route, "emit_map", t),
                emit_when=run(self._target_expr, t, route, "emit_when") if t.emit_when else None,
                scope=f"{route.name}:{t.name}",
            )
            for t in route.targets
        )
        return CompiledRoute(
            config=route, filter=run(self._expr, route.filter, route, "filter"),
            mapping=run(self._mapping, route.map, route, "map"), validate=validate, schema_id=schema_id,
            key=run(self._expr, route.key, route, "key"), sequence=run(self._expr, route.sequence, route, "sequence"),
            targets=targets, out_type=route.type or route.validate or route.source,
        )

    def check_route(self, route: RouteConfig) -> list[ConfigError]:
        """Every compile problem of one route, each step checked on its own (for ``ironbus lint``).

        Compiling stops at the first problem; an integrator fixing a file wants them all at once.
        """
        run = _Steps(collect=True)
        self._compile(route, run)
        return run.problems

    def _schema(self, route: RouteConfig) -> tuple[Callable[[Any], None], str]:
        assert route.validate is not None
        try:
            return self.schemas.validator(route.validate), self.schemas.schema_id(route.validate)
        except UnknownNameError as exc:
            raise UnknownNameError("schema", route.validate, exc.known,
                                   route.locations.get("validate", route.location)) from None

    # -- per event -----------------------------------------------------------------------------------------
    def routes_for(self, event_type: str, route: str | None = None) -> list[CompiledRoute]:
        """Routes consuming ``event_type`` (or just the named one)."""
        if route is not None:
            compiled = self.routes.get(route)
            if compiled is None:
                raise UnknownNameError("route", route, self.routes)
            return [compiled]
        return self._by_type.get(event_type, [])

    def assign_key(self, event: Event) -> Event:
        """The event with its ordering key filled in from the first matching route, when it has none yet.

        Queues order by key at publish time, before any mapping ran; a failure here is not an error (the
        worker will meet it again and dead-letter with the full reason).
        """
        if event.key is not None:
            return event
        for route in self._by_type.get(event.type, ()):
            if route.key is None:
                continue
            try:
                data = route.mapping.apply(event.data, event=event) if route.mapping else event.data
                key = route.key.search(data)
            except Exception:  # noqa: BLE001 - odd input must not refuse the event: the worker dead-letters it
                return event
            if key is not None:
                return event.with_(key=str(key))
        return event

    def run_route(self, route: CompiledRoute, event: Event, target: str | None = None) -> RouteResult:
        """Filter, map and validate ``event`` for one route; ``target`` limits it to one target."""
        # A group released by this route's aggregate step (bus.aggregate) was filtered, mapped and validated
        # when it was gathered: it goes to the targets as it is.
        released = event.extensions.get("ibaggregate") == route.name
        if not released and route.filter is not None and not _truthy(route.filter.search(event.data)):
            return RouteResult(route, "filtered")
        try:
            data = route.mapping.apply(event.data, event=event) \
                if route.mapping is not None and not released else event.data
            if route.validate is not None and not released:
                route.validate(data)
            key = route.key.search(data) if route.key is not None else event.key
            sequence = route.sequence.search(data) if route.sequence is not None else event.sequence
            mapped = Event(
                type=route.out_type, source=event.source, data=data, id=event.id, subject=event.subject,
                time=event.time, correlationid=event.correlationid, causationid=event.causationid,
                key=None if key is None else str(key), sequence=_int_or_none(sequence, route.name),
                dataschema=route.schema_id, extensions=event.extensions,
            )
            dispatches: list[Dispatch] = []
            skipped: list[str] = []
            for compiled_target in route.targets:
                name = compiled_target.config.name
                if target is not None and name != target:
                    continue
                if compiled_target.when is not None and not _truthy(compiled_target.when.search(data)):
                    skipped.append(name)
                    continue
                payload = compiled_target.mapping.apply(data, event=mapped) if compiled_target.mapping else data
                dispatches.append(Dispatch(route, compiled_target, event, mapped, payload,
                                           idempotency_key(event.id, route.name, name)))
        except (MappingError, SchemaViolation) as exc:
            return RouteResult(route, "invalid", error=exc)
        return RouteResult(route, "dispatch", mapped, dispatches, skipped_targets=skipped)

    def process(self, event: Event, *, route: str | None = None, target: str | None = None) -> list[RouteResult]:
        """The result of each route that may take the event (no I/O), in route order. Routes that share the
        event's type are told apart by one dispatch over their filters (:class:`bus.dispatch.RouteDispatch`),
        not tried one by one; those it rules out (their leading equality test cannot pass) get no result, like
        routes of another type, and a candidate whose filter says no is "filtered"."""
        route = route or event.extensions.get("ibaggregate")  # a released group goes back to its own route only
        if route is not None:
            return [self.run_route(r, event, target) for r in self.routes_for(event.type, route)]
        dispatch = self._dispatch.get(event.type)
        if dispatch is None:
            return []
        return dispatch.process(event, target, self.run_route)

    def follow_up(self, dispatch: Dispatch, result: Any) -> Event | None:
        """The follow-up event an operation's result becomes, when the target says ``emit:`` (and its
        ``emit_when``, if any, is truthy on the result)."""
        emit = dispatch.target.config.emit
        if emit is None:
            return None
        emit_when = dispatch.target.emit_when
        if emit_when is not None and not _truthy(emit_when.search(result)):
            return None
        data = dispatch.target.emit_mapping.apply(result, event=dispatch.event) if dispatch.target.emit_mapping \
            else result
        return dispatch.event.caused(emit, f"ironbus/{dispatch.target.config.system}", data)


def _truthy(value: Any) -> bool:
    # JMESPath truthiness: empty list/object/string and false/null are false.
    return value not in (None, False, "", [], {})


def _int_or_none(value: Any, route: str) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise MappingError(route, "sequence", f"sequence must be an integer, got {value!r}") from None
