"""Re-driving parked deliveries when their next-attempt time has come.

A delivery whose quick retries were spent is *parked* in the journal (status ``parked`` with
``next_attempt_at``) and its queue message is acked, so the worker moves on. Every ``ironbus run`` process
runs a :class:`Parker` that puts due deliveries back on the bus (:class:`~bus.frontdoor.FrontDoor`) as
messages pinned to their route and target. It queues first and flips the state second: a crash in between
queues a delivery twice, which the idempotency key absorbs; the reverse order could lose it.
"""

from __future__ import annotations

import threading
import time

import structlog

from bus.frontdoor import FrontDoor, Pinned
from bus.journal import Journal

__all__ = ["Parker"]

log = structlog.get_logger(__name__)


class Parker:
    """Re-drives due parked deliveries; ``run()`` loops until ``stop`` is set."""

    def __init__(self, journal: Journal, door: FrontDoor, *, interval: float = 1.0,
                 stop: threading.Event | None = None) -> None:
        self.journal = journal
        self.door = door
        self.interval = interval
        self.stop = stop or threading.Event()

    def parked(self) -> int:
        """How many deliveries are parked, due or not."""
        return self.journal.parked.count()

    def run_once(self, now: float | None = None, limit: int = 500) -> int:
        """Re-drive up to ``limit`` due deliveries; returns how many."""
        at = time.time() if now is None else now
        due = self.journal.parked.due(at, limit)
        if not due:
            return 0
        self.door.submit([Pinned(d.body, d.key, d.route, d.target, parks=d.parks) for d in due], "parked")
        self.journal.parked.unpark([d.idempotency_key for d in due], at)
        log.info("parked deliveries re-driven", count=len(due))
        return len(due)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                moved = self.run_once()
            except Exception as exc:  # the journal may be briefly unreachable; parked work waits, nothing is lost
                log.warning("parker could not re-drive parked deliveries", error=str(exc))
                moved = 0
            if not moved:
                self.stop.wait(self.interval)
