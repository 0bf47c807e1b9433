"""The parker re-drives due parked deliveries, and never strands one a worker already parked again."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bus.envelope import Event
from bus.journal import Journal
from bus.journal.records import DeliveryUpdate
from bus.parking import Parker


class Door:
    """Queues nothing; ``during`` runs while the parker's messages are 'on the queue'."""

    def __init__(self, during: Any = None) -> None:
        self.submitted: list[Any] = []
        self.during = during

    def submit(self, work: Sequence[Any], origin: str, **_: Any) -> list[Event]:
        self.submitted.extend(work)
        if self.during is not None:
            self.during()
        return []


def status(journal: Journal, key: str) -> str:
    row = journal.delivery(key)
    assert row is not None
    return row.status


def test_a_delivery_a_worker_parked_again_meanwhile_stays_parked(tmp_path: Path) -> None:
    journal = Journal(f"sqlite:///{tmp_path / 'j.sqlite'}")
    try:
        event = Event(type="t", source="s", data={}, key="K")
        journal.record_events([(event, "send")])
        key = f"{event.id}:r:x.y"
        journal.settle([DeliveryUpdate(key, event.id, "r", "x.y", "parked", next_attempt_at=time.time() - 1)])

        def worker_parks_it_again() -> None:  # the worker took the re-driven message before the parker's flip
            journal.settle([DeliveryUpdate(key, event.id, "r", "x.y", "parked", attempt=2,
                                           next_attempt_at=time.time() + 60)])

        parker = Parker(journal, Door(worker_parks_it_again))  # type: ignore[arg-type]
        assert parker.run_once() == 1
        assert status(journal, key) == "parked"  # was flipped to "pending", with no message anywhere
        # An ordinary re-drive still flips it
        journal.settle([DeliveryUpdate(key, event.id, "r", "x.y", "parked", next_attempt_at=time.time() - 1)])
        assert Parker(journal, Door()).run_once() == 1  # type: ignore[arg-type]
        assert status(journal, key) == "pending"
    finally:
        journal.close()
