"""Batch timing for targets with a bulk API: collect deliveries, send them in one call.

A route with ``timing: {batch: {size, window}}`` whose target operation is declared ``bulk=True`` does not
deliver event by event: workers hand each delivery to the lane of that route and target, which calls
``adapter.call_bulk`` with up to ``size`` deliveries, at the latest ``window`` seconds after the first one
arrived. Queue messages that contributed a delivery are acked only once the lane has settled it — until
then their lease keeps them safe, which is why the window must stay well below the lease time.

Lanes flush on their own timer threads and on the threads of the workers that fill them, so they record
outcomes through a recorder of their own, one flush at a time. When the bus stops while a bulk call waits for
a quick retry, the lane stops waiting and settles nothing: its messages stay unacked and come back.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from adapters.base import Adapter, Call
from bus import telemetry
from bus.config import Config
from bus.delivery import Attempted, deliver_with_retries
from bus.errors import PartialFailure, PermanentError
from bus.pipeline import Dispatch
from bus.queue.base import Lease, Queue
from bus.settle import Batch, ack
from bus.triggers import Batcher

__all__ = ["BulkItem", "BulkLanes"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class BulkItem:
    dispatch: Dispatch
    lease: Lease
    parks: int


class Recorder(Protocol):
    """What a lane needs from a worker: turn an attempt into journal rows, and write them (a worker's
    :class:`~bus.settle.Settler` does both).

    Lanes call it from several threads, one call at a time; it must not be a worker that also runs its own loop.
    """

    def record(self, lease: Lease, dispatch: Dispatch, attempted: Attempted, batch: Any,
               base: dict[str, Any], log_: Any) -> None: ...

    def settle_journal(self, batch: Any) -> None: ...


class BulkLanes:
    """One :class:`~bus.triggers.Batcher` per (route, target) with batch timing and a bulk operation."""

    def __init__(self, config: Config, adapters: Mapping[str, Adapter], queue: Queue, lease_seconds: float,
                 stop: threading.Event | None = None) -> None:
        self.queue = queue
        self.adapters = adapters
        self.recorder: Recorder | None = None
        self.stop = stop or threading.Event()
        self._lanes: dict[tuple[str, str], Batcher[BulkItem]] = {}
        self._pending: dict[int, list[Any]] = {}  # id(lease) -> [lease, open items, worker done]
        self._lock = threading.Lock()
        self._recording = threading.Lock()  # the recorder's counters are plain ints; lanes flush in parallel
        for route in config.routes:
            if route.batch is None:
                continue
            for target in route.targets:
                adapter = adapters.get(target.system)
                spec = type(adapter).operations.get(target.operation) if adapter is not None else None
                if spec is None or not spec.bulk:
                    log.warning("batch timing ignored: operation has no bulk API", route=route.name,
                                target=target.name)
                    continue
                window = min(route.batch.window, lease_seconds / 2)  # a lease must outlive its batch
                self._lanes[(route.name, target.name)] = Batcher(
                    route.batch.size, window, self._flusher(target.system, target.operation))

    def __bool__(self) -> bool:
        return bool(self._lanes)

    def lane(self, route: str, target: str) -> Batcher[BulkItem] | None:
        return self._lanes.get((route, target))

    # -- holding acks ---------------------------------------------------------------------------------------
    def hold(self, lease: Lease) -> None:
        with self._lock:
            entry = self._pending.setdefault(id(lease), [lease, 0, False])
            entry[1] += 1

    def worker_done(self, leases: Sequence[Lease]) -> list[Lease]:
        """The leases a worker may ack now; the others are acked by the lane that holds their items."""
        free: list[Lease] = []
        with self._lock:
            for lease in leases:
                entry = self._pending.get(id(lease))
                if entry is None:
                    free.append(lease)
                elif entry[1] <= 0:
                    # its lane already settled everything (a full batch flushes in the adding thread)
                    del self._pending[id(lease)]
                    free.append(lease)
                else:
                    entry[2] = True
        return free

    def _settled(self, leases: Sequence[Lease]) -> None:
        ackable: list[Lease] = []
        with self._lock:
            for lease in leases:
                entry = self._pending.get(id(lease))
                if entry is None:
                    continue
                entry[1] -= 1
                if entry[1] <= 0 and entry[2]:
                    del self._pending[id(lease)]
                    ackable.append(lease)
        ack(self.queue, ackable)

    # -- flushing -------------------------------------------------------------------------------------------
    def _flusher(self, system: str, operation: str) -> Any:
        def flush(items: list[BulkItem]) -> None:
            self._flush(system, operation, items)

        return flush

    def _flush(self, system: str, operation: str, items: list[BulkItem]) -> None:
        assert self.recorder is not None, "BulkLanes.recorder must be set before deliveries start"
        adapter = self.adapters[system]
        route = items[0].dispatch.route

        def send(attempt: int) -> Any:
            calls = [Call(i.dispatch.event, i.dispatch.payload, i.dispatch.idempotency_key, route=route.name,
                          attempt=attempt, args=i.dispatch.target.config.args) for i in items]
            if telemetry.enabled:
                return _traced_bulk(adapter, operation, calls, [i.dispatch for i in items])
            return adapter.call_bulk(operation, calls)

        attempted = deliver_with_retries(send, route.config.retry, parks=max(i.parks for i in items), stop=self.stop)
        if attempted.stopped:
            # Settle nothing: the leases stay unacked, so the messages come back (lease expiry, or RabbitMQ's
            # requeue when the channel closes) and the next run decides them with their park count unchanged.
            log.info("bulk delivery left for the next run: the bus is stopping", system=system,
                     operation=operation, size=len(items))
            return
        per_item: list[Attempted] = []
        error = attempted.error
        results = error.results if isinstance(error, PartialFailure) else None
        if attempted.status == "delivered" and isinstance(attempted.outcome, list):
            per_item = [Attempted("delivered", attempted.attempts, outcome=o, duration_ms=attempted.duration_ms)
                        for o in attempted.outcome]
        elif results is not None and len(results) == len(items):
            # a bulk call that partly failed: settle each delivery by its own result
            for r in results:
                if isinstance(r, BaseException):
                    err = r if isinstance(r, PermanentError) else PermanentError(str(r))
                    per_item.append(Attempted("dead", attempted.attempts, error=err,
                                              duration_ms=attempted.duration_ms))
                else:
                    per_item.append(Attempted("delivered", attempted.attempts, outcome=r,
                                              duration_ms=attempted.duration_ms))
        else:
            per_item = [attempted] * len(items)
        batch = Batch()
        with self._recording:
            for item, outcome in zip(items, per_item, strict=True):
                d = item.dispatch
                base = dict(idempotency_key=d.idempotency_key, event_id=d.source.id, route=d.route.name,
                            target=d.target.config.name)
                self.recorder.record(item.lease, d, outcome, batch, base,
                                     log.bind(event_id=d.source.id, correlation_id=d.source.correlationid))
        self.recorder.settle_journal(batch)  # writes only this flush's rows: lanes may write in parallel
        log.debug("bulk delivery settled", system=system, operation=operation, size=len(items),
                  status=attempted.status)
        self._settled([i.lease for i in items])

    def close(self) -> None:
        for lane in self._lanes.values():
            try:
                lane.close()  # flushes what is waiting
            except Exception as exc:  # unflushed items stay leased and come back after the lease expires
                log.warning("bulk lane could not flush at stop", error=str(exc))


def _traced_bulk(adapter: Adapter, operation: str, calls: list[Call], dispatches: list[Dispatch]) -> Any:
    """A bulk call with a delivery span per item (bus.telemetry), each ended by the item's own result."""
    spans = telemetry.begin_grouped(dispatches)
    try:
        outcome = adapter.call_bulk(operation, calls)
    except BaseException as exc:
        results = getattr(exc, "results", None)
        if not (isinstance(results, Sequence) and len(results) == len(calls)):
            results = [exc] * len(calls)
        telemetry.end_grouped(dispatches, spans, list(results))
        raise
    telemetry.end_grouped(dispatches, spans, outcome if isinstance(outcome, list) and len(outcome) == len(calls)
                          else [None] * len(calls))
    return outcome
