"""Statements compiled once and run on the driver (bus.journal.sql): same rows, counts and error types on SQLite
(straight to the sqlite3 connection) and PostgreSQL (through exec_driver_sql)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from bus.journal import Journal
from bus.journal.engine import read, write
from bus.journal.sql import ListSelect, ManyRows, Prepared

_metadata = sa.MetaData()
_T = sa.Table("driver_sql_t", _metadata, sa.Column("k", sa.Text, primary_key=True), sa.Column("v", sa.Integer),
              sa.Column("note", sa.Text))


@pytest.fixture
def engine(journal: Journal) -> sa.Engine:
    _metadata.create_all(journal.engine)
    return journal.engine


def test_inserts_deletes_and_reads_agree_on_both_databases(engine: sa.Engine) -> None:
    insert = ManyRows(_T.insert())
    only_key = ManyRows(_T.insert(), columns=["k"])  # one column: a row's values are still a tuple
    delete = Prepared(_T.delete().where(_T.c.k == sa.bindparam("b_k"), _T.c.v == sa.bindparam("b_v")),
                      ["b_k", "b_v"])
    count_from = Prepared(sa.select(sa.func.count()).select_from(_T).where(_T.c.v >= sa.bindparam("least")),
                          ["least"])
    lookup = ListSelect(lambda in_: sa.select(_T.c.k, _T.c.v.label("value")).where(in_("keys", _T.c.k)))
    with write(engine) as conn:
        assert insert.execute(conn, [{"k": f"k{n}", "v": n, "note": None} for n in range(10)]) == 10
        assert only_key.execute(conn, [{"k": "bare"}]) == 1
    with write(engine) as conn:
        # the first two match, the third names a row whose v differs: 2 deleted
        assert delete.execute_many(conn, [{"b_k": "k0", "b_v": 0}, {"b_k": "k1", "b_v": 1},
                                          {"b_k": "k2", "b_v": 99}]) == 2
        assert delete.execute_many(conn, []) == 0
    with read(engine) as conn:
        assert count_from.execute(conn, least=5).fetchone()[0] == 5
        rows = lookup.execute(conn, keys=["k0", "k2", "k3", "bare", "missing"])
    assert sorted((row.k, row.value) for row in rows) == [("bare", None), ("k2", 2), ("k3", 3)]


def test_a_driver_error_is_raised_as_sqlalchemy_s_type_without_the_values(engine: sa.Engine) -> None:
    insert = ManyRows(_T.insert())
    with write(engine) as conn:
        insert.execute(conn, [{"k": "once", "v": 1, "note": None}])
    # callers tell a store outage from a bad row by SQLAlchemy's exception types (bus.ingest._systemic)
    with pytest.raises(sa.exc.IntegrityError) as caught, write(engine) as conn:
        insert.execute(conn, [{"k": "once", "v": 2, "note": "s3cret-value"}])
    assert "s3cret-value" not in str(caught.value)  # a row's values may be secrets: never in the message
    missing = Prepared(sa.select(sa.literal_column("nothing")).select_from(sa.table("no_such_table")), [])
    with pytest.raises((sa.exc.ProgrammingError, sa.exc.OperationalError)), read(engine) as conn:
        missing.execute(conn)
    with read(engine) as conn:  # the failed transaction was rolled back: the table holds the first row only
        assert [tuple(r) for r in conn.execute(sa.select(_T.c.k, _T.c.v))] == [("once", 1)]
