"""One SQLite connection kept for a thread's transactions, begun and committed on the driver.

The ingest thread and each worker open two or three transactions per batch. Through SQLAlchemy each one checked
a connection out of the pool, began, committed and checked it back in (with a reset): about 25 µs of Python per
transaction, ~9 % of the bus's samples under load, around SQLite work of a few microseconds. A thread that runs
its loop inside :func:`kept_connections` keeps one SQLAlchemy connection per SQLite engine for as long as the loop
runs, and :func:`bus.journal.engine.write` / :func:`~bus.journal.engine.read` begin and end its transactions with
``BEGIN`` / ``COMMIT`` on the ``sqlite3`` connection itself. The transactions, their write lock and what is
durable when are the same as before; only the bookkeeping around them is gone.

SQLAlchemy does not see those transactions begin. A Core statement run inside one makes it "autobegin"; the
engine's begin hook then emits nothing (:func:`raw_open` says the transaction is open already), and the end of
the block closes SQLAlchemy's view of it too. A transaction opened while the kept connection is in one (a read
inside a write) takes a pooled connection, as every transaction did before.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.engine import Connection, Engine

from bus.journal.sql import run_compiled

__all__ = ["kept_connections", "kept_for", "raw_open", "raw_transaction"]

_local = threading.local()
_RAW_OPEN = "ironbus_raw_transaction"


@contextmanager
def kept_connections() -> Iterator[None]:
    """Within the block, this thread's SQLite transactions reuse one connection per engine; closed at the end."""
    kept: dict[Engine, Connection] = {}
    previous = getattr(_local, "kept", None)
    _local.kept = kept
    try:
        yield
    finally:
        _local.kept = previous
        for conn in kept.values():
            conn.close()


def kept_for(engine: Engine) -> Connection | None:
    """This thread's kept connection to ``engine`` when it has one free (not inside a transaction), else None."""
    kept: dict[Engine, Connection] | None = getattr(_local, "kept", None)
    if kept is None:
        return None
    conn = kept.get(engine)
    if conn is None:
        conn = kept[engine] = engine.connect()
    elif conn.info.get(_RAW_OPEN) or conn.in_transaction():
        return None
    return conn


def raw_open(conn: Connection) -> bool:
    """Whether ``conn`` is inside a transaction begun by :func:`raw_transaction` (the begin hook stays quiet)."""
    return bool(conn.info.get(_RAW_OPEN))


@contextmanager
def raw_transaction(conn: Connection, mode: str) -> Iterator[Connection]:
    """``BEGIN <mode>`` … ``COMMIT`` on ``conn``'s ``sqlite3`` connection; ``ROLLBACK`` when the block raises."""
    driver: Any = conn.connection.driver_connection
    run_compiled(conn, f"BEGIN {mode}", ())
    conn.info[_RAW_OPEN] = True
    try:
        yield conn
    except BaseException:
        _end(conn, driver, "ROLLBACK")
        raise
    _end(conn, driver, "COMMIT")


def _end(conn: Connection, driver: Any, statement: str) -> None:
    failed = False
    try:
        if driver.in_transaction:
            run_compiled(conn, statement, ())
    except BaseException:
        failed = True
        raise
    finally:
        conn.info[_RAW_OPEN] = False
        try:
            if conn.in_transaction():
                # SQLAlchemy autobegan inside the block (a Core statement ran): end its view of the transaction.
                # The driver has none open any more (or rolls back the one a failed COMMIT left).
                if failed or statement == "ROLLBACK":
                    conn.rollback()
                else:
                    conn.commit()
        finally:
            if failed:
                # the COMMIT (or ROLLBACK) failed: whatever this connection still holds, the thread's next
                # transaction gets a fresh one
                _discard(conn)


def _discard(conn: Connection) -> None:
    kept: dict[Engine, Connection] | None = getattr(_local, "kept", None)
    if kept is not None and kept.get(conn.engine) is conn:
        del kept[conn.engine]
    conn.invalidate()  # the pool closes its sqlite3 connection (and the transaction with it)
    conn.close()
