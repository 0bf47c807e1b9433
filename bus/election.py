"""One runner per poll/schedule trigger across every process and host that shares a journal.

Each ``ironbus run`` may run triggers; before each poll a process asks :meth:`Leases.hold` for the trigger's
lease, a row of ``ib_leaders`` in the journal database (``journal.leases``, :mod:`bus.journal.leaders`) that
names a holder until a time. The holder renews it
with every poll; another process takes it only once it has run out, so when the runner dies (SIGKILL, a host
gone) another takes over within ``ttl`` seconds. The take-over is one conditional UPDATE (or INSERT for a
trigger nobody held yet), atomic on SQLite and PostgreSQL alike, so two processes never both win the same lease.

A poll that outlasts the lease may overlap with the next holder's; the trigger's record ids and seen-keys make
that harmless (an event already journaled is not emitted again).
"""

from __future__ import annotations

import os
import socket
import time
import uuid

import sqlalchemy as sa
import structlog

from bus.journal.leaders import LeaderLeases

__all__ = ["LEASE_SECONDS", "Leases", "leaders"]

log = structlog.get_logger(__name__)

#: How long a trigger's lease lasts without renewal: the fail-over time when its runner dies.
LEASE_SECONDS = float(os.environ.get("IRONBUS_LEADER_LEASE") or 15.0)


class Leases:
    """This process's view of the trigger leases in one journal database."""

    def __init__(self, store: LeaderLeases, *, ttl: float | None = None, holder: str | None = None) -> None:
        self.store = store
        self.ttl = LEASE_SECONDS if ttl is None else ttl
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._held: set[str] = set()

    def hold(self, name: str, *, ttl: float | None = None) -> bool:
        """Take or renew the lease on ``name`` for ``ttl`` seconds (default: this object's); True when this
        process holds it now."""
        now = time.time()
        span = self.ttl if ttl is None else ttl
        try:
            held = self.store.take(name, self.holder, now, now + span)
        except sa.exc.SQLAlchemyError as exc:  # the journal is away: nobody polls until it is back
            log.warning("trigger.lease_unavailable", trigger=name, error=str(exc).splitlines()[0])
            held = False
        if held and time.time() >= now + span:
            # The row says "until now + span" from a clock read *before* the write, which may have waited (a slow
            # or partitioned database, an answer that came once the link was back): by now another process may
            # hold the lease, so a late "yes" is a "no" - this process must not poll beside the new holder.
            log.warning("trigger.lease_answer_late", trigger=name, holder=self.holder,
                        waited=round(time.time() - now, 1), lease=span)
            held = False
        if held != (name in self._held):
            log.info("trigger.lease_taken" if held else "trigger.lease_lost", trigger=name, holder=self.holder)
            (self._held.add if held else self._held.discard)(name)
        return held

    def release_all(self) -> None:
        """Give up every lease this process holds (a graceful stop hands over at once)."""
        self.store.release(self.holder)
        self._held.clear()


def leaders(store: LeaderLeases) -> dict[str, tuple[str, float]]:
    """``{trigger: (holder, seconds left)}`` of the leases still running (for ``ironbus status``)."""
    now = time.time()
    return {lease.name: (lease.holder, round(lease.until - now, 1)) for lease in store.running(now)}
