"""``ib_rate_buckets`` and ``ib_circuits``: rate-limit buckets and circuit state shared by every process on one
journal database (the policy — refill, penalty, when a circuit opens — is :mod:`bus.sharedstate`'s).

Every method raises ``sqlalchemy.exc.SQLAlchemyError`` when the database does not answer; the policy then
falls back to the process's own state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bus.journal import tables
from bus.journal.engine import read, write
from bus.journal.sql import insert_for

__all__ = ["Bucket", "CircuitStates", "RateBuckets"]

T = TypeVar("T")

_B, _C = tables.rate_buckets, tables.circuits


class Bucket(NamedTuple):
    """A token bucket as stored: tokens left at ``updated_at``, and no token before ``blocked_until``."""

    tokens: float
    updated_at: float
    blocked_until: float


class RateBuckets:
    """One token bucket per system."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._postgres = engine.dialect.name == "postgresql"

    def change(self, system: str, fresh: Bucket, change: Callable[[Bucket], tuple[Bucket, T]]) -> T:
        """Read ``system``'s bucket (``fresh`` when it has none yet), store what ``change`` makes of it and
        return ``change``'s second result, all in one transaction with the row locked (``FOR UPDATE`` on
        PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` serialises writers), so no other process changes it between.
        ``change`` should read the clock itself: a time taken before the lock was granted is stale."""
        query = sa.select(_B.c.tokens, _B.c.updated_at, _B.c.blocked_until).where(_B.c.system == system)
        if self._postgres:
            query = query.with_for_update()
        with write(self.engine) as conn:
            row = conn.execute(query).first()
            if row is None:
                conn.execute(insert_for(conn, _B).on_conflict_do_nothing(index_elements=[_B.c.system])
                             .values(system=system, **fresh._asdict()))
                row = conn.execute(query).one()
            bucket, result = change(Bucket(float(row.tokens), float(row.updated_at), float(row.blocked_until)))
            conn.execute(_B.update().where(_B.c.system == system).values(**bucket._asdict()))
        return result

    def get(self, system: str) -> Bucket | None:
        """``system``'s bucket as last stored, or None."""
        with read(self.engine) as conn:
            row = conn.execute(sa.select(_B).where(_B.c.system == system)).first()
        return None if row is None else Bucket(float(row.tokens), float(row.updated_at), float(row.blocked_until))


class CircuitStates:
    """One circuit per system: when it was opened, or NULL (closed)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def put(self, system: str, opened_at: float | None, now: float) -> None:
        """Store ``system``'s circuit as opened at ``opened_at`` (None: closed)."""
        with write(self.engine) as conn:
            stmt = insert_for(conn, _C)
            conn.execute(stmt.on_conflict_do_update(index_elements=[_C.c.system],
                                                    set_={"opened_at": opened_at, "updated_at": now})
                         .values(system=system, opened_at=opened_at, updated_at=now))

    def get(self, system: str) -> tuple[float | None] | None:
        """``(opened_at,)`` of ``system``'s circuit (``opened_at`` None: closed), or None when none was stored."""
        with read(self.engine) as conn:
            row = conn.execute(sa.select(_C.c.opened_at).where(_C.c.system == system)).first()
        return None if row is None else (None if row.opened_at is None else float(row.opened_at),)
