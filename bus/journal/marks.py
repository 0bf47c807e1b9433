"""Per-key marks of each ``route:target`` scope: the last applied ``sequence`` and the digest of the last
payload delivered (``skip_unchanged``). The rules that read them live in :mod:`bus.ordering`."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bus.journal import tables
from bus.journal.engine import reading, writing
from bus.journal.sql import InFilter, ListSelect, insert_for

__all__ = ["KeyMarks"]


def _marks_lookup(column: sa.Column[Any]) -> ListSelect:
    """(scope, key, ``column``) of the rows of ``column``'s table for lists of scopes and keys."""
    t = column.table

    def build(in_: InFilter) -> sa.Select[Any]:
        return sa.select(t.c.scope, t.c.key, column.label("value")).where(
            in_("scopes", t.c.scope), in_("keys", t.c.key))

    return ListSelect(build)


class KeyMarks:
    """Reads and advances ``ib_key_versions`` and ``ib_last_payloads``."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        # both columns of the primary key, so the lookup uses its index instead of scanning the table; compiled
        # once, as the journal's per-batch lookups are
        self._sequences = _marks_lookup(tables.key_versions.c.last_sequence)
        self._digests = _marks_lookup(tables.last_payloads.c.digest)

    def last_sequences(self, pairs: Sequence[tuple[str, str]], *,
                       conn: Connection | None = None) -> dict[tuple[str, str], int]:
        """The last applied sequence of every ``(scope, key)`` that has one, in one query."""
        return {pair: int(last) for pair, last in self._marks(self._sequences, pairs, conn).items()}

    def last_digests(self, pairs: Sequence[tuple[str, str]], *,
                     conn: Connection | None = None) -> dict[tuple[str, str], str]:
        """The digest of the last payload delivered for each ``(scope, key)`` that has one, in one query."""
        return {pair: str(digest) for pair, digest in self._marks(self._digests, pairs, conn).items()}

    def _marks(self, lookup: ListSelect, pairs: Sequence[tuple[str, str]],
               conn: Connection | None) -> dict[tuple[str, str], Any]:
        if not pairs:
            return {}
        wanted = set(pairs)
        out: dict[tuple[str, str], Any] = {}
        with reading(self.engine, conn) as conn:
            for row in lookup.execute(
                    conn, scopes=sorted({s for s, _ in wanted}), keys=sorted({k for _, k in wanted})):
                if (row.scope, row.key) in wanted:
                    out[(row.scope, row.key)] = row.value
        return out

    def mark_applied(self, marks: Sequence[tuple[str, str, int]], *, conn: Connection | None = None) -> None:
        """Record applied sequences ``(scope, key, sequence)``; a mark never moves back."""
        if not marks:
            return
        t = tables.key_versions
        now = time.time()
        dialect = self.engine.dialect.name
        greatest = sa.func.greatest if dialect == "postgresql" else sa.func.max  # SQLite's two-argument max
        stmt = insert_for(dialect, t)
        stmt = stmt.on_conflict_do_update(
            index_elements=[t.c.scope, t.c.key],
            set_={"last_sequence": greatest(t.c.last_sequence, stmt.excluded.last_sequence), "updated_at": now})
        rows = [{"scope": s, "key": k, "last_sequence": n, "updated_at": now} for s, k, n in sorted(marks)]
        with writing(self.engine, conn) as conn:
            conn.execute(stmt, rows)

    def remember_digests(self, digests: Mapping[tuple[str, str], str], *, conn: Connection | None = None) -> None:
        """Store the digests of payloads just delivered."""
        if not digests:
            return
        t = tables.last_payloads
        now = time.time()
        with writing(self.engine, conn) as conn:
            stmt = insert_for(conn, t)
            conn.execute(stmt.on_conflict_do_update(
                index_elements=[t.c.scope, t.c.key],
                set_={"digest": stmt.excluded.digest, "updated_at": stmt.excluded.updated_at}),
                [{"scope": s, "key": k, "digest": d, "updated_at": now} for (s, k), d in sorted(digests.items())])
