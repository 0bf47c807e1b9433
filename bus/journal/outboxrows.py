"""``ib_outbox``: inbound events journaled and not yet published (the policy: :mod:`bus.outbox`).

A row is written with its event in one unit of work and removed once the event is on the queue; ``refused``
marks events whose publish failed and whose source was told to retry (never published later).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bus.journal import tables
from bus.journal.engine import read, write, writing
from bus.journal.sql import ListWrite, ManyRows, chunks, insert_for
from bus.journal.unit import UnitOfWork

__all__ = ["OutboxCounts", "OutboxRows"]

_O = tables.outbox


class OutboxCounts(NamedTuple):
    unpublished: int  # pending and older than the cutoff: waiting for the relay
    refused: int


class OutboxRows:
    """The outbox rows of one journal database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # compiled once and run on the driver: ingest writes and removes rows on every group commit
        stmt = insert_for(engine.dialect.name, _O)
        self._upsert = ManyRows(stmt.on_conflict_do_update(
            index_elements=[_O.c.event_id], set_={"state": "pending", "recorded_at": stmt.excluded.recorded_at}),
            as_arrays=["event_id"])
        self._remove = ListWrite(lambda in_: _O.delete().where(in_("ids", _O.c.event_id)))
        self._refuse = ListWrite(lambda in_: _O.update().where(in_("ids", _O.c.event_id)).values(state="refused"))

    def add(self, event_ids: Sequence[str], now: float, *, unit: UnitOfWork) -> None:
        """Pending rows for ``event_ids``, in ``unit`` (the one that journals the events); idempotent."""
        self._upsert.execute(unit.conn, [{"event_id": i, "state": "pending", "recorded_at": now} for i in event_ids])

    def remove(self, event_ids: Sequence[str], *, unit: UnitOfWork | None = None) -> None:
        """The events are on the queue: their rows go (in ``unit`` when given)."""
        if not event_ids:
            return
        with writing(self.engine, unit.conn if unit is not None else None) as conn:
            for ids in chunks(list(event_ids)):
                self._remove.execute(conn, ids=ids)

    def refuse(self, event_ids: Sequence[str]) -> None:
        """Mark the rows ``refused``: the relay never publishes them."""
        with write(self.engine) as conn:
            for ids in chunks(list(event_ids)):
                self._refuse.execute(conn, ids=ids)

    def counts(self, cutoff: float) -> OutboxCounts:
        """Pending rows recorded before ``cutoff``, and refused rows."""
        with read(self.engine) as conn:
            row = conn.execute(sa.select(
                sa.func.count().filter(_O.c.state == "pending", _O.c.recorded_at < cutoff),
                sa.func.count().filter(_O.c.state == "refused"))).one()
        return OutboxCounts(int(row[0] or 0), int(row[1] or 0))

    def states(self, event_ids: Sequence[str], cutoff: float) -> dict[str, str]:
        """``{event id: 'refused' | 'unpublished'}`` of those of ``event_ids`` still in the outbox (pending ones
        only when recorded before ``cutoff``)."""
        out: dict[str, str] = {}
        with read(self.engine) as conn:
            for ids in chunks(list(event_ids)):
                for row in conn.execute(sa.select(_O).where(_O.c.event_id.in_(list(ids)))):
                    if row.state == "refused":
                        out[row.event_id] = "refused"
                    elif row.recorded_at < cutoff:
                        out[row.event_id] = "unpublished"
        return out

    def drain(self, cutoff: float, limit: int, publish: Callable[[list[str]], None]) -> list[str]:
        """Hand up to ``limit`` pending rows recorded before ``cutoff`` (oldest first) to ``publish`` and remove
        them once it returned; returns their event ids. When ``publish`` raises, the rows stay.

        PostgreSQL: the rows are claimed ``FOR UPDATE SKIP LOCKED`` in the transaction that deletes them, so
        relays of several processes share the work, and ``publish`` runs before it commits (a relay killed in
        between publishes again: at least once, never zero times). SQLite has one writer, and the embedded
        queue's publish writes to the same file: read, publish, then delete (two relays at once may both publish).
        """
        pick = (sa.select(_O.c.event_id).where(_O.c.state == "pending", _O.c.recorded_at < cutoff)
                .order_by(_O.c.recorded_at).limit(limit))
        if self.engine.dialect.name != "postgresql":
            with read(self.engine) as conn:
                ids = list(conn.execute(pick).scalars())
            if ids:
                publish(ids)
                with write(self.engine) as conn:
                    conn.execute(_O.delete().where(_O.c.event_id.in_(ids)))
            return ids
        with write(self.engine) as conn:
            ids = list(conn.execute(pick.with_for_update(skip_locked=True)).scalars())
            if ids:
                publish(ids)
                conn.execute(_O.delete().where(_O.c.event_id.in_(ids)))
        return ids
