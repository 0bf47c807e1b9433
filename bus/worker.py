"""The worker: consume -> route -> steps -> deliver to each target -> settle -> ack.

A worker thread takes a batch of leases and, for each event, runs its routes (:mod:`bus.pipeline`), which give
the deliveries to make. Each delivery passes the policy steps of :mod:`bus.steps` in order (stale, unchanged,
shadow, held behind a parked one, bulk lane); those no step decided are delivered here, with quick retries
(:mod:`bus.delivery`) behind the target system's protections (:mod:`bus.protection`). The batch is then
settled in one unit of work (:mod:`bus.settle`): follow-up events, delivery states, dead letters, per-key
marks and the acks together. A crash anywhere before that commit means the batch is handed out again; the
idempotency keys make the second pass skip what already succeeded, and follow-up events have ids derived from
their delivery so a second pass cannot emit them twice. At-least-once, nothing lost.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import structlog

from adapters.base import Adapter, Call, Outcome
from bus import metrics, telemetry
from bus.aggregate import Aggregator
from bus.bulk import BulkLanes
from bus.delivery import Attempted, deliver_with_retries
from bus.envelope import Event
from bus.errors import DecodeError, IronbusError, MappingError, TransientError
from bus.frontdoor import FrontDoor
from bus.journal import Journal
from bus.journal.keptconn import kept_connections
from bus.journal.records import DeadLetter, DeliveryUpdate, idempotency_key
from bus.linking import WHOLE_ROUTE
from bus.ordering import SequenceGuard
from bus.pipeline import Dispatch, Pipeline, RouteResult
from bus.protection import Protections, SystemProtection
from bus.queue.base import Lease, Queue
from bus.settle import Batch, Settler, WorkerStats, ack
from bus.steps import Due, Step, default_steps

__all__ = ["Batch", "Due", "Worker", "WorkerStats", "ack"]

log = structlog.get_logger(__name__)
_MAX_CRASHES = 5  # deliveries of one message that ended in an unexpected error before it is dead-lettered
_RETRY_AFTER_CRASH = 1.0  # seconds before a batch that failed unexpectedly (a bug, the journal away) comes back


class Worker:
    """One consumer loop. Run several in threads (``ironbus run --workers N``) and in several processes."""

    def __init__(self, *, pipeline: Pipeline, adapters: Mapping[str, Adapter], journal: Journal, queue: Queue,
                 door: FrontDoor, protections: Protections | None = None, batch_size: int = 32,
                 stop: threading.Event | None = None, name: str = "worker", lanes: BulkLanes | None = None,
                 steps: Sequence[Step] | None = None, aggregator: Aggregator | None = None) -> None:
        self.pipeline = pipeline
        self.adapters = adapters
        self.journal = journal
        self.queue = queue
        self.door = door
        self.protections = protections
        self.batch_size = batch_size
        self.stop = stop or threading.Event()
        self.name = name
        self.stats = WorkerStats()
        self.sequences = SequenceGuard(journal)
        self.lanes = lanes
        self.steps: tuple[Step, ...] = tuple(steps) if steps is not None else default_steps(lanes)
        self.settler = Settler(pipeline, journal, queue, door, self.sequences, self.stats)
        self.aggregator = aggregator  # the routes' aggregate steps (bus.aggregate), when any route has one

    # -- loop ---------------------------------------------------------------------------------------------
    def run(self) -> None:
        """Consume until ``stop`` is set. The batch in hand is finished before returning."""
        with kept_connections():  # this thread's journal transactions on one connection (bus.journal.keptconn)
            self._consume()

    def _consume(self) -> None:
        while not self.stop.is_set():
            try:
                leases = self.queue.consume(self.batch_size, timeout=0.5)
            except TransientError as exc:
                log.warning("queue unavailable; waiting", worker=self.name, error=str(exc))
                self.stop.wait(1.0)
                continue
            if not leases:
                continue
            try:
                self.handle(leases)
            except Exception as exc:  # a bug must not kill the worker thread; see _survive
                self._survive(leases, exc)

    def _survive(self, leases: Sequence[Lease], exc: Exception) -> None:
        """An unexpected error while handling a batch: log it, and let the queue hand the batch out again —
        but a message that keeps failing this way is dead-lettered rather than retried for ever."""
        log.exception("unexpected error while handling a batch", worker=self.name, error=str(exc))
        poison = [lease for lease in leases if lease.delivery_count >= _MAX_CRASHES]
        if not poison:
            # Hand the batch back: a lease left unsettled would never come back by itself (the embedded queue
            # renews live leases; a RabbitMQ delivery does not expire while its connection lives), and its key
            # would hold every later message of that key for good. If even the release fails, the lease is no
            # longer renewed and runs out (embedded) or returns when the channel closes (RabbitMQ).
            for lease in leases:
                try:
                    lease.release(_RETRY_AFTER_CRASH)
                except Exception as again:  # noqa: BLE001 - the store is failing too; see above
                    log.warning("could not release after an internal error", error=str(again))
            return
        try:
            reason = f"internal error after {_MAX_CRASHES} tries: {type(exc).__name__}: {exc}"
            self.journal.dead_letter([DeadLetter(lease.message.body, reason, route=lease.message.route,
                                                 target=lease.message.target) for lease in poison])
            ack(self.queue, poison)
        except Exception as again:  # the journal itself failing: leave it to the lease
            log.error("could not dead-letter after an internal error", error=str(again))

    def handle(self, leases: Sequence[Lease]) -> None:
        """Process one batch of leases completely, then settle and ack it."""
        batch = Batch()
        work: list[tuple[Lease, Event, list[RouteResult]]] = []
        traced = telemetry.enabled  # once a batch: a local test per event costs less than the module's attribute
        for lease in leases:
            event = self._decode(lease, batch)
            if event is None:
                continue
            began = time.time_ns() if traced else 0
            try:
                # target "*" pins a whole route: an event parked because it waited for master data (below)
                pinned = lease.message.target if lease.message.target != WHOLE_ROUTE else None
                results = self.pipeline.process(event, route=lease.message.route, target=pinned)
            except IronbusError as exc:  # e.g. a pinned route that no longer exists
                batch.letters.append(DeadLetter(lease.message.body, str(exc), event.id, lease.message.route,
                                                lease.message.target))
                continue
            if traced:
                telemetry.route_steps(event, results, began, time.time_ns())
            work.append((lease, event, results))
        done = self._read_facts(work, batch)
        for lease, event, results in work:
            log_ = log.bind(event_id=event.id, correlation_id=event.correlationid, type=event.type)
            if traced:
                log_ = log_.bind(trace_id=telemetry.trace_id_for(event))
            force = lease.message.headers.get("force") == "1"
            for result in results:
                self._route_result(lease, event, result, batch, done, force, log_)
        self._deliver(batch)
        self._settle(leases, batch)
        self.stats.batches += 1
        self.stats.events += len(leases)

    # -- steps --------------------------------------------------------------------------------------------
    def _read_facts(self, work: Sequence[tuple[Lease, Event, list[RouteResult]]], batch: Batch) -> set[str]:
        """What the batch needs to know before delivering, in one read of the journal (one snapshot): the
        deliveries that already succeeded (returned) and, into ``batch``, what the steps compare against."""
        dispatches = [d for _, _, results in work for r in results for d in r.dispatches]
        if not dispatches:
            return set()
        facts = self.journal.batch_facts(
            [d.idempotency_key for d in dispatches],
            sequences=[(d.target.scope, d.event.key) for d in dispatches
                       if d.event.key is not None and d.event.sequence is not None],
            scopes={(d.route.name, d.target_name, d.event.key) for d in dispatches if d.event.key is not None},
            event_ids=[event.id for _, event, _ in work],
            digests=[(d.target.scope, d.event.key) for d in dispatches
                     if d.event.key is not None and d.route.config.skip_unchanged])
        batch.last_applied, batch.last_digests = facts.last_applied, facts.last_digests
        batch.parked_ahead, batch.received_at = facts.parked_ahead, facts.received_at
        return facts.delivered

    def _decode(self, lease: Lease, batch: Batch) -> Event | None:
        try:
            return Event.decode(lease.message.body)
        except DecodeError as exc:
            log.error("undecodable message dead-lettered", worker=self.name, error=str(exc))
            batch.letters.append(DeadLetter(lease.message.body, f"undecodable: {exc}", route=lease.message.route,
                                            target=lease.message.target))
            return None

    def _route_result(self, lease: Lease, event: Event, result: RouteResult, batch: Batch, done: set[str],
                      force: bool, log_: Any) -> None:
        route = result.route
        if result.status == "filtered":
            batch.updates.append(DeliveryUpdate(idempotency_key(event.id, route.name, "*"), event.id, route.name, "*",
                                                "filtered"))
            metrics.delivery(route.name, "*", "filtered")
            return
        if result.status == "invalid" and self._wait_for_master_data(lease, event, result, batch, log_):
            return
        if result.status == "invalid":
            reason = str(result.error)
            log_.warning("event invalid for route; dead-lettered", route=route.name, error=reason)
            target = lease.message.target or "*"
            batch.updates.append(DeliveryUpdate(idempotency_key(event.id, route.name, target), event.id, route.name,
                                                target, "invalid", error=reason, error_kind="permanent"))
            # the letter names what was attempted: the whole route ("*": it failed before any target) and how
            # often it was tried (a wait for master data parks it and maps it again)
            batch.letters.append(DeadLetter(lease.message.body, reason, event.id, route.name, target, "permanent",
                                            lease.message.parks + 1))
            metrics.delivery(route.name, target, "dead")
            self.stats.dead += 1
            return
        if lease.message.target == WHOLE_ROUTE:  # it waited for master data and maps now: that wait is over
            batch.updates.append(DeliveryUpdate(idempotency_key(event.id, route.name, WHOLE_ROUTE), event.id,
                                                route.name, WHOLE_ROUTE, "mapped"))
        if self.aggregator is not None and self.aggregator.gathers(event, result, batch.updates):
            return  # gathered into its group: the group is delivered as one event (bus.aggregate)
        for dispatch in result.dispatches:
            if dispatch.idempotency_key in done and not force:
                self.stats.skipped += 1
                continue
            self._dispatch(lease, dispatch, batch, log_, force)

    def _wait_for_master_data(self, lease: Lease, event: Event, result: RouteResult, batch: Batch,
                              log_: Any) -> bool:
        """Park an event whose route failed only on a cross reference not linked yet (an order that raced ahead
        of its customer's sync): it is mapped again after the route's park delay, up to ``max_parks`` times,
        and dead-lettered only then. False when the failure is of another kind."""
        waiting = result.error.waiting_for if isinstance(result.error, MappingError) else None
        policy = result.route.config.retry
        if waiting is None or lease.message.parks >= policy.max_parks:
            return False
        route = result.route.name
        entity, system, sid = waiting
        reason = f"waiting for master data: {entity} {sid} in {system} is not linked yet ({result.error})"
        batch.updates.append(DeliveryUpdate(idempotency_key(event.id, route, WHOLE_ROUTE), event.id, route,
                                            WHOLE_ROUTE, "parked", error=reason, error_kind="transient",
                                            next_attempt_at=time.time() + policy.park))
        metrics.delivery(route, WHOLE_ROUTE, "parked")
        self.stats.parked += 1
        log_.info("event waits for master data", route=route, entity=entity, system=system, id=sid,
                  parks=lease.message.parks)
        return True

    def _dispatch(self, lease: Lease, dispatch: Dispatch, batch: Batch, log_: Any, force: bool = False) -> None:
        """Pass one delivery through the steps; one no step decided is delivered with the batch's others."""
        target = dispatch.target.config
        base: dict[str, Any] = dict(idempotency_key=dispatch.idempotency_key, event_id=dispatch.source.id,
                                    route=dispatch.route.name, target=target.name)
        due = Due(lease, dispatch, base, log_, force)
        for step in self.steps:
            status = step.decide(due, batch)
            if status is not None:
                if status == "parked":
                    self.stats.parked += 1
                return
        due.adapter = self.adapters[target.system]
        batch.due.append(due)

    def _deliver(self, batch: Batch) -> None:
        """Make the batch's deliveries and record them. Where an adapter takes several calls at once
        (:attr:`~adapters.base.Adapter.groups_calls`), the first attempts of one operation go together after
        one probe call; retries follow one by one, as each delivery's policy says. Calls in one batch are
        independent: the queue hands out one event per key."""
        groups: dict[tuple[str, str], list[Due]] = {}
        for due in batch.due:
            if due.adapter.groups_calls:
                target = due.dispatch.target.config
                groups.setdefault((target.system, target.operation), []).append(due)
        for (_, operation), members in groups.items():
            if len(members) < 2:
                continue
            # One call first: a system that is down gets the others one by one, through its circuit breaker,
            # instead of a whole wave of calls it would refuse.
            probe = members[0]
            probe.started = time.monotonic()
            try:
                probe.first = self._call(probe.adapter, probe.dispatch, 1)
            except Exception as exc:  # classified by deliver_with_retries, as if raised there
                probe.first = exc
                continue
            self._send_together(operation, members[1:])
        for due in batch.due:
            dispatch = due.dispatch
            attempted = deliver_with_retries(partial(self._call, due.adapter, dispatch),
                                             dispatch.route.config.retry, parks=due.lease.message.parks,
                                             stop=self.stop, first=due.first, started=due.started)
            self.record(due.lease, dispatch, attempted, batch, due.base, due.log)

    def _send_together(self, operation: str, dues: Sequence[Due]) -> None:
        """The first attempts of several deliveries to one operation, made at once (``call_many``) into each
        one's ``first``; each passes its system's protections as a single call does."""
        began = time.monotonic()
        admitted: list[tuple[Due, SystemProtection | None]] = []
        for due in dues:
            due.started = began
            try:
                admitted.append((due, self._admit(due.dispatch)))
            except TransientError as exc:  # an open circuit, or no rate-limit token in time
                due.first = exc
        if not admitted:
            return
        calls = [self._call_for(due.dispatch, 1) for due, _ in admitted]
        spans = telemetry.begin_grouped([due.dispatch for due, _ in admitted]) if telemetry.enabled else None
        try:
            results = admitted[0][0].adapter.call_many(operation, calls)
        except Exception as exc:  # the adapter failed as a whole: every call failed with it
            results = [exc] * len(calls)
        if spans is not None:
            telemetry.end_grouped([due.dispatch for due, _ in admitted], spans, results)
        for (due, guard), result in zip(admitted, results, strict=True):
            due.first = result
            self._observe(due.dispatch, guard, result if isinstance(result, Exception) else None)

    @staticmethod
    def _call_for(dispatch: Dispatch, attempt: int) -> Call:
        return Call(dispatch.event, dispatch.payload, dispatch.idempotency_key, route=dispatch.route.name,
                    attempt=attempt, args=dispatch.target.config.args)

    def _call(self, adapter: Adapter, dispatch: Dispatch, attempt: int) -> Outcome:
        guard = self._admit(dispatch)
        error: BaseException | None = None
        try:
            if telemetry.enabled:
                with telemetry.attempt(dispatch, attempt):
                    return adapter.call(dispatch.target.config.operation, self._call_for(dispatch, attempt))
            return adapter.call(dispatch.target.config.operation, self._call_for(dispatch, attempt))
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._observe(dispatch, guard, error)

    def _admit(self, dispatch: Dispatch) -> SystemProtection | None:
        """Pass the target system's protections before a call; the guard to report the call's end to, if any.
        Waits briefly for a rate-limit token; an open circuit raises TransientError(retry_after) -> park."""
        guard = self.protections.get(dispatch.target.config.system) if self.protections is not None else None
        if guard is not None:
            guard.admit(timeout=min(dispatch.route.config.retry.max_delay, 5.0))
        return guard

    def _observe(self, dispatch: Dispatch, guard: SystemProtection | None, error: BaseException | None) -> None:
        """How a call ended, for the metrics and the system's circuit breaker."""
        if isinstance(error, TransientError):
            metrics.delivery(dispatch.route.name, dispatch.target.config.name, "retried")
        if guard is not None:
            guard.observe(error)

    def record(self, lease: Lease, dispatch: Dispatch, attempted: Attempted, batch: Batch,
               base: dict[str, Any], log_: Any) -> None:
        """Turn one delivery's attempt into journal rows (see :meth:`bus.settle.Settler.record`)."""
        self.settler.record(lease, dispatch, attempted, batch, base, log_)

    def _settle(self, leases: Sequence[Lease], batch: Batch) -> None:
        if self.lanes is None:
            self.settle_journal(batch, leases)
            return
        # Leases with bulk items in flight are acked by their lane; which ones is known only once this batch's
        # rows are committed (a lane must not ack a message whose other deliveries are not yet journaled).
        self.settle_journal(batch)
        ack(self.queue, self.lanes.worker_done(leases))

    def settle_journal(self, batch: Batch, leases: Sequence[Lease] = ()) -> None:
        """Write one batch's rows, and ack ``leases``, in one unit of work (see :meth:`Settler.settle`)."""
        self.settler.settle(batch, leases)
