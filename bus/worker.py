"""The worker: consume -> route steps -> deliver to each target -> journal -> ack.

A worker thread takes a batch of leases, works out every delivery, performs them, and then settles the batch
in this order — follow-up events first (journal + queue), then the journal's delivery states and dead
letters, then the queue acks. A crash anywhere before the ack means the batch is handed out again; the
idempotency keys make the second pass skip what already succeeded, and follow-up events have ids derived
from their delivery so a second pass cannot emit them twice. At-least-once, nothing lost.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import structlog

from adapters.base import Adapter, Call, Outcome
from bus import metrics
from bus.aggregate import Aggregator
from bus.bulk import BulkItem, BulkLanes
from bus.delivery import Attempted, deliver_with_retries
from bus.envelope import Event
from bus.errors import DecodeError, IronbusError, PermanentError, TransientError
from bus.followups import followup_id, letter_body, not_emitted
from bus.journal import Journal
from bus.journal.engine import read, write
from bus.journal.journal import ParkedAhead
from bus.journal.records import DeadLetter, DeliveryUpdate, XrefRow, idempotency_key
from bus.linking import WHOLE_ROUTE, links_for
from bus.ordering import SequenceGuard
from bus.pipeline import Dispatch, Pipeline, RouteResult
from bus.protection import Protections, SystemProtection
from bus.queue.base import Lease, Queue

__all__ = ["Batch", "Due", "Ingest", "Worker", "WorkerStats", "ack"]

log = structlog.get_logger(__name__)
_MAX_CRASHES = 5  # deliveries of one message that ended in an unexpected error before it is dead-lettered

Ingest = Callable[[Sequence[tuple[Event, str]]], None]


@dataclass
class WorkerStats:
    batches: int = 0
    events: int = 0
    delivered: int = 0
    parked: int = 0
    dead: int = 0
    skipped: int = 0


@dataclass
class Batch:
    updates: list[DeliveryUpdate] = field(default_factory=list)
    letters: list[DeadLetter] = field(default_factory=list)
    followups: list[tuple[Event, str]] = field(default_factory=list)
    applied: list[tuple[str, str, int]] = field(default_factory=list)  # (scope, key, sequence) after success
    last_applied: dict[tuple[str, str], int] = field(default_factory=dict)
    last_digests: dict[tuple[str, str], str] = field(default_factory=dict)
    digests: dict[tuple[str, str], str] = field(default_factory=dict)  # to remember once delivered
    parked_ahead: dict[tuple[str, str, str], ParkedAhead] = field(default_factory=dict)  # (route, target, key)
    received_at: dict[str, float] = field(default_factory=dict)  # of this batch's events, when some key waits
    due: list[Due] = field(default_factory=list)  # deliveries to make, once the batch is sorted
    links: list[XrefRow] = field(default_factory=list)  # master-data links made by this batch's deliveries


@dataclass(slots=True)
class Due:
    """A delivery the worker is about to make: it passed every check (stale, unchanged, shadow, held).
    ``first`` is its first attempt's outcome when that was made with others (``call_many``), begun at
    ``started``."""

    lease: Lease
    dispatch: Dispatch
    adapter: Adapter
    base: dict[str, Any]
    log: Any
    first: Outcome | Exception | None = None
    started: float | None = None


class Worker:
    """One consumer loop. Run several in threads (``ironbus run --workers N``) and in several processes."""

    def __init__(self, *, pipeline: Pipeline, adapters: Mapping[str, Adapter], journal: Journal, queue: Queue,
                 ingest: Ingest, protections: Protections | None = None, batch_size: int = 32,
                 stop: threading.Event | None = None, name: str = "worker", lanes: BulkLanes | None = None,
                 aggregator: Aggregator | None = None) -> None:
        self.pipeline = pipeline
        self.adapters = adapters
        self.journal = journal
        self.queue = queue
        self.ingest = ingest
        self.protections = protections
        self.batch_size = batch_size
        self.stop = stop or threading.Event()
        self.name = name
        self.stats = WorkerStats()
        self.sequences = SequenceGuard(journal)
        self.lanes = lanes
        self.aggregator = aggregator  # the routes' aggregate steps (bus.aggregate), when any route has one

    # -- loop ---------------------------------------------------------------------------------------------
    def run(self) -> None:
        """Consume until ``stop`` is set. The batch in hand is finished before returning."""
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
            return  # unacked: the leases expire and the messages come back
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
        for lease in leases:
            event = self._decode(lease, batch)
            if event is None:
                continue
            try:
                # target "*" pins a whole route: an event parked because it waited for master data (below)
                pinned = lease.message.target if lease.message.target != WHOLE_ROUTE else None
                results = self.pipeline.process(event, route=lease.message.route, target=pinned)
            except IronbusError as exc:  # e.g. a pinned route that no longer exists
                batch.letters.append(DeadLetter(lease.message.body, str(exc), event.id, lease.message.route,
                                                lease.message.target))
                continue
            work.append((lease, event, results))
        dispatches = [d for _, _, results in work for r in results for d in r.dispatches]
        done: set[str] = set()
        if dispatches:
            # what this batch needs to know before delivering, in one read transaction (one snapshot)
            with read(self.journal.engine) as conn:
                done = self.journal.delivered_keys([d.idempotency_key for d in dispatches], conn=conn)
                batch.last_applied = self.sequences.last_many(
                    [(f"{d.route.name}:{d.target_name}", d.event.key) for d in dispatches
                     if d.event.key is not None and d.event.sequence is not None], conn=conn)
                batch.parked_ahead, batch.received_at = self.journal.parked_ahead(
                    {(d.route.name, d.target_name, d.event.key) for d in dispatches if d.event.key is not None},
                    [event.id for _, event, _ in work], conn=conn)
                batch.last_digests = self.sequences.last_digests(
                    [(f"{d.route.name}:{d.target_name}", d.event.key) for d in dispatches
                     if d.event.key is not None and d.route.config.skip_unchanged], conn=conn)
        for lease, event, results in work:
            log_ = log.bind(event_id=event.id, correlation_id=event.correlationid, type=event.type)
            force = lease.message.headers.get("force") == "1"
            for result in results:
                self._route_result(lease, event, result, batch, done, force, log_)
        self._deliver(batch)
        self._settle(leases, batch)
        self.stats.batches += 1
        self.stats.events += len(leases)

    # -- steps --------------------------------------------------------------------------------------------
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
        waiting = getattr(result.error, "waiting_for", None)
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
        route, target, mapped = dispatch.route, dispatch.target.config, dispatch.event
        base: dict[str, Any] = dict(idempotency_key=dispatch.idempotency_key, event_id=dispatch.source.id,
                                    route=route.name, target=target.name)
        if mapped.key is not None and mapped.sequence is not None:
            scope = f"{route.name}:{target.name}"
            last = batch.last_applied.get((scope, mapped.key))
            if last is not None and mapped.sequence < last:
                batch.updates.append(DeliveryUpdate(**base, status="stale", payload=dispatch.payload,
                                                    error=f"sequence {mapped.sequence} is older than the last "
                                                          f"applied for key {mapped.key!r}"))
                metrics.delivery(route.name, target.name, "stale")
                return
        if route.config.skip_unchanged and mapped.key is not None:
            scope = f"{route.name}:{target.name}"
            digest = dispatch.payload_digest()
            if batch.last_digests.get((scope, mapped.key)) == digest and not force:
                batch.updates.append(DeliveryUpdate(**base, status="unchanged", payload=dispatch.payload))
                metrics.delivery(route.name, target.name, "unchanged")
                return
        if route.config.mode == "shadow":
            batch.updates.append(DeliveryUpdate(**base, status="shadow", payload=dispatch.payload))
            metrics.delivery(route.name, target.name, "shadow")
            return
        if mapped.key is not None and not force and self._held(dispatch, batch, base):
            return
        adapter = self.adapters[target.system]
        lanes = self.lanes
        lane = lanes.lane(route.name, target.name) if lanes is not None else None
        if lanes is not None and lane is not None:
            # batch timing on a bulk operation: the lane delivers it with others and settles it later
            lanes.hold(lease)
            lane.add(BulkItem(dispatch, lease, lease.message.parks))
            return
        batch.due.append(Due(lease, dispatch, adapter, base, log_))  # delivered with the batch's others

    def _deliver(self, batch: Batch) -> None:
        """Make the batch's deliveries and record them. Where an adapter can take several calls at once
        (``call_many``), the first attempts of one operation go together; retries follow one by one, as each
        delivery's policy says. Calls in one batch are independent: the queue hands out one event per key."""
        groups: dict[tuple[str, str], list[Due]] = {}
        for due in batch.due:
            if type(due.adapter).call_many is not Adapter.call_many:
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
        try:
            results = admitted[0][0].adapter.call_many(operation, calls)
        except Exception as exc:  # the adapter failed as a whole: every call failed with it
            results = [exc] * len(calls)
        for (due, guard), result in zip(admitted, results, strict=True):
            due.first = result
            self._observe(due.dispatch, guard, result if isinstance(result, Exception) else None)

    def _held(self, dispatch: Dispatch, batch: Batch, base: dict[str, Any]) -> bool:
        """Park ``dispatch`` behind an earlier delivery of its key that is parked on the same route and target.

        Without this, a later event of an order would be applied while an earlier one waits out its park,
        and the earlier one would land last. The held delivery makes no attempt (it does not count against
        ``max_parks``) and comes due with the one it waits for; the parker re-drives both in arrival order.
        """
        route, target, key = dispatch.route.name, dispatch.target_name, dispatch.event.key
        ahead = batch.parked_ahead.get((route, target, key)) if key is not None else None
        if ahead is None or ahead.idempotency_key == dispatch.idempotency_key:
            return False
        mine = batch.received_at.get(dispatch.source.id)
        if mine is not None and (mine, dispatch.idempotency_key) < (ahead.received_at, ahead.idempotency_key):
            return False  # the parked one is the later event: this one goes first
        batch.updates.append(DeliveryUpdate(**base, status="parked", attempt=0, attempt_status="skipped",
                                            error=f"held behind parked delivery {ahead.idempotency_key} "
                                                  f"of the same key {key!r}",
                                            error_kind="transient", next_attempt_at=ahead.next_attempt_at,
                                            payload=dispatch.payload))
        metrics.delivery(route, target, "parked")
        self.stats.parked += 1
        return True

    @staticmethod
    def _call_for(dispatch: Dispatch, attempt: int) -> Call:
        return Call(dispatch.event, dispatch.payload, dispatch.idempotency_key, route=dispatch.route.name,
                    attempt=attempt, args=dispatch.target.config.args)

    def _call(self, adapter: Adapter, dispatch: Dispatch, attempt: int) -> Outcome:
        guard = self._admit(dispatch)
        error: BaseException | None = None
        try:
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
        route, target = dispatch.route.name, dispatch.target.config.name
        seconds = attempted.duration_ms / 1000.0
        if attempted.status == "delivered":
            outcome = attempted.outcome or Outcome()
            # Per-key marks move only for a delivery that happened (not shadow, not parked, not failed), also when
            # a bulk lane delivers it later: the sequence for staleness, the digest for skip_unchanged.
            key = dispatch.event.key
            if key is not None and dispatch.event.sequence is not None:
                batch.applied.append((f"{route}:{target}", key, dispatch.event.sequence))
            if dispatch.route.config.skip_unchanged and key is not None:
                batch.digests[(f"{route}:{target}", key)] = dispatch.payload_digest()
            batch.updates.append(DeliveryUpdate(**base, status="delivered", attempt=attempted.attempts,
                                                duration_ms=attempted.duration_ms, reference=outcome.reference,
                                                payload=dispatch.payload))
            batch.links.extend(links_for(dispatch, outcome))
            try:
                follow = self.pipeline.follow_up(dispatch, outcome.result)
            except IronbusError as exc:
                # The delivery happened; only its follow-up cannot be built (an emit_map failed on the result).
                # Keep the result, so that 'ironbus dlq retry' can build the follow-up once the map is fixed.
                follow = None
                reason = not_emitted(dispatch.target.config.emit, exc)
                body = letter_body(dispatch.idempotency_key, dispatch.target.config.emit, outcome.result)
                batch.letters.append(DeadLetter(body, reason, dispatch.source.id, route, target))
                log_.error("follow-up not emitted", route=route, target=target, error=str(exc))
            if follow is not None:
                # a deterministic id: a redelivered batch re-emits the same event, which the journal collapses
                follow = follow.with_(id=followup_id(dispatch.idempotency_key, follow.type))
                batch.followups.append((follow, "followup"))
            metrics.delivery(route, target, "delivered", seconds)
            metrics.latency(route, max(time.time() - _event_epoch(dispatch.source), 0.0))
            self.stats.delivered += 1
            log_.debug("delivered", route=route, target=target, attempts=attempted.attempts,
                      reference=outcome.reference)
            return
        error = str(attempted.error)
        if attempted.status == "park":
            batch.updates.append(DeliveryUpdate(**base, status="parked", attempt=attempted.attempts, error=error,
                                                error_kind="transient", duration_ms=attempted.duration_ms,
                                                next_attempt_at=attempted.next_attempt_at, payload=dispatch.payload))
            metrics.delivery(route, target, "parked", seconds)
            self.stats.parked += 1
            log_.warning("delivery parked", route=route, target=target, error=error,
                         retry_in=round((attempted.next_attempt_at or time.time()) - time.time(), 1))
            return
        kind = "permanent" if isinstance(attempted.error, PermanentError) else "transient"
        batch.updates.append(DeliveryUpdate(**base, status="dead", attempt=attempted.attempts, error=error,
                                            error_kind=kind, duration_ms=attempted.duration_ms,
                                            payload=dispatch.payload))
        batch.letters.append(DeadLetter(lease.message.body, error, dispatch.source.id, route,
                                        dispatch.target.config.name, kind, attempted.attempts))
        metrics.delivery(route, target, "dead", seconds)
        self.stats.dead += 1
        log_.error("delivery dead-lettered", route=route, target=target, error=error)

    def _settle(self, leases: Sequence[Lease], batch: Batch) -> None:
        self.settle_journal(batch)
        if self.lanes is not None:
            leases = self.lanes.worker_done(leases)  # leases with bulk items in flight are acked by their lane
        ack(self.queue, leases)

    def settle_journal(self, batch: Batch) -> None:
        """Write one batch's outcomes: follow-ups first (journal and queue), then — in one transaction — the
        delivery states, dead letters and per-key marks, so a crash cannot keep some of them and lose others."""
        if batch.followups:
            self.ingest(batch.followups)
        if not (batch.updates or batch.letters or batch.applied or batch.digests or batch.links):
            return
        with write(self.journal.engine) as conn:
            self.journal.settle(batch.updates, conn=conn)
            self.journal.xref.import_rows(batch.links, conn=conn)
            self.journal.dead_letter(batch.letters, conn=conn)
            self.sequences.applied_many(batch.applied, conn=conn)
            self.sequences.remember_digests(batch.digests, conn=conn)


def ack(queue: Queue, leases: Sequence[Lease]) -> None:
    """Ack leases in one round trip."""
    if leases:
        queue.ack_many(leases)


def _event_epoch(event: Event) -> float:
    from datetime import datetime

    try:
        return datetime.fromisoformat(event.time.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return time.time()
