"""SQLite WAL checkpoints in a background thread, off the path of the commits that answer webhooks.

With its default ``wal_autocheckpoint``, SQLite runs a checkpoint inside whichever commit takes the WAL past
1,000 pages: that commit copies the pages into the database file and syncs it before it returns, so every few
hundred events one webhook's group commit or one worker's settle took milliseconds longer. Measured with
``bench/e2e.py`` at 1,000 events/s on two cores, p99 accepted -> delivered: 9.1–11.4 ms with those
checkpoints; 5.6 ms with none at all (an unbounded WAL, for comparison); 7.0–7.2 ms with this thread.

So the connections checkpoint only as a backstop (at :data:`BACKSTOP_PAGES`, should this thread fall far
behind), and this thread runs a ``PASSIVE`` checkpoint of each SQLite journal the process writes every
:data:`INTERVAL` seconds, on a connection of its own. ``PASSIVE`` never waits for readers or writers, and the
sqlite3 module lets go of the GIL while it copies and syncs.

One thread per process, started by the first write (:class:`bus.journal.engine.WriteLock`); a forked child
starts its own and never touches the connections it inherited.
"""

from __future__ import annotations

import collections
import os
import sqlite3
import threading
import time
import urllib.parse
import weakref

import structlog

__all__ = ["BACKSTOP_PAGES", "INTERVAL", "watch"]

log = structlog.get_logger(__name__)

#: Seconds between background checkpoints: small and frequent ones disturbed the commits least (p99 at 1,000
#: events/s: 7.0–7.2 ms every 0.1 s, 8.3–9.0 every 0.5 s, 7.8–8.9 every 2 s). A WAL not written since the last
#: round is skipped (one ``stat``), so an idle bus does no work.
INTERVAL = 0.1
#: ``wal_autocheckpoint`` of a writing process's connections: a commit checkpoints only past this many pages.
BACKSTOP_PAGES = 10_000


class _Checkpointer:
    """The thread and its bookkeeping. Only the thread touches its sqlite3 connections: an owner's end is
    queued by its finalizer (which may run inside any allocation of any thread, the GC's time, so it must
    neither take a lock nor close a connection that may be executing) and handled by the next round."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.watched: dict[str, int] = {}  # database path -> how many live owners watch it
        self.ended: collections.deque[str] = collections.deque()  # paths of owners gone (appended by finalizers)
        self.connections: dict[str, sqlite3.Connection] = {}  # the thread's own
        self.seen: dict[str, tuple[float, int]] = {}  # path -> the WAL's (mtime, size) at its last checkpoint
        self.thread = threading.Thread(target=self._run, name="ironbus-wal-checkpoint", daemon=True)
        self.thread.start()

    def watch(self, path: str, owner: object) -> None:
        with self.lock:
            self.watched[path] = self.watched.get(path, 0) + 1
        weakref.finalize(owner, self.ended.append, path)

    def _run(self) -> None:
        while True:
            time.sleep(INTERVAL)
            self._forget_ended()
            with self.lock:
                paths = list(self.watched)
            for path in paths:
                self._checkpoint(path)

    def _forget_ended(self) -> None:
        while self.ended:
            path = self.ended.popleft()
            with self.lock:
                left = self.watched.get(path, 0) - 1
                if left > 0:
                    self.watched[path] = left
                    continue
                self.watched.pop(path, None)
            self.seen.pop(path, None)
            connection = self.connections.pop(path, None)
            if connection is not None:
                connection.close()

    def _checkpoint(self, path: str) -> None:
        try:
            wal = os.stat(f"{path}-wal")
        except OSError:
            return  # no WAL (yet, or any more): nothing to copy
        state = (wal.st_mtime, wal.st_size)
        if self.seen.get(path) == state:
            return  # not written since the last round
        try:
            connection = self.connections.get(path)
            if connection is None:
                # mode=rw: never create a database whose file is gone; quoted, as a URI wants '?', '#', '%'
                connection = sqlite3.connect(f"file:{urllib.parse.quote(path)}?mode=rw", uri=True, timeout=0,
                                             isolation_level=None, check_same_thread=False)
                self.connections[path] = connection
            connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            self.seen[path] = state
        except sqlite3.Error as exc:
            # Busy (another process is checkpointing), or the file went away: the next round tries again, and
            # the commits' backstop checkpoint bounds the WAL meanwhile.
            log.debug("journal.checkpoint_skipped", path=path, error=str(exc))


_checkpointer: _Checkpointer | None = None
_guard = threading.Lock()
_inherited: list[_Checkpointer] = []  # a parent's, kept (never closed) in a forked child


def watch(path: str, owner: object) -> None:
    """Checkpoint the SQLite database at ``path`` in the background for as long as ``owner`` lives."""
    global _checkpointer
    with _guard:
        if _checkpointer is not None and _checkpointer.pid != os.getpid():
            _inherited.append(_checkpointer)  # its thread did not survive the fork; its connections stay open
            _checkpointer = None
        if _checkpointer is None:
            _checkpointer = _Checkpointer()
        checkpointer = _checkpointer
    checkpointer.watch(path, owner)
