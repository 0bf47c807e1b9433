"""The journal's per-batch IN lookups (bus.journal.sql.ListSelect) on SQLite: right rows, few compilations."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from bus.journal.engine import create_engine, read, write
from bus.journal.sql import ListSelect

_metadata = sa.MetaData()
_T = sa.Table("t", _metadata, sa.Column("k", sa.Text, primary_key=True), sa.Column("v", sa.Integer))


def test_lists_of_every_length_find_their_rows_with_a_few_statements(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path}/j.sqlite")
    _metadata.create_all(engine)
    with write(engine) as conn:
        conn.execute(_T.insert(), [{"k": f"k{n}", "v": n} for n in range(200)])
    lookup = ListSelect(lambda in_: sa.select(_T.c.k, _T.c.v).where(in_("keys", _T.c.k)))
    with read(engine) as conn:
        for size in range(1, 130):  # a worker's batches: any size from 1 to 128 (and one more)
            keys = [f"k{n}" for n in range(0, 2 * size, 2)] + ["missing"]
            rows = lookup.execute(conn, keys=keys)
            assert sorted(row.v for row in rows) == [n for n in range(0, 2 * size, 2) if n < 200]
    # one compiled statement per power of two, not one per length: a batch rarely pays for a compilation
    assert len(lookup._compiled) <= 9
    engine.dispose()
