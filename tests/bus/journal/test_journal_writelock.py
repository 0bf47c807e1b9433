"""Writers of one SQLite journal meet on the bus's own lock before SQLite's (bus.journal.engine.WriteLock)."""

from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path

import sqlalchemy as sa

from bus.journal.engine import WriteLock, create_engine, write


def _hold(path: str, held: multiprocessing.synchronize.Event, release: multiprocessing.synchronize.Event) -> None:
    lock = WriteLock(path)
    with lock.held():
        held.set()
        release.wait(30)


def test_the_lock_excludes_other_processes_and_is_reentrant(tmp_path: Path) -> None:
    path = str(tmp_path / "j.sqlite")
    ctx = multiprocessing.get_context("spawn")
    held, release = ctx.Event(), ctx.Event()
    other = ctx.Process(target=_hold, args=(path, held, release))
    other.start()
    try:
        assert held.wait(60)
        lock = WriteLock(path)
        entered = threading.Event()

        def enter() -> None:
            with lock.held(), lock.held():  # re-entrant within a thread
                entered.set()

        thread = threading.Thread(target=enter)
        thread.start()
        assert not entered.wait(0.3)  # the other process holds it
        release.set()
        assert entered.wait(30)
        thread.join(30)
    finally:
        release.set()
        other.join(30)
    assert Path(f"{path}-writer").exists()


def test_writes_from_threads_all_commit(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path}/j.sqlite")
    with write(engine) as conn:
        conn.exec_driver_sql("CREATE TABLE t (n INTEGER)")

    def writer(k: int) -> None:
        for n in range(20):
            with write(engine) as conn:
                conn.exec_driver_sql("INSERT INTO t VALUES (?)", (k * 100 + n,))
                time.sleep(0.0005)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM t")).scalar() == 80
    engine.dispose()
