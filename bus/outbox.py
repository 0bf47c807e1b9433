"""The outbox: inbound events journaled but not yet on the queue are found and published.

Ingest journals a group of events, then publishes them (RabbitMQ, or the embedded queue's own table): two
writes that cannot share one transaction. A process killed between them left events in the journal that no
queue would ever hand out: never answered 202 (so not lost), but stuck and invisible. So each event is
journaled together with an outbox row (same transaction) that the publish removes; :class:`OutboxRelay`
publishes the rows older than a grace period (their process died, or its publish is hanging) and removes them.

A publish that fails is answered 503 and the source retries with a new request; its rows become ``refused``,
are never published, and ``ironbus status`` and ``trace`` can tell them from accepted events.

The rows live in the journal's ``ib_outbox`` (:class:`bus.journal.outboxrows.OutboxRows`, ``journal.outbox``);
this module is the policy: when a row is written, removed, refused or relayed.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence

import structlog

from bus.envelope import Event
from bus.journal import Journal
from bus.queue.base import Message, Queue

__all__ = ["GRACE_SECONDS", "Outbox", "OutboxRelay", "inbound_states", "outbox_counts"]

log = structlog.get_logger(__name__)

#: An outbox row younger than this belongs to an ingest still under way (a publish takes milliseconds).
GRACE_SECONDS = float(os.environ.get("IRONBUS_OUTBOX_GRACE") or 10.0)


def message_for(event: Event, body: bytes | None = None) -> Message:
    """The queue message that carries an inbound event (``body``: its :meth:`Event.encode`, when at hand)."""
    return Message(body=event.encode() if body is None else body, key=event.key)


class Outbox:
    """Journal-with-outbox writes for the ingestor."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def record(self, events: Sequence[tuple[Event, str]], done: Sequence[str] = (),
               bodies: Sequence[bytes] | None = None) -> None:
        """Journal the events and their outbox rows in one unit of work (idempotent on the event id); ``done``
        are events published since the last call, whose rows are removed in the same unit (one write per
        group commit instead of two). ``bodies``: the events encoded, when the caller has them."""
        with self.journal.unit() as unit:
            self.journal.record_events(events, unit=unit, bodies=bodies)
            self.journal.outbox.add([event.id for event, _ in events], time.time(), unit=unit)
            self.journal.outbox.remove(done, unit=unit)

    def published(self, event_ids: Sequence[str]) -> None:
        """The events are on the queue: their outbox rows go."""
        self.journal.outbox.remove(event_ids)

    def refused(self, event_ids: Sequence[str]) -> None:
        """The publish failed and the source was told to retry: never publish these."""
        self.journal.outbox.refuse(event_ids)


def outbox_counts(journal: Journal, grace: float | None = None) -> dict[str, int]:
    """``unpublished`` (pending past the grace period: waiting for the relay) and ``refused`` events."""
    counts = journal.outbox.counts(time.time() - (GRACE_SECONDS if grace is None else grace))
    return counts._asdict()


def inbound_states(journal: Journal, event_ids: Sequence[str]) -> dict[str, str]:
    """``{event id: 'refused' | 'unpublished'}`` for those of ``event_ids`` still in the outbox (for trace)."""
    return journal.outbox.states(event_ids, time.time() - GRACE_SECONDS)


class OutboxRelay:
    """Publishes outbox rows older than ``grace`` seconds, every ``interval`` seconds, in a daemon thread.

    The rows are claimed and removed by :meth:`bus.journal.outboxrows.OutboxRows.drain`, which publishes before
    the removal commits: a relay killed in between publishes the event again (at least once, and the worker's
    idempotency keys keep the effect single), never zero times.
    """

    def __init__(self, journal: Journal, queue: Queue, *, grace: float | None = None, interval: float | None = None,
                 batch: int = 500, stop: threading.Event | None = None) -> None:
        self.journal = journal
        self.queue = queue
        self.grace = GRACE_SECONDS if grace is None else grace
        self.interval = min(5.0, self.grace / 2) if interval is None else interval
        self.batch = batch
        self.stop = stop or threading.Event()
        self.relayed = 0

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                while self.relay_once() == self.batch and not self.stop.is_set():
                    pass
            except Exception as exc:  # noqa: BLE001 - journal or broker away: the next round tries again
                log.warning("outbox.relay_failed", error=str(exc))

    def relay_once(self) -> int:
        """Publish one batch of stale outbox rows; returns how many rows were handled."""
        published: list[Event] = []

        def publish(ids: list[str]) -> None:
            events = self._events(ids)
            self._publish(events, ids)
            published.extend(events)

        ids = self.journal.outbox.drain(time.time() - self.grace, self.batch, publish)
        if not ids:
            return 0
        self.relayed += len(published)
        log.warning("outbox.relayed", events=len(published),
                    hint="journaled events whose process died before publishing them were published now")
        return len(ids)

    def _events(self, ids: list[str]) -> list[Event]:
        # rows whose event is gone (pruned) have nothing to publish: they are dropped with the others (a relay
        # runs only after a crash, so one read per event is no cost worth a second copy of the journal's SQL)
        found = (self.journal.get_event(event_id) for event_id in ids)
        return [event for event in found if event is not None]

    def _publish(self, events: list[Event], ids: list[str]) -> None:
        order = {event_id: i for i, event_id in enumerate(ids)}  # oldest first: per-key order as received
        self.queue.publish([message_for(e) for e in sorted(events, key=lambda e: order[e.id])])
