"""Per-key state of each route:target — staleness by ``sequence``, and the last payload delivered.

An event whose ``sequence`` is older than the last one applied for its key is stale.

The scope is ``route:target`` — the same order may be at version 7 in one system and still at 6 in another.
The last applied sequence only moves forward after a delivery *succeeded*, so a delivery that is retried,
parked, or redelivered after a crash is never mistaken for a stale one; an equal sequence is a repeat of the
same version and is let through (the idempotency key keeps it from repeating an effect).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bus.journal import tables
from bus.journal.engine import reading, writing
from bus.journal.sql import InFilter, ListSelect, insert_for

__all__ = ["SequenceGuard", "payload_digest"]


def payload_digest(payload: Any) -> str:
    """A stable digest of a JSON payload (key order does not matter)."""
    return hashlib.blake2b(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS, default=str),
                           digest_size=16).hexdigest()


def _marks_lookup(column: sa.Column[Any]) -> ListSelect:
    """(scope, key, ``column``) of the rows of ``column``'s table for lists of scopes and keys."""
    t = column.table

    def build(in_: InFilter) -> sa.Select[Any]:
        return sa.select(t.c.scope, t.c.key, column.label("value")).where(
            in_("scopes", t.c.scope), in_("keys", t.c.key))

    return ListSelect(build)


class SequenceGuard:
    """Reads and advances ``ib_key_versions`` in the journal database."""

    def __init__(self, journal: Any) -> None:
        self.engine: sa.Engine = journal.engine
        # both columns of the primary key, so the lookup uses its index instead of scanning the table; compiled
        # once, as the journal's per-batch lookups are
        self._sequences = _marks_lookup(tables.key_versions.c.last_sequence)
        self._digests = _marks_lookup(tables.last_payloads.c.digest)

    def last_many(self, pairs: Sequence[tuple[str, str]], *,
                  conn: Connection | None = None) -> dict[tuple[str, str], int]:
        """The last applied sequence of every ``(scope, key)`` that has one, in one query."""
        marks = self._marks(self._sequences, pairs, conn)
        return {pair: int(last) for pair, last in marks.items()}

    def _marks(self, lookup: ListSelect, pairs: Sequence[tuple[str, str]],
               conn: Connection | None) -> dict[tuple[str, str], Any]:
        """The value ``lookup`` reads for every pair that has a row, in one query."""
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

    def applied_many(self, marks: Sequence[tuple[str, str, int]], *, conn: Connection | None = None) -> None:
        """Record several applied sequences in one transaction (the caller's, when ``conn`` is given)."""
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

    # -- last payload per key (skip_unchanged) -------------------------------------------------------------
    def last_digests(self, pairs: Sequence[tuple[str, str]], *,
                     conn: Connection | None = None) -> dict[tuple[str, str], str]:
        """The digest of the last payload delivered for each ``(scope, key)`` that has one, in one query."""
        return {pair: str(digest) for pair, digest in self._marks(self._digests, pairs, conn).items()}

    def remember_digests(self, digests: Mapping[tuple[str, str], str], *, conn: Connection | None = None) -> None:
        """Store the digests of payloads just delivered, in one transaction (the caller's, when ``conn`` is
        given)."""
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
