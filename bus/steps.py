"""The worker's policies, one small named step each, in the order they apply to a delivery.

The worker hands every delivery a route produced (a :class:`Due`) to these steps in turn, like middleware:
the first step that decides it records the decision in the batch and returns the delivery's status; a step
that returns None passes it on. A delivery no step decided is made by the worker (see
:meth:`bus.worker.Worker._deliver`). In order:

1. :class:`Stale` — its ``sequence`` is older than the last one applied for its key: ``stale``;
2. :class:`Unchanged` — ``skip_unchanged`` and the same payload as last delivered for its key: ``unchanged``;
3. :class:`Shadow` — the route runs in ``mode: shadow``: recorded, never sent: ``shadow``;
4. :class:`HeldBehindParked` — an earlier delivery of its key is parked on this route and target: ``parked``
   (no attempt) until that one is due;
5. :class:`BulkLane` — the route batches for a bulk operation: handed to its lane (``bulk``), settled later.

Around each call the worker then applies the target system's protections (rate limit, circuit breaker:
:mod:`bus.protection`) and, for adapters that take calls together, probes with one call first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from adapters.base import Adapter, Outcome
from bus import metrics
from bus.bulk import BulkItem, BulkLanes
from bus.journal.records import DeliveryUpdate
from bus.pipeline import Dispatch
from bus.queue.base import Lease
from bus.settle import Batch

__all__ = ["DEFAULT_STEPS", "BulkLane", "Due", "HeldBehindParked", "Shadow", "Stale", "Step", "Unchanged",
           "default_steps"]


@dataclass(slots=True)
class Due:
    """A delivery on its way through the steps, then to its target. ``adapter`` is looked up once no step
    decided the delivery; ``first`` is its first attempt's outcome when that was made with others
    (``call_many``), begun at ``started``."""

    lease: Lease
    dispatch: Dispatch
    base: dict[str, Any]
    log: Any
    force: bool = False
    adapter: Adapter = None  # type: ignore[assignment]  # set by the worker before delivering
    first: Outcome | Exception | None = None
    started: float | None = None

    def scope(self) -> str:
        return self.dispatch.target.scope


class Step(Protocol):
    """One policy. ``decide`` records its decision in ``batch`` and returns the delivery's status, or returns
    None to pass the delivery on to the next step."""

    name: ClassVar[str]

    def decide(self, due: Due, batch: Batch) -> str | None: ...


def _record(due: Due, batch: Batch, status: str, **fields: Any) -> str:
    batch.updates.append(DeliveryUpdate(**due.base, status=status, payload=due.dispatch.payload, **fields))
    metrics.delivery(due.dispatch.route.name, due.dispatch.target.config.name, status)
    return status


class Stale:
    """An event older (by ``sequence``) than the last one applied for its key is not applied."""

    name: ClassVar[str] = "stale"

    def decide(self, due: Due, batch: Batch) -> str | None:
        mapped = due.dispatch.event
        if mapped.key is None or mapped.sequence is None:
            return None
        last = batch.last_applied.get((due.scope(), mapped.key))
        if last is None or mapped.sequence >= last:
            return None
        return _record(due, batch, "stale", error=f"sequence {mapped.sequence} is older than the last applied "
                                                  f"for key {mapped.key!r}")


class Unchanged:
    """``skip_unchanged``: the same payload as the last one delivered for its key is not sent again (unless
    forced by a replay)."""

    name: ClassVar[str] = "unchanged"

    def decide(self, due: Due, batch: Batch) -> str | None:
        key = due.dispatch.event.key
        if not due.dispatch.route.config.skip_unchanged or key is None or due.force:
            return None
        if batch.last_digests.get((due.scope(), key)) != due.dispatch.payload_digest():
            return None
        return _record(due, batch, "unchanged")


class Shadow:
    """``mode: shadow``: the delivery is worked out and journaled, never sent."""

    name: ClassVar[str] = "shadow"

    def decide(self, due: Due, batch: Batch) -> str | None:
        return _record(due, batch, "shadow") if due.dispatch.route.config.mode == "shadow" else None


class HeldBehindParked:
    """Park a delivery behind an earlier delivery of its key that is parked on the same route and target.

    Without this, a later event of an order would be applied while an earlier one waits out its park, and the
    earlier one would land last. The held delivery makes no attempt (it does not count against ``max_parks``)
    and comes due with the one it waits for; the parker re-drives both in arrival order.
    """

    name: ClassVar[str] = "held"

    def decide(self, due: Due, batch: Batch) -> str | None:
        dispatch = due.dispatch
        route, target, key = dispatch.route.name, dispatch.target_name, dispatch.event.key
        if key is None or due.force:
            return None
        ahead = batch.parked_ahead.get((route, target, key))
        if ahead is None or ahead.idempotency_key == dispatch.idempotency_key:
            return None
        mine = batch.received_at.get(dispatch.source.id)
        if mine is not None and (mine, dispatch.idempotency_key) < (ahead.received_at, ahead.idempotency_key):
            return None  # the parked one is the later event: this one goes first
        return _record(due, batch, "parked", attempt=0, attempt_status="skipped",
                       error=f"held behind parked delivery {ahead.idempotency_key} of the same key {key!r}",
                       error_kind="transient", next_attempt_at=ahead.next_attempt_at)


class BulkLane:
    """Batch timing on a bulk operation: the lane delivers the delivery with others and settles it later."""

    name: ClassVar[str] = "bulk"

    def __init__(self, lanes: BulkLanes) -> None:
        self.lanes = lanes

    def decide(self, due: Due, batch: Batch) -> str | None:
        lane = self.lanes.lane(due.dispatch.route.name, due.dispatch.target.config.name)
        if lane is None:
            return None
        self.lanes.hold(due.lease)
        lane.add(BulkItem(due.dispatch, due.lease, due.lease.message.parks))
        return "bulk"


DEFAULT_STEPS: tuple[Step, ...] = (Stale(), Unchanged(), Shadow(), HeldBehindParked())


def default_steps(lanes: BulkLanes | None) -> tuple[Step, ...]:
    """The steps in the order they apply; the bulk lanes' last, when the bus has any."""
    return DEFAULT_STEPS if lanes is None else (*DEFAULT_STEPS, BulkLane(lanes))
