"""The embedded queue's rows (``ib_queue``): the SQL behind :class:`bus.queue.embedded.EmbeddedQueue`.

The queue keeps its leases, waiting and waking; this module claims, inserts, deletes and counts rows, in
their own transaction or in a :class:`~bus.journal.unit.UnitOfWork` (a worker batch's acks and follow-ups
commit with its delivery states).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import orjson
import sqlalchemy as sa

from bus.journal import tables
from bus.journal.engine import read, write, writing
from bus.journal.sql import ListSelect, ManyRows, Prepared, chunks
from bus.journal.unit import UnitOfWork
from bus.queue.base import Message

__all__ = ["ClaimedRow", "QueueRows", "RowLease"]

_Q = tables.queue
_INSERT = ManyRows(_Q.insert())
_P = _Q.alias("earlier")


class RowLease(NamedTuple):
    """Which claim of a row to settle: the row, its owner and the delivery it was claimed for."""

    id: int
    owner: str
    delivery_count: int


class ClaimedRow(NamedTuple):
    id: int
    message: Message
    delivery_count: int


def _rows(messages: Sequence[Message], now: float) -> list[dict[str, Any]]:
    return [{"key": m.key, "route": m.route, "target": m.target, "parks": m.parks,
             "headers": orjson.dumps(m.headers).decode() if m.headers else None, "body": m.body,
             "available_at": now, "lease_owner": None, "lease_until": None, "delivery_count": 0,
             "enqueued_at": now} for m in messages]


class QueueRows:
    """The rows of the embedded queue on the journal's database. Thread-safe."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"
        self._statements()

    def _statements(self) -> None:
        """Build the hot statements once: compiling them per call costs more than running them."""
        now = sa.bindparam("now", type_=sa.Double)
        ready = _Q.c.available_at <= now
        self._peek = Prepared(sa.select(_Q.c.id).where(ready).limit(1), ["now"])
        blocked = sa.select(_P.c.id).where(
            _P.c.key == _Q.c.key, _P.c.id != _Q.c.id,
            sa.or_(_P.c.id < _Q.c.id, sa.and_(_P.c.lease_owner.is_not(None), _P.c.lease_until > now))).exists()
        pick = (sa.select(_Q.c.id).where(ready, sa.or_(_Q.c.key.is_(None), ~blocked))
                .order_by(_Q.c.id).limit(sa.bindparam("limit", type_=sa.Integer)))
        if self.postgres:
            pick = pick.with_for_update(skip_locked=True)
        until = sa.bindparam("until", type_=sa.Double)
        self._claim_stmt = (
            _Q.update().where(_Q.c.id.in_(pick.scalar_subquery()))
            .values(lease_owner=sa.bindparam("owner", type_=sa.Text), lease_until=until, available_at=until,
                    delivery_count=_Q.c.delivery_count + 1)
            .returning(_Q.c.id, _Q.c.key, _Q.c.route, _Q.c.target, _Q.c.parks, _Q.c.headers, _Q.c.body,
                       _Q.c.delivery_count))
        self._keys_present = ListSelect(lambda in_: sa.select(_Q.c.key).where(in_("keys", _Q.c.key)))
        self._ack = Prepared(_Q.delete().where(
            _Q.c.id == sa.bindparam("b_id"), _Q.c.lease_owner == sa.bindparam("b_owner"),
            _Q.c.delivery_count == sa.bindparam("b_count")), ["b_id", "b_owner", "b_count"])
        self._last_rowid = Prepared(sa.select(sa.func.last_insert_rowid()), [])

    def insert(self, messages: Sequence[Message], unit: UnitOfWork | None = None) -> None:
        """Insert the messages, visible at once, in one transaction (``unit``'s when given)."""
        if not messages:
            return
        with writing(self.engine, unit.conn if unit is not None else None) as conn:
            _INSERT.execute(conn, _rows(messages, time.time()))

    def insert_held(self, messages: Sequence[Message], unit: UnitOfWork, owner: str, until: float,
                    room: int) -> list[ClaimedRow]:
        """Insert the messages in ``unit``'s transaction, up to ``room`` of them already claimed by ``owner``
        until ``until``: those a claim would hand out at once (no key, or the first row of a key that has no
        row yet). Returns the claimed rows; the rest are inserted ready, as :meth:`insert` does. SQLite only
        (the rows' ids are read back as the insert's consecutive rowids); on PostgreSQL none is claimed."""
        if not messages:
            return []
        if self.postgres or room <= 0:
            self.insert(messages, unit)
            return []
        now = time.time()
        rows = _rows(messages, now)
        conn = unit.conn
        keys = sorted({m.key for m in messages if m.key is not None})
        taken = {row.key for part in chunks(keys) for row in self._keys_present.execute(conn, keys=part)}
        held: list[int] = []
        for i, m in enumerate(messages):
            if len(held) < room and (m.key is None or m.key not in taken):
                rows[i].update(lease_owner=owner, lease_until=until, available_at=until, delivery_count=1)
                held.append(i)
            if m.key is not None:
                taken.add(m.key)  # a later row of this key waits behind this one
        _INSERT.execute(conn, rows)
        # An INTEGER PRIMARY KEY takes the largest rowid + 1: under the write lock one executemany's rows get
        # consecutive ids, the last of which this connection knows.
        first = int(self._last_rowid.execute(conn).fetchone()[0]) - len(rows) + 1
        return [ClaimedRow(first + i, messages[i], 1) for i in held]

    def any_ready(self, now: float) -> bool:
        """Whether some row is visible now (a read: an idle poll must not take SQLite's write lock)."""
        with read(self.engine) as conn:
            return self._peek.execute(conn, now=now).fetchone() is not None

    def claim(self, limit: int, owner: str, now: float, until: float) -> list[ClaimedRow]:
        """Stamp up to ``limit`` claimable rows with ``owner``'s lease until ``until``, oldest first."""
        with write(self.engine) as conn:
            rows = sorted(conn.execute(self._claim_stmt, {"now": now, "until": until, "owner": owner,
                                                          "limit": limit}).all(), key=lambda r: r.id)
        return [ClaimedRow(r.id, Message(body=bytes(r.body), key=r.key, route=r.route, target=r.target,
                                         parks=r.parks, headers=orjson.loads(r.headers) if r.headers else {}),
                           r.delivery_count) for r in rows]

    def delete(self, leases: Sequence[RowLease], unit: UnitOfWork | None = None) -> int:
        """Delete the rows still held by these leases; returns how many were no longer theirs."""
        lost = 0
        with writing(self.engine, unit.conn if unit is not None else None) as conn:
            for part in chunks(list(leases)):
                lost += len(part) - self._ack.execute_many(
                    conn, [{"b_id": x.id, "b_owner": x.owner, "b_count": x.delivery_count} for x in part])
        return lost

    def release(self, leases: Sequence[RowLease], delay: float, park: bool) -> None:
        """Clear the leases; the rows are visible again after ``delay`` seconds."""
        with write(self.engine) as conn:
            conn.execute(_Q.update().where(
                _Q.c.id == sa.bindparam("b_id"), _Q.c.lease_owner == sa.bindparam("b_owner"),
                _Q.c.delivery_count == sa.bindparam("b_count"))
                .values(lease_owner=None, lease_until=None, available_at=time.time() + max(delay, 0.0),
                        parks=_Q.c.parks + (1 if park else 0)),
                [{"b_id": x.id, "b_owner": x.owner, "b_count": x.delivery_count} for x in leases])

    def extend(self, lease: RowLease, until: float) -> bool:
        """Move a lease's expiry to ``until``; False when the row is no longer held by it."""
        with write(self.engine) as conn:
            result = conn.execute(_Q.update().where(
                _Q.c.id == lease.id, _Q.c.lease_owner == lease.owner, _Q.c.delivery_count == lease.delivery_count)
                .values(lease_until=until, available_at=until))
        return bool(result.rowcount)

    def extend_many(self, leases: Sequence[RowLease], until: float) -> int:
        """Move many leases' expiry to ``until`` in one transaction; how many were still held by them."""
        kept = 0
        with write(self.engine) as conn:
            for lease in leases:
                kept += max(conn.execute(_Q.update().where(
                    _Q.c.id == lease.id, _Q.c.lease_owner == lease.owner,
                    _Q.c.delivery_count == lease.delivery_count).values(lease_until=until, available_at=until)
                ).rowcount, 0)
        return kept

    def oldest_ready_age(self, now: float) -> float | None:
        """Seconds the oldest message that is ready and not leased has waited (None when none waits)."""
        with read(self.engine) as conn:
            oldest = conn.execute(sa.select(sa.func.min(_Q.c.enqueued_at)).where(
                _Q.c.available_at <= now, sa.or_(_Q.c.lease_owner.is_(None), _Q.c.lease_until < now))).scalar()
        return None if oldest is None else round(now - float(oldest), 1)

    def depth(self, now: float) -> dict[str, int]:
        """``ready``, ``leased`` and ``delayed`` row counts (see :meth:`EmbeddedQueue.depth`)."""
        leased = sa.and_(_Q.c.lease_owner.is_not(None), _Q.c.lease_until > now)
        with read(self.engine) as conn:
            row = conn.execute(sa.select(
                sa.func.count().filter(_Q.c.available_at <= now),
                sa.func.count().filter(leased),
                sa.func.count().filter(_Q.c.available_at > now, _Q.c.lease_owner.is_(None)))).one()
        return {"ready": int(row[0]), "leased": int(row[1]), "delayed": int(row[2])}
