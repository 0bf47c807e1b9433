"""A thread's kept SQLite connection (bus.journal.keptconn): the same transactions as pooled connections gave —
committed, rolled back, isolated — with one connection begun and committed on the driver."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from bus.journal.engine import create_engine, read, write
from bus.journal.keptconn import kept_connections

_metadata = sa.MetaData()
_T = sa.Table("kept_t", _metadata, sa.Column("k", sa.Text, primary_key=True))
_PARENT = sa.Table("kept_parent", _metadata, sa.Column("id", sa.Integer, primary_key=True))


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    engine = create_engine(f"sqlite:///{tmp_path}/j.sqlite")
    _metadata.create_all(engine)
    with write(engine) as conn:  # a child whose foreign key is checked at COMMIT: a commit that fails
        conn.exec_driver_sql("CREATE TABLE kept_child (id INTEGER PRIMARY KEY, parent INTEGER "
                             "REFERENCES kept_parent(id) DEFERRABLE INITIALLY DEFERRED)")
    return engine


def _keys(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:  # a pooled connection of its own: sees only what was committed
        return sorted(conn.execute(sa.select(_T.c.k)).scalars())


def _driver(conn: sa.Connection) -> object:
    return conn.connection.driver_connection


def test_one_connection_serves_the_thread_s_transactions_and_each_commits(engine: sa.Engine) -> None:
    pool = engine.pool
    with kept_connections():
        with write(engine) as conn:
            conn.exec_driver_sql("INSERT INTO kept_t (k) VALUES ('a')")
            first = _driver(conn)
        assert _keys(engine) == ["a"]  # committed when the block ended
        with read(engine) as conn:
            assert _driver(conn) is first
        with write(engine) as conn:
            assert _driver(conn) is first
            conn.execute(_T.insert().values(k="b"))  # a Core statement: SQLAlchemy autobegins inside ours
        assert _keys(engine) == ["a", "b"]
        with write(engine) as conn:  # and the next transaction begins cleanly after it
            conn.execute(_T.insert().values(k="c"))
        assert pool.checkedout() == 1  # type: ignore[attr-defined]
    assert pool.checkedout() == 0  # type: ignore[attr-defined]  # given back at the end of the block
    assert _keys(engine) == ["a", "b", "c"]


def test_a_failed_block_rolls_back_and_the_connection_goes_on(engine: sa.Engine) -> None:
    with kept_connections():
        with pytest.raises(RuntimeError), write(engine) as conn:
            conn.exec_driver_sql("INSERT INTO kept_t (k) VALUES ('lost')")
            raise RuntimeError("the batch failed")
        assert _keys(engine) == []
        with write(engine) as conn:
            conn.exec_driver_sql("INSERT INTO kept_t (k) VALUES ('kept')")
    assert _keys(engine) == ["kept"]


def test_a_read_inside_a_write_takes_another_connection_and_sees_only_committed_rows(engine: sa.Engine) -> None:
    with kept_connections(), write(engine) as outer:
        outer.exec_driver_sql("INSERT INTO kept_t (k) VALUES ('pending')")
        with read(engine) as inner:
            assert _driver(inner) is not _driver(outer)
            assert list(inner.execute(sa.select(_T.c.k)).scalars()) == []
    assert _keys(engine) == ["pending"]


def test_a_commit_that_fails_leaves_nothing_behind_and_a_fresh_connection_next(engine: sa.Engine) -> None:
    with kept_connections():
        with pytest.raises(sa.exc.IntegrityError), write(engine) as conn:
            conn.exec_driver_sql("INSERT INTO kept_t (k) VALUES ('with-orphan')")
            conn.exec_driver_sql("INSERT INTO kept_child (id, parent) VALUES (1, 404)")  # fails at COMMIT
            failed = _driver(conn)
        with write(engine) as conn:
            assert _driver(conn) is not failed  # the failed one was discarded, its transaction with it
            conn.exec_driver_sql("INSERT INTO kept_t (k) VALUES ('after')")
        assert engine.pool.checkedout() == 1  # type: ignore[attr-defined]  # the failed one was given back
    assert _keys(engine) == ["after"]
