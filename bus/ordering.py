"""Per-key staleness: an event whose ``sequence`` is older than the last one applied for its key is stale.

The scope is ``route:target`` — the same order may be at version 7 in one system and still at 6 in another.
The last applied sequence only moves forward after a delivery *succeeded*, so a delivery that is retried,
parked, or redelivered after a crash is never mistaken for a stale one; an equal sequence is a repeat of the
same version and is let through (the idempotency key keeps it from repeating an effect).
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from bus.journal import tables
from bus.journal.engine import read, write

__all__ = ["SequenceGuard"]


class SequenceGuard:
    """Reads and advances ``ib_key_versions`` in the journal database."""

    def __init__(self, journal: Any) -> None:
        self.engine: sa.Engine = journal.engine

    def last(self, scope: str, key: str) -> int | None:
        t = tables.key_versions
        with read(self.engine) as conn:
            value = conn.execute(sa.select(t.c.last_sequence).where(t.c.scope == scope, t.c.key == key)).scalar()
        return None if value is None else int(value)

    def is_stale(self, scope: str, key: str, sequence: int) -> bool:
        last = self.last(scope, key)
        return last is not None and sequence < last

    def applied(self, scope: str, key: str, sequence: int) -> None:
        """Record that ``sequence`` was applied; never moves the mark backwards (safe under races)."""
        t = tables.key_versions
        now = time.time()
        with write(self.engine) as conn:
            if self.engine.dialect.name == "postgresql":
                from sqlalchemy.dialects.postgresql import insert as pg_insert

                stmt = pg_insert(t).values(scope=scope, key=key, last_sequence=sequence, updated_at=now)
            else:
                from sqlalchemy.dialects.sqlite import insert as sqlite_insert

                stmt = sqlite_insert(t).values(scope=scope, key=key, last_sequence=sequence, updated_at=now)
            conn.execute(stmt.on_conflict_do_update(
                index_elements=[t.c.scope, t.c.key],
                set_={"last_sequence": sa.func.max(t.c.last_sequence, stmt.excluded.last_sequence)
                      if self.engine.dialect.name == "sqlite"
                      else sa.func.greatest(t.c.last_sequence, stmt.excluded.last_sequence),
                      "updated_at": now},
            ))
