"""Each process of ``ironbus run --processes N`` publishes its protection state under its own name."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from bus.journal import Journal
from bus.systemstate import process_id, publish_state, read_state

SNAPSHOT = {"erp": {"circuit": {"state": "closed", "trips": 0}}}


def _publish_in_child(url: str) -> None:
    journal = Journal(url)
    try:
        publish_state(journal, SNAPSHOT)
    finally:
        journal.close()


def test_forked_processes_publish_under_their_own_ids(tmp_path: Path) -> None:
    # Given the module loaded in the parent before it forks, as the supervisor does
    url = f"sqlite:///{tmp_path}/j.sqlite"
    journal = Journal(url)
    try:
        publish_state(journal, SNAPSHOT)
        # When two forked children publish their snapshot of the same system
        fork = multiprocessing.get_context("fork")
        children = [fork.Process(target=_publish_in_child, args=(url,)) for _ in range(2)]
        for child in children:
            child.start()
        for child in children:
            child.join(60)
        assert [c.exitcode for c in children] == [0, 0]
        # Then status shows three processes, each under its own pid
        rows = read_state(journal)
        assert len(rows) == 3
        pids = {str(c.pid) for c in children} | {process_id().rsplit(":", 1)[1]}
        assert {r["process"].rsplit(":", 1)[1] for r in rows} == pids
    finally:
        journal.close()
