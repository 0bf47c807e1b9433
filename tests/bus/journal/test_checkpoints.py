"""The WAL is checkpointed by a background thread of the writing process, not inside its commits."""

from __future__ import annotations

import gc
import os
from pathlib import Path

from bus.envelope import Event
from bus.journal import Journal, checkpoints
from tests.helpers.wait import wait_until


def test_commits_leave_checkpoints_to_the_background_thread(tmp_path: Path) -> None:
    database = tmp_path / "ironbus.sqlite"
    journal = Journal(f"sqlite:///{database}")
    try:
        with journal.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == checkpoints.BACKSTOP_PAGES
        size = os.path.getsize(database)  # the tables (migrations are small: far below 1 MB)
        # ~2 MB of events: far below the commits' backstop, so only the background thread copies them over
        for n in range(20):
            journal.record_events([(Event(type="t", source="s", data={"n": n, "pad": "x" * 1000, "k": k}), "send")
                                   for k in range(100)])
        wait_until(lambda: os.path.getsize(database) > size + 1_000_000, timeout=10,
                   what="the events to be copied from the WAL into the database file")
    finally:
        journal.close()


def test_a_journal_no_longer_used_is_no_longer_checkpointed(tmp_path: Path) -> None:
    database = tmp_path / "ironbus.sqlite"
    journal = Journal(f"sqlite:///{database}")
    journal.record_events([(Event(type="t", source="s"), "send")])
    checkpointer = checkpoints._checkpointer
    assert checkpointer is not None and str(database) in checkpointer.watched
    journal.close()
    del journal
    gc.collect()
    wait_until(lambda: str(database) not in checkpointer.watched, timeout=10,
               what="the closed journal's database to leave the checkpointer")
    assert str(database) not in checkpointer.connections
