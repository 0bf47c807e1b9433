"""Statements compiled once and run on the driver (bus.journal.sql): same rows, counts and error types on SQLite
(straight to the sqlite3 connection) and PostgreSQL (through exec_driver_sql)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from bus.journal import Journal
from bus.journal.engine import read, write
from bus.journal.sql import ListSelect, ListWrite, ManyRows, Prepared, insert_for

_metadata = sa.MetaData()
_T = sa.Table("driver_sql_t", _metadata, sa.Column("k", sa.Text, primary_key=True), sa.Column("v", sa.Integer),
              sa.Column("note", sa.Text))
_U = sa.Table("driver_sql_u", _metadata, sa.Column("k", sa.Text, primary_key=True), sa.Column("at", sa.Double),
              sa.Column("n", sa.Integer, nullable=False), sa.Column("state", sa.Text, nullable=False),
              sa.Column("body", sa.LargeBinary))


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


def test_list_writes_change_only_the_listed_rows(engine: sa.Engine) -> None:
    insert = ManyRows(_T.insert())
    mark = ListWrite(lambda in_: _T.update().where(in_("keys", _T.c.k)).values(note="marked"))
    drop = ListWrite(lambda in_: _T.delete().where(in_("keys", _T.c.k), in_("values", _T.c.v)))
    with write(engine) as conn:
        insert.execute(conn, [{"k": f"k{n}", "v": n, "note": None} for n in range(12)])
    with write(engine) as conn:
        # three keys (padded to four on SQLite by repeating the last), one missing: the two present change
        assert mark.execute(conn, keys=["k1", "k5", "missing"]) == 2
        assert mark.execute(conn, keys=[]) == 0
        # both lists must match: k2 has v 2 (listed), k3 has v 3 (not listed)
        assert drop.execute(conn, keys=["k2", "k3", "k4", "k6", "k7"], values=[2, 4, 6, 99, 100]) == 3
    with read(engine) as conn:
        rows = {r.k: r.note for r in conn.execute(sa.select(_T.c.k, _T.c.note))}
    assert sorted(rows) == sorted(f"k{n}" for n in (0, 1, 3, 5, 7, 8, 9, 10, 11))
    assert {k for k, note in rows.items() if note == "marked"} == {"k1", "k5"}


def test_outbox_rows_are_added_removed_and_refused_in_chunks(journal: Journal) -> None:
    ids = [f"ev-{n:04d}" for n in range(1_203)]  # more than one IN chunk (500)
    with journal.unit() as unit:
        journal.outbox.add([*ids, ids[0]], 100.0, unit=unit)  # a resend within the group: one row
    assert journal.outbox.counts(cutoff=200.0) == (1_203, 0)
    journal.outbox.refuse(ids[:3])
    with journal.unit() as unit:
        journal.outbox.remove(ids[3:1_100], unit=unit)
    journal.outbox.remove([])
    assert journal.outbox.counts(cutoff=200.0) == (1_203 - 1_100, 3)
    assert journal.outbox.states(ids[:5] + ids[1_150:1_152], cutoff=200.0) == {
        ids[0]: "refused", ids[1]: "refused", ids[2]: "refused", ids[1_150]: "unpublished", ids[1_151]: "unpublished"}
    with journal.unit() as unit:  # an event journaled again is pending again, with its new time
        journal.outbox.add(ids[:1], 300.0, unit=unit)
    assert journal.outbox.states(ids[:1], cutoff=250.0) == {}


def test_a_connection_the_server_dropped_is_not_handed_out_again(postgres_url: str) -> None:
    from tests.helpers.pg import pg_schema_url

    for url in pg_schema_url(postgres_url):
        journal = Journal(url)
        try:
            engine = journal.engine
            _metadata.create_all(engine)
            count = Prepared(sa.select(sa.func.count()).select_from(_T), [])
            with read(engine) as conn:
                pid = int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar())  # type: ignore[arg-type]
            admin = sa.create_engine(postgres_url, poolclass=sa.pool.NullPool)
            with admin.connect() as other:  # the server ends that session, as a restart or an admin would
                other.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
            admin.dispose()
            # the pool hands the dropped connection out once (it cannot know): the statement fails as an outage …
            with pytest.raises(sa.exc.OperationalError), read(engine) as conn:
                count.execute(conn)
            # … and is invalidated: the next transaction gets a fresh connection
            with read(engine) as conn:
                assert count.execute(conn).fetchone()[0] == 0
        finally:
            journal.close()


def test_many_rows_as_arrays_keep_the_rules_of_row_by_row(engine: sa.Engine) -> None:
    """On PostgreSQL ``as_arrays`` sends a call's rows as one statement of column arrays: a column NULL in every
    row, a bound constant in the conflict rule, and a key repeated within one call (which one statement cannot
    update twice) must come out as row-by-row execution does (and as SQLite, row by row, does)."""
    stmt = insert_for(engine.dialect.name, _U)
    upsert = ManyRows(stmt.on_conflict_do_update(
        index_elements=[_U.c.k], set_={"n": _U.c.n + stmt.excluded.n, "at": stmt.excluded.at},
        where=_U.c.state != "final"), as_arrays=["k"])
    count = 150
    rows = [{"k": f"k{i}", "at": None, "n": 1, "state": "final" if i % 10 == 0 else "open",
             "body": bytes([i % 256]) * 3} for i in range(count)]
    with write(engine) as conn:
        assert upsert.execute(conn, rows) == count
        assert upsert.execute(conn, []) == 0
    with write(engine) as conn:  # again, with a time: the final rows (every tenth) stay as they are
        changed = upsert.execute(conn, [{**row, "at": 1.5} for row in rows])
    assert changed == count - len(range(0, count, 10))
    with write(engine) as conn:  # a key twice in one call: both apply, in order
        assert upsert.execute(conn, [{**rows[1], "n": 5, "at": 2.5}, {**rows[2], "n": 1}, {**rows[1], "n": 7}]) == 3
    with read(engine) as conn:
        found = {r.k: (r.at, r.n, r.body) for r in conn.execute(sa.select(_U))}
    assert len(found) == count
    assert found["k0"] == (None, 1, b"\x00" * 3)
    assert found["k1"] == (None, 1 + 1 + 5 + 7, b"\x01" * 3)  # the last upsert set its time back to none
    assert found["k2"] == (None, 3, b"\x02" * 3)
    assert found[f"k{count - 1}"] == (1.5, 2, bytes([(count - 1) % 256]) * 3)


def test_many_rows_as_arrays_take_mixed_numbers_and_fall_back_on_mixed_types(engine: sa.Engine) -> None:
    """A binary array holds one type: ints among the floats of a float column are sent as floats, and a column
    that still mixes types (text and a number) goes row by row; either way the rows land as given."""
    upsert = ManyRows(insert_for(engine.dialect.name, _U).on_conflict_do_nothing(index_elements=[_U.c.k]),
                      as_arrays=[])
    numbers = [{"k": f"n{i}", "at": at, "n": i, "state": "s", "body": None}
               for i, at in enumerate([1, 2.5, None, True])]
    mixed = [{"k": "m0", "at": 1.0, "n": 0, "state": "text", "body": b""},
             {"k": "m1", "at": 2.0, "n": 1, "state": 7, "body": b"x"}]
    with write(engine) as conn:
        assert upsert.execute(conn, numbers) == 4
        assert upsert.execute(conn, mixed) == 2
    with read(engine) as conn:
        found = {r.k: (r.at, r.state, r.body) for r in conn.execute(sa.select(_U))}
    assert found == {"n0": (1.0, "s", None), "n1": (2.5, "s", None), "n2": (None, "s", None), "n3": (1.0, "s", None),
                     "m0": (1.0, "text", b""), "m1": (2.0, "7", b"x")}
