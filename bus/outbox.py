"""The outbox: inbound events journaled but not yet on the queue are found and published.

Ingest journals a group of events, then publishes them (RabbitMQ, or the embedded queue's own table): two
writes that cannot share one transaction. A process killed between them left events in the journal that no
queue would ever hand out: never answered 202 (so not lost), but stuck and invisible. So each event is
journaled together with an outbox row (same transaction) that the publish removes; :class:`OutboxRelay`
publishes the rows older than a grace period (their process died, or its publish is hanging) and removes them.

A publish that fails is answered 503 and the source retries with a new request; its rows become ``refused``,
are never published, and ``ironbus status`` and ``trace`` can tell them from accepted events.

The table lives beside the journal's (``ib_outbox``) and is created on first use.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Engine

from bus.envelope import Event
from bus.journal import Journal
from bus.journal.engine import read, write
from bus.journal.sql import chunks, insert_for
from bus.queue.base import Message, Queue
from bus.sidetables import ensure_tables

__all__ = ["GRACE_SECONDS", "Outbox", "OutboxRelay", "inbound_states", "outbox_counts"]

log = structlog.get_logger(__name__)

#: An outbox row younger than this belongs to an ingest still under way (a publish takes milliseconds).
GRACE_SECONDS = float(os.environ.get("IRONBUS_OUTBOX_GRACE") or 10.0)

_metadata = sa.MetaData()
outbox = sa.Table(
    "ib_outbox", _metadata,
    sa.Column("event_id", sa.Text, primary_key=True),
    sa.Column("state", sa.Text, nullable=False),  # 'pending' | 'refused'
    sa.Column("recorded_at", sa.Double, nullable=False),
    sa.Index("ib_outbox_state_recorded", "state", "recorded_at"),
)
def _ensure(engine: Engine) -> None:
    ensure_tables(engine, _metadata, [outbox])


def message_for(event: Event) -> Message:
    """The queue message that carries an inbound event."""
    return Message(body=event.encode(), key=event.key)


class Outbox:
    """Journal-with-outbox writes for the ingestor."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        _ensure(journal.engine)
        self._dialect = journal.engine.dialect.name

    def record(self, events: Sequence[tuple[Event, str]], done: Sequence[str] = ()) -> None:
        """Journal the events and their outbox rows in one transaction (idempotent on the event id); ``done``
        are events published since the last call, whose rows are removed in the same transaction (one write
        per group commit instead of two)."""
        now = time.time()
        stmt = insert_for(self._dialect, outbox)
        stmt = stmt.on_conflict_do_update(index_elements=[outbox.c.event_id],
                                          set_={"state": "pending", "recorded_at": stmt.excluded.recorded_at})
        with write(self.journal.engine) as conn:
            self.journal.record_events(events, conn=conn)
            for pairs in chunks(list(events)):
                conn.execute(stmt, [{"event_id": e.id, "state": "pending", "recorded_at": now} for e, _ in pairs])
            for ids in chunks(list(done)):
                conn.execute(outbox.delete().where(outbox.c.event_id.in_(list(ids))))

    def published(self, event_ids: Sequence[str]) -> None:
        """The events are on the queue: their outbox rows go."""
        with write(self.journal.engine) as conn:
            for part in chunks(list(event_ids)):
                conn.execute(outbox.delete().where(outbox.c.event_id.in_(list(part))))

    def refused(self, event_ids: Sequence[str]) -> None:
        """The publish failed and the source was told to retry: never publish these."""
        with write(self.journal.engine) as conn:
            for part in chunks(list(event_ids)):
                conn.execute(outbox.update().where(outbox.c.event_id.in_(list(part))).values(state="refused"))


def outbox_counts(engine: Engine, grace: float | None = None) -> dict[str, int]:
    """``unpublished`` (pending past the grace period: waiting for the relay) and ``refused`` events."""
    _ensure(engine)
    cutoff = time.time() - (GRACE_SECONDS if grace is None else grace)
    with read(engine) as conn:
        row = conn.execute(sa.select(
            sa.func.count().filter(outbox.c.state == "pending", outbox.c.recorded_at < cutoff),
            sa.func.count().filter(outbox.c.state == "refused"))).one()
    return {"unpublished": int(row[0] or 0), "refused": int(row[1] or 0)}


def inbound_states(engine: Engine, event_ids: Sequence[str]) -> dict[str, str]:
    """``{event id: 'refused' | 'unpublished'}`` for those of ``event_ids`` still in the outbox (for trace)."""
    _ensure(engine)
    cutoff = time.time() - GRACE_SECONDS
    out: dict[str, str] = {}
    with read(engine) as conn:
        for ids in chunks(list(event_ids)):
            for row in conn.execute(sa.select(outbox).where(outbox.c.event_id.in_(list(ids)))):
                if row.state == "refused":
                    out[row.event_id] = "refused"
                elif row.recorded_at < cutoff:
                    out[row.event_id] = "unpublished"
    return out


class OutboxRelay:
    """Publishes outbox rows older than ``grace`` seconds, every ``interval`` seconds, in a daemon thread.

    The rows are claimed in the same transaction that deletes them (``FOR UPDATE SKIP LOCKED`` on PostgreSQL,
    so relays of several processes share the work), and the publish happens before that transaction commits:
    a relay killed after publishing and before committing publishes the event again (at least once, and the
    worker's idempotency keys keep the effect single), never zero times.
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
        _ensure(journal.engine)

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                while self.relay_once() == self.batch and not self.stop.is_set():
                    pass
            except Exception as exc:  # noqa: BLE001 - journal or broker away: the next round tries again
                log.warning("outbox.relay_failed", error=str(exc))

    def relay_once(self) -> int:
        """Publish one batch of stale outbox rows; returns how many were published."""
        cutoff = time.time() - self.grace
        pick = (sa.select(outbox.c.event_id).where(outbox.c.state == "pending", outbox.c.recorded_at < cutoff)
                .order_by(outbox.c.recorded_at).limit(self.batch))
        if self.journal.engine.dialect.name != "postgresql":
            # SQLite has one writer: the embedded queue's publish could not write while a claim is held. Read,
            # publish, delete; two relays at once may both publish (at least once, never zero times).
            with read(self.journal.engine) as conn:
                ids = list(conn.execute(pick).scalars())
            events = self._events(ids)
            if not ids:
                return 0
            self._publish(events, ids)
            with write(self.journal.engine) as conn:
                conn.execute(outbox.delete().where(outbox.c.event_id.in_(ids)))
        else:
            with write(self.journal.engine) as conn:
                ids = list(conn.execute(pick.with_for_update(skip_locked=True)).scalars())
                if not ids:
                    return 0
                events = self._events(ids)
                self._publish(events, ids)
                conn.execute(outbox.delete().where(outbox.c.event_id.in_(ids)))
        self.relayed += len(events)
        log.warning("outbox.relayed", events=len(events),
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
