"""The aggregate step of a route: many events of one group in, one event out.

A route with ``aggregate:`` does not deliver each mapped event; it gathers them per group (``key``, default the
route's key) in the journal (:class:`bus.journal.aggregates.AggregateStore`) and releases the group as ONE event
when ``complete`` — JMESPath over ``{items, count, first, last}`` (the gathered mapped data) — is true, or when
``timeout`` passes without a new event for the group. The released event's data is ``combine`` over the same
context (default ``last``); it carries the last gathered event's correlation id (so ``trace`` shows it in that
change's tree) and is delivered to the route's targets only, without filter, map or validation a second time.

Hooks: the worker calls :meth:`Aggregator.gathers` before dispatching a route result; the runtime runs
:meth:`Aggregator.run` (the timeout sweep) and asks :meth:`pending` when it waits for idleness; the pipeline routes a
released event (extension ``ibaggregate`` = route name) straight to its route's targets.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from bus.config import AggregateConfig, Config
from bus.envelope import Event
from bus.expr import Expression, compile_expression
from bus.functions import IronbusFunctions
from bus.journal.aggregates import AggregateStore, GatheredItem
from bus.journal.records import DeliveryUpdate, idempotency_key
from bus.pipeline import RouteResult

__all__ = ["RELEASED", "Aggregator"]

log = structlog.get_logger(__name__)

#: Event extension naming the route whose aggregate step released the event.
RELEASED = "ibaggregate"

Ingest = Callable[[Sequence[tuple[Event, str]]], None]


class _Step:
    def __init__(self, route: str, spec: AggregateConfig, functions: IronbusFunctions) -> None:
        def expr(text: str | None, what: str) -> Expression | None:
            return None if text is None else compile_expression(text, f"route {route!r} aggregate.{what}",
                                                                 functions=functions)

        self.spec = spec
        self.key = expr(spec.key, "key")
        self.complete = expr(spec.complete, "complete")
        self.combine = expr(spec.combine, "combine")


class Aggregator:
    """The aggregate steps of one configuration, over the journal's store; ``ingest`` publishes released events."""

    def __init__(self, config: Config, store: AggregateStore, ingest: Ingest, functions: IronbusFunctions,
                 *, interval: float = 0.25, stop: threading.Event | None = None) -> None:
        self.store = store
        self.ingest = ingest
        self.interval = interval
        self.stop = stop or threading.Event()
        self.steps = {r.name: _Step(r.name, r.aggregate, functions) for r in config.routes if r.aggregate}
        self.out_types = {r.name: r.type or r.validate or r.source for r in config.routes}

    def __bool__(self) -> bool:
        return bool(self.steps)

    def gathers(self, event: Event, result: RouteResult, updates: list[DeliveryUpdate]) -> bool:
        """Gather a dispatch-ready route result when its route aggregates; True when it was gathered (the worker
        then delivers nothing for it now). A released event passes through (False)."""
        route = result.route.name
        step = self.steps.get(route)
        if step is None or event.extensions.get(RELEASED) == route or result.event is None:
            return False
        mapped: Event = result.event
        key = step.key.search(mapped.data) if step.key is not None else mapped.key
        group = "" if key is None else str(key)
        items = self.store.add(route, group, GatheredItem(event.id, event.correlationid, mapped.data),
                               step.spec.timeout)
        updates.append(DeliveryUpdate(idempotency_key(event.id, route, "*"), event.id, route, "*", "aggregated",
                                      payload={"group": group, "count": len(items)}))
        if step.complete is not None and step.complete.search(_context(items)):
            self._release(route, group, "complete")
        return True

    def sweep(self) -> int:
        """Release every group whose quiet period has passed; returns how many."""
        released = 0
        for route, group in self.store.due():
            released += self._release(route, group, "timeout")
        return released

    def pending(self) -> int:
        return self.store.pending() if self.steps else 0

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.sweep()
            except Exception as exc:  # the journal may be briefly unreachable; open groups wait, nothing is lost
                log.warning("aggregate sweep failed", error=str(exc))
            self.stop.wait(self.interval)

    def _release(self, route: str, group: str, why: str) -> int:
        step = self.steps.get(route)
        items = self.store.take(route, group)
        if step is None or not items:
            return 0  # another worker released it, or the route is gone from the configuration
        context = _context(items)
        data = step.combine.search(context) if step.combine is not None else context["last"]
        last = items[-1]
        released = Event(type=self.out_types.get(route, f"{route}.aggregated"), source="ironbus/aggregate",
                         data=data, correlationid=last.correlation_id or last.event_id, causationid=last.event_id,
                         key=group or None, extensions={RELEASED: route})
        self.ingest([(released, "followup")])
        log.info("aggregate released", route=route, group=group, items=len(items), why=why,
                 event_id=released.id, correlation_id=released.correlationid)
        return 1


def _context(items: Sequence[GatheredItem]) -> dict[str, Any]:
    data = [i.data for i in items]
    return {"items": data, "count": len(data), "first": data[0] if data else None,
            "last": data[-1] if data else None}
