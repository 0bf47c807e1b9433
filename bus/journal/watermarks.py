"""Poll watermarks and the overlap de-duplication set.

A poll asks a system for records changed since the stored watermark. Polls overlap on purpose (clocks
drift, transactions commit late), so each record also has a dedup key; :meth:`filter_unseen` drops keys
already journaled, and :meth:`set_watermark` stores the new watermark together with the keys just seen,
in one transaction. Seen keys are pruned by age with the rest of the journal.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bus.journal import tables
from bus.journal.engine import read, write
from bus.journal.sql import chunks, insert_for

__all__ = ["Watermarks"]

_W = tables.watermarks
_S = tables.seen


class Watermarks:
    """Watermarks and seen keys per (system, trigger)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def get_watermark(self, system: str, trigger: str) -> str | None:
        with read(self._engine) as conn:
            return conn.execute(sa.select(_W.c.value).where(_W.c.system == system, _W.c.trigger == trigger)).scalar()

    def set_watermark(self, system: str, trigger: str, value: str | None, seen_keys: Sequence[str] = ()) -> None:
        """Store the watermark (None keeps the stored one) and remember ``seen_keys``, atomically."""
        now = time.time()
        with write(self._engine) as conn:
            if value is not None:
                stmt = insert_for(conn, _W)
                conn.execute(stmt.on_conflict_do_update(
                    index_elements=[_W.c.system, _W.c.trigger],
                    set_={"value": stmt.excluded.value, "updated_at": stmt.excluded.updated_at}),
                    {"system": system, "trigger": trigger, "value": value, "updated_at": now})
            keys = list(dict.fromkeys(seen_keys))
            if keys:
                seen = insert_for(conn, _S)
                conn.execute(seen.on_conflict_do_update(
                    index_elements=[_S.c.system, _S.c.trigger, _S.c.dedup_key],
                    set_={"seen_at": seen.excluded.seen_at}),
                    [{"system": system, "trigger": trigger, "dedup_key": k, "seen_at": now} for k in keys])

    def filter_unseen(self, system: str, trigger: str, keys: Sequence[str]) -> list[str]:
        """The keys (in the given order, without duplicates) not yet recorded by :meth:`set_watermark`."""
        unique = list(dict.fromkeys(keys))
        seen: set[str] = set()
        with read(self._engine) as conn:
            for part in chunks(unique):
                seen.update(conn.execute(sa.select(_S.c.dedup_key).where(
                    _S.c.system == system, _S.c.trigger == trigger, _S.c.dedup_key.in_(part))).scalars())
        return [k for k in unique if k not in seen]
