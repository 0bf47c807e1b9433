"""``ib_leaders``: one lease per poll/schedule trigger, naming its holder until a time (the policy:
:mod:`bus.election`)."""

from __future__ import annotations

from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bus.journal import tables
from bus.journal.engine import read, write
from bus.journal.sql import insert_for

__all__ = ["Lease", "LeaderLeases"]

_L = tables.leaders


class Lease(NamedTuple):
    name: str
    holder: str
    until: float


class LeaderLeases:
    """The trigger leases of one journal database. Every method raises ``sqlalchemy.exc.SQLAlchemyError``
    when the database does not answer."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def take(self, name: str, holder: str, now: float, until: float) -> bool:
        """Give ``name`` to ``holder`` until ``until`` when nobody holds it, ``holder`` does, or its lease ran
        out before ``now``; True when ``holder`` holds it now. Atomic: two holders never both win it."""
        with write(self.engine) as conn:
            taken = conn.execute(_L.update().where(_L.c.name == name, sa.or_(_L.c.holder == holder, _L.c.until < now))
                                 .values(holder=holder, until=until)).rowcount
            if taken == 1:
                return True
            # nobody held it yet, or someone else does: an insert that does nothing on conflict, then read who
            # holds it (an INSERT's rowcount is not reliable on every driver)
            conn.execute(insert_for(conn, _L).on_conflict_do_nothing(index_elements=[_L.c.name])
                         .values(name=name, holder=holder, until=until))
            return bool(conn.execute(sa.select(_L.c.holder).where(_L.c.name == name)).scalar() == holder)

    def release(self, holder: str) -> None:
        """End every lease of ``holder`` now (another may take them at once)."""
        with write(self.engine) as conn:
            conn.execute(_L.update().where(_L.c.holder == holder).values(until=0.0))

    def running(self, now: float) -> list[Lease]:
        """The leases that have not run out at ``now``, by name."""
        with read(self.engine) as conn:
            return [Lease(r.name, r.holder, r.until)
                    for r in conn.execute(sa.select(_L).where(_L.c.until > now).order_by(_L.c.name))]
