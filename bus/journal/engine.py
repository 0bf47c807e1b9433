"""Creating the SQLAlchemy engine behind the journal and the embedded queue.

SQLite is tuned for a single-host bus: WAL (readers never block the writer), ``synchronous=NORMAL`` (a
commit survives a killed process; add ``?synchronous=full`` to the URL to also survive power loss), a busy
timeout so concurrent processes wait for the write lock instead of failing, and transactions that write
start with ``BEGIN IMMEDIATE`` so two writers never deadlock upgrading a read lock.

PostgreSQL sessions plan every statement for its parameters (``plan_cache_mode=force_custom_plan``, unless the
URL's ``options`` set it): psycopg prepares a statement on its fifth run, and PostgreSQL then keeps one generic
plan. The journal's tables start empty, and a generic plan made then reads the whole table (a sequential scan is
cheapest on one page) and is kept until autovacuum analyses the table — the worker's per-batch lookups read
every delivery row while it grew. Planning these short statements costs less than one such scan.

Writers of one SQLite file also take a lock of the bus's own first (:class:`WriteLock`): SQLite's busy handler
retries a held write lock by sleeping 1, 2, 5, 10 … ms, so a writer that found the lock taken for a hundred
microseconds waited a millisecond or more (and the ingest thread, the worker and the other processes' met
there on every group). Threads of a process wait on a lock that wakes them the moment it is free; processes
meet on an ``flock`` of ``<database>-writer`` polled every 50–1000 µs. It changes nothing of what commits
or when it is durable: it only orders writers before SQLite would. A process that writes also checkpoints the
WAL in a thread of its own instead of inside a commit (:mod:`bus.journal.checkpoints`).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url

from bus.backoff import Backoff
from bus.errors import ConfigError
from bus.journal import checkpoints
from bus.journal.keptconn import kept_for, raw_open, raw_transaction
from bus.journal.sql import run_compiled

__all__ = ["WriteLock", "create_engine", "normalise_url", "read", "reading", "write", "writing"]

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


class WriteLock:
    """Orders the writers of one SQLite file (see the module's text): re-entrant within a thread, held from
    before ``BEGIN IMMEDIATE`` to after ``COMMIT``. Waits at most ``BUSY_TIMEOUT_MS``; after that the writer
    goes on and SQLite's own busy handler decides, as without this lock."""

    def __init__(self, path: str) -> None:
        self.database = path
        self.path = f"{path}-writer"
        self._guard = threading.Lock()
        self._pid = -1
        self._fd = -1
        self._lock = threading.RLock()
        self._depth = 0

    def _for_this_process(self) -> None:
        # a forked child must not share its parent's open file (an flock is per open file, not per process)
        with self._guard:
            if self._pid != os.getpid():
                self._lock, self._depth = threading.RLock(), 0
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                self._pid = os.getpid()
                checkpoints.watch(self.database, self)  # this process writes: it checkpoints too

    @contextmanager
    def held(self) -> Iterator[None]:
        if self._pid != os.getpid():
            self._for_this_process()
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        lock = self._lock
        if not lock.acquire(timeout=BUSY_TIMEOUT_MS / 1000):
            yield  # a writer of this process holds it for 30 s: leave it to SQLite's busy timeout
            return
        flocked = False
        try:
            if self._depth == 0:
                flocked = self._flock(deadline)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if flocked:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            lock.release()

    def _flock(self, deadline: float) -> bool:
        delay = 0.00005
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return False
                time.sleep(delay)
                delay = min(delay * 2, 0.001)


_WRITE_LOCKS: weakref.WeakKeyDictionary[Engine, WriteLock] = weakref.WeakKeyDictionary()


def custom_plans(parsed: URL) -> URL:
    """``parsed`` (a PostgreSQL URL) with ``-c plan_cache_mode=force_custom_plan`` added to its ``options``,
    unless they already set ``plan_cache_mode`` (see the module's docstring)."""
    options = parsed.query.get("options", "")
    if isinstance(options, tuple):  # the parameter given twice: leave the user's URL as it is
        return parsed
    if "plan_cache_mode" in options:
        return parsed
    return parsed.update_query_dict({"options": f"{options} -c plan_cache_mode=force_custom_plan".strip()})


def create_engine(url: str) -> Engine:
    """An engine for ``url`` with the SQLite pragmas above, creating the SQLite file's directory.

    A failed statement's error never carries its parameters (``hide_parameters``): they are event bodies,
    payloads and adapter state, which may hold personal data or secrets, and such errors are logged."""
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "postgresql":
        # No pre-ping: it costs a round trip on every checkout (one per journal call). A connection the server
        # dropped fails its next statement, SQLAlchemy invalidates the pool, and the caller retries.
        return sa.create_engine(custom_plans(parsed), pool_size=10, max_overflow=20, pool_recycle=1800,
                                hide_parameters=True)
    synchronous = str(parsed.query.get("synchronous", "normal")).lower()
    if synchronous not in _SYNCHRONOUS:
        raise ConfigError(f"journal URL: synchronous={synchronous!r}; expected one of {sorted(_SYNCHRONOUS)}")
    parsed = parsed.difference_update_query(["synchronous"])
    if not parsed.database or parsed.database == ":memory:" or parsed.database.startswith("file::memory:"):
        # Every pooled connection would open its own empty database: the queue and the journal would not
        # see each other's rows.
        raise ConfigError(f"journal URL {url!r}: an in-memory SQLite database cannot be shared by the bus's "
                          "threads; give a file path, e.g. sqlite:///var/ironbus.sqlite")
    database = Path(parsed.database).expanduser()
    database.parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(parsed, connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000},
                              pool_size=8, max_overflow=16, poolclass=sa.pool.QueuePool, hide_parameters=True)

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module so that BEGIN is ours to emit (below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        _enable_wal(cursor)
        cursor.execute(f"PRAGMA synchronous={synchronous.upper()}")
        cursor.execute("PRAGMA foreign_keys=ON")
        # commits checkpoint only as a backstop: a writing process checkpoints in the background (see
        # bus.journal.checkpoints)
        cursor.execute(f"PRAGMA wal_autocheckpoint={checkpoints.BACKSTOP_PAGES}")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A writer must hold the write lock from its first statement: a deferred transaction that reads and
        # then writes gets SQLITE_BUSY at once (not after busy_timeout) when another writer got there first.
        # A pooled connection's transactions begin here, on the driver itself (bus.journal.sql.run_compiled).
        if raw_open(conn):  # begun on the driver already (bus.journal.keptconn): SQLAlchemy autobegan inside it
            return
        mode = "IMMEDIATE" if conn.get_execution_options().get("ironbus_write") else "DEFERRED"
        run_compiled(conn, f"BEGIN {mode}", ())

    _WRITE_LOCKS[engine] = WriteLock(str(database))
    return engine


@contextmanager
def write(engine: Engine) -> Iterator[Connection]:
    """A connection inside a write transaction (SQLite: ``BEGIN IMMEDIATE``); commits on success. SQLite: the
    thread's kept connection when it has one (:mod:`bus.journal.keptconn`)."""
    lock = _WRITE_LOCKS.get(engine)
    if lock is not None and (kept := kept_for(engine)) is not None:
        with lock.held(), raw_transaction(kept, "IMMEDIATE") as conn:
            yield conn
        return
    with engine.connect() as conn:
        conn.execution_options(ironbus_write=True)
        if lock is None:  # PostgreSQL: row locks, no single writer
            with conn.begin():
                yield conn
            return
        with lock.held(), conn.begin():
            yield conn


@contextmanager
def read(engine: Engine) -> Iterator[Connection]:
    """A connection inside a read-only transaction (one consistent snapshot)."""
    kept = kept_for(engine) if engine in _WRITE_LOCKS else None
    if kept is not None:
        with raw_transaction(kept, "DEFERRED") as conn:
            yield conn
        return
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
