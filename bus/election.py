"""One runner per poll/schedule trigger across every process and host that shares a journal.

Each ``ironbus run`` may run triggers; before each poll a process asks :meth:`Leases.hold` for the trigger's
lease, a row of ``ib_leaders`` in the journal database that names a holder until a time. The holder renews it
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
from sqlalchemy.engine import Engine

from bus.journal.engine import read, write
from bus.journal.sql import insert_for
from bus.sidetables import ensure_tables

__all__ = ["LEASE_SECONDS", "Leases", "leaders"]

log = structlog.get_logger(__name__)

#: How long a trigger's lease lasts without renewal: the fail-over time when its runner dies.
LEASE_SECONDS = float(os.environ.get("IRONBUS_LEADER_LEASE") or 15.0)

_metadata = sa.MetaData()
_L = sa.Table(
    "ib_leaders", _metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("holder", sa.Text, nullable=False),
    sa.Column("until", sa.Double, nullable=False),
)
def _ensure(engine: Engine) -> None:
    ensure_tables(engine, _metadata, [_L])


class Leases:
    """This process's view of the trigger leases in one journal database."""

    def __init__(self, engine: Engine, *, ttl: float | None = None, holder: str | None = None) -> None:
        self.engine = engine
        self.ttl = LEASE_SECONDS if ttl is None else ttl
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._held: set[str] = set()
        _ensure(engine)

    def hold(self, name: str, *, ttl: float | None = None) -> bool:
        """Take or renew the lease on ``name`` for ``ttl`` seconds (default: this object's); True when this
        process holds it now."""
        now = time.time()
        span = self.ttl if ttl is None else ttl
        try:
            with write(self.engine) as conn:
                taken = conn.execute(_L.update().where(_L.c.name == name, sa.or_(_L.c.holder == self.holder,
                                                                                _L.c.until < now))
                                     .values(holder=self.holder, until=now + span)).rowcount
                if taken != 1:
                    # nobody held it yet, or someone else does: an insert that does nothing on conflict, then
                    # read who holds it (an INSERT's rowcount is not reliable on every driver)
                    conn.execute(insert_for(conn, _L).on_conflict_do_nothing(index_elements=[_L.c.name])
                                 .values(name=name, holder=self.holder, until=now + span))
                    holder = conn.execute(sa.select(_L.c.holder).where(_L.c.name == name)).scalar()
                    taken = 1 if holder == self.holder else 0
        except sa.exc.SQLAlchemyError as exc:  # the journal is away: nobody polls until it is back
            log.warning("trigger.lease_unavailable", trigger=name, error=str(exc).splitlines()[0])
            taken = 0
        held = bool(taken)
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
        with write(self.engine) as conn:
            conn.execute(_L.update().where(_L.c.holder == self.holder).values(until=0.0))
        self._held.clear()


def leaders(engine: Engine) -> dict[str, tuple[str, float]]:
    """``{trigger: (holder, seconds left)}`` of the leases still running (for ``ironbus status``)."""
    _ensure(engine)
    now = time.time()
    with read(engine) as conn:
        rows = conn.execute(sa.select(_L).where(_L.c.until > now).order_by(_L.c.name)).all()
    return {r.name: (r.holder, round(r.until - now, 1)) for r in rows}
