"""The embedded work queue: a crash-safe lease queue in the journal's database, no server needed.

Each message is a row of ``ib_queue``. ``consume`` claims up to N ready rows in one transaction (SQLite:
``BEGIN IMMEDIATE`` + ``UPDATE … RETURNING``; PostgreSQL: ``FOR UPDATE SKIP LOCKED`` so competing
processes never wait on each other) and stamps them with a lease. ``ack`` deletes the row; ``release``
clears the lease and makes the row visible again after a delay. The lease is stored *in the row*, so a
worker killed mid-batch loses nothing: once its leases expire the rows are claimable again, with a higher
``delivery_count``.

Per-key ordering: a row is claimable only when it is the oldest row of its key and no other row of its key
holds a live lease (so the head of a key blocks the rest of that key until it is acked — also while it is
released with a delay). Rows without a key are free.

Long deliveries: a lease handed out and not yet settled is renewed every third of ``lease_seconds`` while this
process lives (:class:`bus.leases.LeaseKeeper`), so a batch to a slow target never outlives its lease and is
never taken (and delivered) a second time; a killed process renews nothing, and its leases expire as before.

Waiting: consumers poll with a short exponential backoff (up to ``max_poll_interval``) and are woken at
once when this process publishes, acks or releases.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson
import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Engine

from bus.journal import tables
from bus.journal.engine import read, write
from bus.journal.sql import ManyRows, chunks
from bus.leases import LeaseKeeper
from bus.queue.base import Lease, Message

__all__ = ["EmbeddedLease", "EmbeddedQueue"]

log = structlog.get_logger(__name__)

_Q = tables.queue
_INSERT = ManyRows(_Q.insert())
_P = _Q.alias("earlier")


@dataclass(eq=False)
class EmbeddedLease:
    """A claimed row. Settle it exactly once with :meth:`ack` or :meth:`release`."""

    message: Message
    delivery_count: int
    id: int
    owner: str
    _queue: EmbeddedQueue = field(repr=False)
    settled: bool = False

    def ack(self) -> None:
        """Done: delete the message."""
        self._queue.ack_many([self])

    def release(self, delay: float = 0.0, *, park: bool = False) -> None:
        """Hand the message back, visible again after ``delay`` seconds (``park`` counts it as a park)."""
        self._queue.release_many([self], delay, park=park)

    def extend(self, seconds: float) -> bool:
        """Push the lease's expiry to ``seconds`` from now (long deliveries); False when it was lost."""
        return self._queue.extend(self, seconds)


