"""Creating the SQLAlchemy engine behind the journal and the embedded queue.

SQLite is tuned for a single-host bus: WAL (readers never block the writer), ``synchronous=NORMAL`` (a
commit survives a killed process; add ``?synchronous=full`` to the URL to also survive power loss), a busy
timeout so concurrent processes wait for the write lock instead of failing, and transactions that write
start with ``BEGIN IMMEDIATE`` so two writers never deadlock upgrading a read lock.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url

from bus.backoff import Backoff
from bus.errors import ConfigError

__all__ = ["create_engine", "normalise_url", "read", "reading", "write", "writing"]

_SYNCHRONOUS = {"off", "normal", "full", "extra"}
BUSY_TIMEOUT_MS = 30_000


def normalise_url(url: str) -> URL:
    """Parse a journal URL; ``postgresql://`` and ``postgres://`` select the psycopg 3 driver."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ConfigError(f"journal URL {url!r} is not a database URL ({exc}); "
                          "expected sqlite:///path/ironbus.sqlite or postgresql://user@host/db") from None
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(f"journal URL {url!r}: unsupported database {parsed.get_backend_name()!r}; "
                          "expected sqlite:///… or postgresql://…")
    return parsed


def _enable_wal(cursor: Any) -> None:
    """Switch the database to WAL. The switch needs an exclusive lock and SQLite does not apply the busy
    timeout to it, so processes opening a fresh journal together retry here with back-off."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    backoff = Backoff(0.005, 0.2)
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(backoff.next())


def create_engine(url: str) -> Engine:
    """An engine for ``url`` with the SQLite pragmas above, creating the SQLite file's directory."""
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "postgresql":
        # No pre-ping: it costs a round trip on every checkout (one per journal call). A connection the server
        # dropped fails its next statement, SQLAlchemy invalidates the pool, and the caller retries.
        return sa.create_engine(parsed, pool_size=10, max_overflow=20, pool_recycle=1800)
    synchronous = str(parsed.query.get("synchronous", "normal")).lower()
    if synchronous not in _SYNCHRONOUS:
        raise ConfigError(f"journal URL: synchronous={synchronous!r}; expected one of {sorted(_SYNCHRONOUS)}")
    parsed = parsed.difference_update_query(["synchronous"])
    if not parsed.database or parsed.database == ":memory:" or parsed.database.startswith("file::memory:"):
        # Every pooled connection would open its own empty database: the queue and the journal would not
        # see each other's rows.
        raise ConfigError(f"journal URL {url!r}: an in-memory SQLite database cannot be shared by the bus's "
                          "threads; give a file path, e.g. sqlite:///var/ironbus.sqlite")
    Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(parsed, connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000},
                              pool_size=8, max_overflow=16, poolclass=sa.pool.QueuePool)

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module so that BEGIN is ours to emit (below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        _enable_wal(cursor)
        cursor.execute(f"PRAGMA synchronous={synchronous.upper()}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A writer must hold the write lock from its first statement: a deferred transaction that reads and
        # then writes gets SQLITE_BUSY at once (not after busy_timeout) when another writer got there first.
        mode = "IMMEDIATE" if conn.get_execution_options().get("ironbus_write") else "DEFERRED"
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


@contextmanager
def write(engine: Engine) -> Iterator[Connection]:
    """A connection inside a write transaction (SQLite: ``BEGIN IMMEDIATE``); commits on success."""
    with engine.connect() as conn:
        conn.execution_options(ironbus_write=True)
        with conn.begin():
            yield conn


@contextmanager
def read(engine: Engine) -> Iterator[Connection]:
    """A connection inside a read-only transaction (one consistent snapshot)."""
    with engine.connect() as conn, conn.begin():
        yield conn


@contextmanager
def reading(engine: Engine, conn: Connection | None) -> Iterator[Connection]:
    """``conn`` when the caller already reads in a transaction (several lookups, one snapshot and one
    connection), else a fresh :func:`read`."""
    if conn is not None:
        yield conn
        return
    with read(engine) as fresh:
        yield fresh


@contextmanager
def writing(engine: Engine, conn: Connection | None) -> Iterator[Connection]:
    """``conn`` when the caller already writes in a transaction (several writes, one commit), else a fresh
    :func:`write`."""
    if conn is not None:
        yield conn
        return
    with write(engine) as fresh:
        yield fresh
