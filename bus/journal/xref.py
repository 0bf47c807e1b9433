"""The durable master-data cross reference, stored in the journal's ``ib_xref`` table.

It answers "what is CRM customer 42 called in the canonical model" (:meth:`lookup`) and the reverse "what is
canonical customer C-7 called in SCM" (:meth:`reverse`). Same protocol as the in-memory ``bus.xref`` store.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from bus.journal import tables
from bus.journal.engine import read, write, writing
from bus.journal.records import XrefRow
from bus.journal.sql import insert_for

__all__ = ["DurableXref"]

_X = tables.xref


class DurableXref:
    """Cross references in the journal's database; thread-safe, shared by every process on that database."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def lookup(self, entity: str, system: str, system_id: str) -> str | None:
        """The canonical id of ``system``'s record ``system_id``, or None when unlinked."""
        with read(self._engine) as conn:
            return conn.execute(sa.select(_X.c.canonical_id).where(
                _X.c.entity == entity, _X.c.system == system, _X.c.system_id == str(system_id))).scalar()

    def reverse(self, entity: str, system: str, canonical_id: str) -> str | None:
        """``system``'s id of the canonical record, or None when that system has no linked record."""
        with read(self._engine) as conn:
            return conn.execute(sa.select(_X.c.system_id).where(
                _X.c.entity == entity, _X.c.system == system, _X.c.canonical_id == str(canonical_id))
                .order_by(_X.c.updated_at.desc()).limit(1)).scalar()

    def link(self, entity: str, canonical_id: str, system: str, system_id: str) -> None:
        """Record that ``system``'s ``system_id`` is canonical ``canonical_id`` (re-linking replaces)."""
        self.import_rows([XrefRow(entity, system, str(system_id), str(canonical_id))])

    def import_rows(self, rows: Iterable[XrefRow], *, conn: Connection | None = None) -> int:
        """Upsert many links in one transaction (the caller's, when ``conn`` is given); returns how many."""
        now = time.time()
        # one row per link (the last given wins): PostgreSQL refuses to upsert the same row twice in one statement
        unique = {(r.entity, r.system, str(r.system_id)): r for r in rows}
        values = [{"entity": r.entity, "system": r.system, "system_id": str(r.system_id),
                   "canonical_id": str(r.canonical_id), "updated_at": now} for r in unique.values()]
        if not values:
            return 0
        with writing(self._engine, conn) as conn:
            stmt = insert_for(conn, _X)
            stmt = stmt.on_conflict_do_update(
                index_elements=[_X.c.entity, _X.c.system, _X.c.system_id],
                set_={"canonical_id": stmt.excluded.canonical_id, "updated_at": stmt.excluded.updated_at})
            conn.execute(stmt, values)
        return len(values)

    def rows(self, entity: str | None = None) -> list[XrefRow]:
        """Every link (of one entity), ordered for stable export."""
        query = sa.select(_X).order_by(_X.c.entity, _X.c.canonical_id, _X.c.system, _X.c.system_id)
        if entity is not None:
            query = query.where(_X.c.entity == entity)
        with read(self._engine) as conn:
            return [XrefRow(r.entity, r.system, r.system_id, r.canonical_id, r.updated_at)
                    for r in conn.execute(query)]

    def unlink(self, entity: str, system: str, system_id: str) -> bool:
        """Remove one link; True when it existed."""
        with write(self._engine) as conn:
            result = conn.execute(_X.delete().where(
                _X.c.entity == entity, _X.c.system == system, _X.c.system_id == str(system_id)))
            return bool(result.rowcount)