class EmbeddedQueue:
    """The lease queue on an engine whose database the journal has migrated. Thread-safe; any number of
    processes may share one database."""

    def __init__(self, engine: Engine, *, lease_seconds: float = 30.0, max_poll_interval: float = 0.1,
                 renew: bool = True) -> None:
        self._engine = engine
        self.lease_seconds = lease_seconds
        self.max_poll_interval = max_poll_interval
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._changed = threading.Condition()
        self._generation = 0
        self._postgres = engine.dialect.name == "postgresql"
        self._idle = True
        self._statements()
        self._keeper = LeaseKeeper(self.extend_many, lease_seconds)
        self._renew = renew  # False: leases run out on their own (tests of what a paused process leaves)

    # -- producing -----------------------------------------------------------------------------------------
    def publish(self, messages: Sequence[Message]) -> None:
        """Insert the messages in one transaction; when this returns they survive a killed process."""
        if not messages:
            return
        now = time.time()
        with write(self._engine) as conn:
            _INSERT.execute(conn, [
                {"key": m.key, "route": m.route, "target": m.target, "parks": m.parks,
                 "headers": orjson.dumps(m.headers).decode() if m.headers else None, "body": m.body,
                 "available_at": now, "lease_owner": None, "lease_until": None, "delivery_count": 0,
                 "enqueued_at": now} for m in messages])
        self._wake()

    # -- consuming -----------------------------------------------------------------------------------------
    def consume(self, max_messages: int, timeout: float) -> list[Lease]:
        """Up to ``max_messages`` leases, waiting at most ``timeout`` seconds for the first one."""
        deadline = time.monotonic() + timeout
        backoff = 0.002
        while True:
            with self._changed:
                generation = self._generation
            leases = self._claim(max_messages)
            remaining = deadline - time.monotonic()
            if leases or remaining <= 0:
                return leases
            with self._changed:
                if self._generation == generation:
                    self._changed.wait(min(backoff, remaining))
                    backoff = min(backoff * 2, self.max_poll_interval)
                else:
                    backoff = 0.002

    def _claim(self, limit: int) -> list[Lease]:
        now = time.time()
        if self._idle:
            # An idle poll must not take SQLite's write lock away from publishers: look before claiming.
            with read(self._engine) as conn:
                if conn.execute(self._peek, {"now": now}).first() is None:
                    return []
        with write(self._engine) as conn:
            rows = sorted(conn.execute(self._claim_stmt, {"now": now, "until": now + self.lease_seconds,
                                                          "owner": self.owner, "limit": limit}).all(),
                          key=lambda r: r.id)
        self._idle = not rows
        leases: list[Lease] = [EmbeddedLease(
            message=Message(body=bytes(r.body), key=r.key, route=r.route, target=r.target, parks=r.parks,
                            headers=orjson.loads(r.headers) if r.headers else {}),
            delivery_count=r.delivery_count, id=r.id, owner=self.owner, _queue=self) for r in rows]
        if self._renew:
            self._keeper.watch(leases)
        return leases

    def _statements(self) -> None:
        """Build the hot statements once: compiling them per call costs more than running them."""
        now = sa.bindparam("now", type_=sa.Double)
        ready = _Q.c.available_at <= now
        self._peek = sa.select(_Q.c.id).where(ready).limit(1)
        blocked = sa.select(_P.c.id).where(
            _P.c.key == _Q.c.key, _P.c.id != _Q.c.id,
            sa.or_(_P.c.id < _Q.c.id, sa.and_(_P.c.lease_owner.is_not(None), _P.c.lease_until > now))).exists()
        pick = (sa.select(_Q.c.id).where(ready, sa.or_(_Q.c.key.is_(None), ~blocked))
                .order_by(_Q.c.id).limit(sa.bindparam("limit", type_=sa.Integer)))
        if self._postgres:
            pick = pick.with_for_update(skip_locked=True)
        until = sa.bindparam("until", type_=sa.Double)
        self._claim_stmt = (
            _Q.update().where(_Q.c.id.in_(pick.scalar_subquery()))
            .values(lease_owner=sa.bindparam("owner", type_=sa.Text), lease_until=until, available_at=until,
                    delivery_count=_Q.c.delivery_count + 1)
            .returning(_Q.c.id, _Q.c.key, _Q.c.route, _Q.c.target, _Q.c.parks, _Q.c.headers, _Q.c.body,
                       _Q.c.delivery_count))
        self._extend_stmt = _Q.update().where(
            _Q.c.id == sa.bindparam("b_id"), _Q.c.lease_owner == sa.bindparam("b_owner"),
            _Q.c.delivery_count == sa.bindparam("b_count")).values(
            lease_until=sa.bindparam("b_until", type_=sa.Double), available_at=sa.bindparam("b_until", type_=sa.Double))
        self._ack_stmt = _Q.delete().where(
            _Q.c.id == sa.bindparam("b_id"), _Q.c.lease_owner == sa.bindparam("b_owner"),
            _Q.c.delivery_count == sa.bindparam("b_count"))

    # -- settling ------------------------------------------------------------------------------------------
    def ack_many(self, leases: Sequence[Lease]) -> None:
        """Acknowledge many leases in one transaction. A lease that had expired and was claimed again by
        someone else is left alone (that consumer owns it now) and logged."""
        todo = self._unsettled(leases)
        if not todo:
            return
        lost = 0
        with write(self._engine) as conn:
            for part in chunks(todo):
                result = conn.execute(self._ack_stmt, [
                    {"b_id": x.id, "b_owner": x.owner, "b_count": x.delivery_count} for x in part])
                lost += len(part) - max(result.rowcount, 0)
        if lost:
            log.warning("queue.ack_lost_lease", count=lost, hint="lease expired before ack; raise lease_seconds")
        self._wake()

    def release_many(self, leases: Sequence[Lease], delay: float = 0.0, *, park: bool = False) -> None:
        """Hand leases back in one transaction, visible again after ``delay`` seconds."""
        todo = self._unsettled(leases)
        if not todo:
            return
        with write(self._engine) as conn:
            conn.execute(_Q.update().where(
                _Q.c.id == sa.bindparam("b_id"), _Q.c.lease_owner == sa.bindparam("b_owner"),
                _Q.c.delivery_count == sa.bindparam("b_count"))
                .values(lease_owner=None, lease_until=None, available_at=time.time() + max(delay, 0.0),
                        parks=_Q.c.parks + (1 if park else 0)),
                [{"b_id": x.id, "b_owner": x.owner, "b_count": x.delivery_count} for x in todo])
        self._wake()

    def extend(self, lease: EmbeddedLease, seconds: float) -> bool:
        until = time.time() + seconds
        with write(self._engine) as conn:
            result = conn.execute(_Q.update().where(
                _Q.c.id == lease.id, _Q.c.lease_owner == lease.owner, _Q.c.delivery_count == lease.delivery_count)
                .values(lease_until=until, available_at=until))
        return bool(result.rowcount)

    def extend_many(self, leases: Sequence[EmbeddedLease], seconds: float) -> int:
        """Renew many leases to ``seconds`` from now in one transaction; returns how many were still ours."""
        until = time.time() + seconds
        kept = 0
        with write(self._engine) as conn:
            for part in chunks(list(leases)):
                result = conn.execute(self._extend_stmt, [
                    {"b_id": x.id, "b_owner": x.owner, "b_count": x.delivery_count, "b_until": until} for x in part])
                kept += max(result.rowcount, 0)
        return kept

    @staticmethod
    def _unsettled(leases: Sequence[Lease]) -> list[EmbeddedLease]:
        todo = []
        for lease in leases:
            if not isinstance(lease, EmbeddedLease):
                raise TypeError(f"not a lease of an embedded queue: {lease!r}")
            if lease.settled:
                log.warning("queue.settled_twice", id=lease.id)
                continue
            lease.settled = True
            todo.append(lease)
        return todo

    def _wake(self) -> None:
        with self._changed:
            self._generation += 1
            self._changed.notify_all()

    # -- operations ----------------------------------------------------------------------------------------
    def depth(self) -> dict[str, int]:
        """``ready`` (visible now, including rows waiting behind an earlier row of their key), ``leased``
        (held by a live lease) and ``delayed`` (released with a delay)."""
        now = time.time()
        leased = sa.and_(_Q.c.lease_owner.is_not(None), _Q.c.lease_until > now)
        with read(self._engine) as conn:
            row = conn.execute(sa.select(
                sa.func.count().filter(_Q.c.available_at <= now),
                sa.func.count().filter(leased),
                sa.func.count().filter(_Q.c.available_at > now, _Q.c.lease_owner.is_(None)))).one()
        counts = {"ready": int(row[0]), "leased": int(row[1]), "delayed": int(row[2])}
        return counts

    def close(self) -> None:
        """Nothing to release: leases live in the database (unsettled ones expire); the engine is the
        journal's."""
        self._keeper.close()
        self._wake()
