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

Held messages: what the ingestor journals and publishes in one transaction (:meth:`EmbeddedQueue.publish_held`)
is inserted already claimed by this process when a claim would hand it out at once anyway, and handed to this
process's consumers from memory: no claim statement (one write transaction per batch) and no second look at
rows just written. Only while consumers are consuming, and at most two batches ahead of them; a killed process's
held rows come back when their leases expire, as any claimed row's do, and :meth:`EmbeddedQueue.close` hands
back those not yet taken.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog
from sqlalchemy.engine import Engine

from bus.backoff import Backoff
from bus.journal.queuerows import QueueRows, RowLease
from bus.journal.unit import UnitOfWork
from bus.leases import LeaseKeeper
from bus.queue.base import Lease, Message

__all__ = ["EmbeddedLease", "EmbeddedQueue"]

log = structlog.get_logger(__name__)

# A process whose consumers have not asked for messages for this long holds none for them (they stopped, or
# this process only receives).
_CONSUMERS_GONE_AFTER = 1.0


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

    @property
    def row(self) -> RowLease:
        return RowLease(self.id, self.owner, self.delivery_count)


class EmbeddedQueue:
    """The lease queue on an engine whose database the journal has migrated (its rows:
    :class:`~bus.journal.queuerows.QueueRows`). Thread-safe; any number of processes may share one database."""

    def __init__(self, engine: Engine, *, lease_seconds: float = 30.0, max_poll_interval: float = 0.1,
                 renew: bool = True) -> None:
        self._rows = QueueRows(engine)
        self.lease_seconds = lease_seconds
        self.max_poll_interval = max_poll_interval
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._changed = threading.Condition()
        self._generation = 0
        self._idle = True
        self._keeper = LeaseKeeper(self.extend_many, lease_seconds)
        self._renew = renew  # False: leases run out on their own (tests of what a paused process leaves)
        self._held: deque[EmbeddedLease] = deque()  # claimed when published, for this process's consumers
        self._batch = 0  # the largest batch a consumer asked for (0: none has)
        self._consumed_at = 0.0  # when a consumer last asked (monotonic)

    def shares(self, engine: Engine) -> bool:
        """Whether the rows live on ``engine`` (the journal's): then a unit of work can hold them."""
        return self._rows.engine is engine

    # -- producing -----------------------------------------------------------------------------------------
    def publish(self, messages: Sequence[Message]) -> None:
        """Insert the messages in one transaction; when this returns they survive a killed process."""
        if not messages:
            return
        self._rows.insert(messages)
        self._wake()

    def publish_within(self, unit: UnitOfWork, messages: Sequence[Message]) -> None:
        """Insert the messages in ``unit``'s transaction: they exist exactly when the unit commits."""
        if messages:
            self._rows.insert(messages, unit)
            unit.after_commit(self._wake)

    def publish_held(self, unit: UnitOfWork, messages: Sequence[Message]) -> None:
        """As :meth:`publish_within`, and those a claim would hand out at once are claimed by this process as
        they are inserted, for its consumers (see the module's text). Nothing is held while no consumer of this
        process has asked for messages in the last second, nor beyond two of their batches."""
        if not messages:
            return
        consuming = time.monotonic() - self._consumed_at < _CONSUMERS_GONE_AFTER
        room = 2 * self._batch - len(self._held) if consuming else 0
        held = self._rows.insert_held(messages, unit, self.owner, time.time() + self.lease_seconds, room)
        if not held:
            unit.after_commit(self._wake)
            return

        def committed() -> None:
            leases = [EmbeddedLease(message=r.message, delivery_count=r.delivery_count, id=r.id, owner=self.owner,
                                    _queue=self) for r in held]
            if self._renew:
                self._keeper.watch(leases)
            with self._changed:
                self._held.extend(leases)
                self._generation += 1
                self._changed.notify_all()

        unit.after_commit(committed)

    # -- consuming -----------------------------------------------------------------------------------------
    def consume(self, max_messages: int, timeout: float) -> list[Lease]:
        """Up to ``max_messages`` leases, waiting at most ``timeout`` seconds for the first one."""
        deadline = time.monotonic() + timeout
        backoff = Backoff(0.002, self.max_poll_interval)
        while True:
            with self._changed:
                generation = self._generation
                self._consumed_at = time.monotonic()
                self._batch = max(self._batch, max_messages)
                if self._held:
                    return [self._held.popleft() for _ in range(min(max_messages, len(self._held)))]
            leases = self._claim(max_messages)
            remaining = deadline - time.monotonic()
            if leases or remaining <= 0:
                return leases
            with self._changed:
                if self._generation == generation:
                    self._changed.wait(min(backoff.next(), remaining))
                else:
                    backoff.reset()

    def _claim(self, limit: int) -> list[Lease]:
        now = time.time()
        # An idle poll must not take SQLite's write lock away from publishers: look before claiming.
        if self._idle and not self._rows.any_ready(now):
            return []
        rows = self._rows.claim(limit, self.owner, now, now + self.lease_seconds)
        self._idle = not rows
        leases: list[Lease] = [EmbeddedLease(message=r.message, delivery_count=r.delivery_count, id=r.id,
                                             owner=self.owner, _queue=self) for r in rows]
        if self._renew:
            self._keeper.watch(leases)
        return leases

    # -- settling ------------------------------------------------------------------------------------------
    def ack_many(self, leases: Sequence[Lease]) -> None:
        """Acknowledge many leases in one transaction. A lease that had expired and was claimed again by
        someone else is left alone (that consumer owns it now) and logged."""
        todo = self._unsettled(leases)
        if not todo:
            return
        self._acked(self._rows.delete([x.row for x in todo]))

    def ack_within(self, unit: UnitOfWork, leases: Sequence[Lease]) -> None:
        """Acknowledge in ``unit``'s transaction: the batch's journal writes and its acks commit together."""
        todo = self._unsettled(leases, mark=False)  # settled once the unit commits: a rollback leaves them held
        if not todo:
            return
        lost = self._rows.delete([x.row for x in todo], unit)

        def committed() -> None:
            for lease in todo:
                lease.settled = True
            self._acked(lost)

        unit.after_commit(committed)

    def _acked(self, lost: int) -> None:
        if lost:
            log.warning("queue.ack_lost_lease", count=lost, hint="lease expired before ack; raise lease_seconds")
        self._wake()

    def release_many(self, leases: Sequence[Lease], delay: float = 0.0, *, park: bool = False) -> None:
        """Hand leases back in one transaction, visible again after ``delay`` seconds."""
        todo = self._unsettled(leases)
        if not todo:
            return
        self._rows.release([x.row for x in todo], delay, park)
        self._wake()

    def extend(self, lease: EmbeddedLease, seconds: float) -> bool:
        return self._rows.extend(lease.row, time.time() + seconds)

    def extend_many(self, leases: Sequence[EmbeddedLease], seconds: float) -> int:
        """Renew many leases to ``seconds`` from now in one transaction; returns how many were still ours."""
        return self._rows.extend_many([x.row for x in leases], time.time() + seconds)

    @staticmethod
    def _unsettled(leases: Sequence[Lease], *, mark: bool = True) -> list[EmbeddedLease]:
        todo = []
        for lease in leases:
            if not isinstance(lease, EmbeddedLease):
                raise TypeError(f"not a lease of an embedded queue: {lease!r}")
            if lease.settled:
                log.warning("queue.settled_twice", id=lease.id)
                continue
            lease.settled = mark
            todo.append(lease)
        return todo

    def _wake(self) -> None:
        with self._changed:
            self._generation += 1
            self._changed.notify_all()

    # -- operations ----------------------------------------------------------------------------------------
    def held(self) -> int:
        """Messages claimed for this process's consumers as they were published and not yet taken (``ironbus
        status`` shows them as ``held``, as it shows a RabbitMQ consumer's messages waiting for their key)."""
        with self._changed:
            return len(self._held)

    def depth(self) -> dict[str, int]:
        """``ready`` (visible now, including rows waiting behind an earlier row of their key), ``leased``
        (held by a live lease) and ``delayed`` (released with a delay)."""
        return self._rows.depth(time.time())

    def close(self) -> None:
        """Hand back the held messages no consumer took; the other leases live in the database (unsettled ones
        expire). The engine is the journal's."""
        with self._changed:
            held = list(self._held)
            self._held.clear()
        if held:
            try:
                self.release_many(held)
            except Exception as exc:  # noqa: BLE001 - they come back when their leases expire
                log.warning("queue.held_not_released", count=len(held), error=str(exc))
        self._keeper.close()
        self._wake()
