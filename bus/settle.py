"""Settling: turning attempts into journal rows, and writing one batch in one unit of work.

Both the worker and the bulk lanes (:mod:`bus.bulk`) settle through a :class:`Settler`. A batch's rows —
delivery states, dead letters, per-key marks, digests, follow-up events and, where the queue lives in the
journal's database, its acks — commit together (:meth:`bus.journal.Journal.unit`): a crash keeps all of them or
none, and a batch that is handed out again is settled again, skipping what already succeeded.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from adapters.base import Outcome
from bus import metrics, telemetry
from bus.delivery import Attempted
from bus.envelope import Event
from bus.errors import IronbusError, PermanentError
from bus.followups import followup_id, letter_body, not_emitted
from bus.frontdoor import FrontDoor
from bus.journal import Journal
from bus.journal.journal import ParkedAhead
from bus.journal.records import DeadLetter, DeliveryUpdate, XrefRow
from bus.linking import links_for
from bus.ordering import SequenceGuard
from bus.pipeline import Dispatch, Pipeline
from bus.queue.base import Lease, Queue

__all__ = ["Batch", "Settler", "WorkerStats", "ack"]

log = structlog.get_logger(__name__)


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
    """One batch's journal rows to write, and what was read before delivering it."""

    updates: list[DeliveryUpdate] = field(default_factory=list)
    letters: list[DeadLetter] = field(default_factory=list)
    followups: list[tuple[Event, str]] = field(default_factory=list)
    applied: list[tuple[str, str, int]] = field(default_factory=list)  # (scope, key, sequence) after success
    last_applied: dict[tuple[str, str], int] = field(default_factory=dict)
    last_digests: dict[tuple[str, str], str] = field(default_factory=dict)
    digests: dict[tuple[str, str], str] = field(default_factory=dict)  # to remember once delivered
    parked_ahead: dict[tuple[str, str, str], ParkedAhead] = field(default_factory=dict)  # (route, target, key)
    received_at: dict[str, float] = field(default_factory=dict)  # of this batch's events, when some key waits
    due: list[Any] = field(default_factory=list)  # the worker's deliveries to make, once the batch is sorted
    links: list[XrefRow] = field(default_factory=list)  # master-data links made by this batch's deliveries
    # (trace id, span ids) of the attempts, by idempotency key: only with tracing on (bus.telemetry)
    spans: dict[str, tuple[str, str]] | None = None

    def writes(self) -> bool:
        return bool(self.updates or self.letters or self.applied or self.digests or self.followups or self.links)


def ack(queue: Queue, leases: Sequence[Lease]) -> None:
    """Ack leases in one round trip."""
    if leases:
        queue.ack_many(leases)


class Settler:
    """Records attempts into a :class:`Batch` and writes batches. ``stats`` counts what it recorded."""

    def __init__(self, pipeline: Pipeline, journal: Journal, queue: Queue, door: FrontDoor,
                 sequences: SequenceGuard, stats: WorkerStats) -> None:
        self.pipeline = pipeline
        self.journal = journal
        self.queue = queue
        self.door = door
        self.sequences = sequences
        self.stats = stats

    def record(self, lease: Lease, dispatch: Dispatch, attempted: Attempted, batch: Batch,
               base: dict[str, Any], log_: Any) -> None:
        """Turn one delivery's attempt into its rows: delivered (with its marks and follow-up), parked or dead."""
        route, target = dispatch.route.name, dispatch.target.config.name
        seconds = attempted.duration_ms / 1000.0
        if telemetry.enabled:
            _note_spans(batch, dispatch.idempotency_key)
        if attempted.status == "delivered":
            outcome = attempted.outcome or Outcome()
            # Per-key marks move only for a delivery that happened (not shadow, not parked, not failed), also when
            # a bulk lane delivers it later: the sequence for staleness, the digest for skip_unchanged.
            key = dispatch.event.key
            if key is not None and dispatch.event.sequence is not None:
                batch.applied.append((dispatch.target.scope, key, dispatch.event.sequence))
            if dispatch.route.config.skip_unchanged and key is not None:
                batch.digests[(dispatch.target.scope, key)] = dispatch.payload_digest()
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
            if telemetry.enabled:
                follow = telemetry.delivered(dispatch.idempotency_key, follow)
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

    def settle(self, batch: Batch, leases: Sequence[Lease] = ()) -> None:
        """Write one batch in one unit of work: follow-up events (journaled and queued through the front door),
        delivery states, dead letters, per-key marks and the acks of ``leases``."""
        if not (batch.writes() or leases):
            return
        with self.journal.unit() as unit:
            if batch.followups:
                self.door.submit([event for event, _ in batch.followups], "followup", unit=unit)
            self.journal.settle(batch.updates, unit=unit, spans=batch.spans)
            self.journal.xref.import_rows(batch.links, conn=unit.conn)
            self.journal.dead_letter(batch.letters, unit=unit)
            self.sequences.applied_many(batch.applied, unit=unit)
            self.sequences.remember_digests(batch.digests, unit=unit)
            if leases:
                self.queue.ack_within(unit, leases)


def _note_spans(batch: Batch, idempotency_key: str) -> None:
    """Keep the ids of the attempt spans a delivery just made, for its attempt-log row."""
    ids = telemetry.attempt_ids(idempotency_key)
    if ids is not None:
        if batch.spans is None:
            batch.spans = {}
        batch.spans[idempotency_key] = ids


def _event_epoch(event: Event) -> float:
    try:
        return datetime.fromisoformat(event.time.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return time.time()
