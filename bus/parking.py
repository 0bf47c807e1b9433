"""Re-driving parked deliveries when their next-attempt time has come.

A delivery whose quick retries were spent is *parked* in the journal (status ``parked`` with
``next_attempt_at``) and its queue message is acked, so the worker moves on. Every ``ironbus run`` process
runs a :class:`Parker` that publishes due deliveries again as messages pinned to their route and target.
It publishes first and flips the state second: a crash in between publishes a delivery twice, which the
idempotency key absorbs; the reverse order could lose it.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import sqlalchemy as sa
import structlog

from bus.journal import tables
from bus.journal.engine import read, write
from bus.queue.base import Message, Queue

__all__ = ["Parker"]

log = structlog.get_logger(__name__)


class Parker:
    """Publishes due parked deliveries; ``run()`` loops until ``stop`` is set."""

    def __init__(self, journal: Any, queue: Queue, *, interval: float = 1.0, stop: threading.Event | None = None):
        self.engine: sa.Engine = journal.engine
        self.queue = queue
        self.interval = interval
        self.stop = stop or threading.Event()

    def parked(self) -> int:
        """How many deliveries are parked, due or not."""
        d = tables.deliveries
        with read(self.engine) as conn:
            n = conn.execute(sa.select(sa.func.count()).select_from(d).where(d.c.status == "parked")).scalar()
        return int(n or 0)

    def run_once(self, now: float | None = None, limit: int = 500) -> int:
        """Publish up to ``limit`` due deliveries; returns how many."""
        d, e = tables.deliveries, tables.events
        now = time.time() if now is None else now
        query = (sa.select(d.c.idempotency_key, d.c.route, d.c.target, d.c.parks, e.c.body, e.c.key)
                 .join(e, e.c.id == d.c.event_id)
                 .where(d.c.status == "parked", d.c.next_attempt_at <= now)
                 # arrival order, so deliveries of one key are re-driven (and queued) oldest first
                 .order_by(e.c.received_at, e.c.id, d.c.idempotency_key).limit(limit))
        with read(self.engine) as conn:
            rows = conn.execute(query).all()
        if not rows:
            return 0
        self.queue.publish([Message(body=bytes(r.body), key=r.key, route=r.route, target=r.target, parks=int(r.parks))
                            for r in rows])
        with write(self.engine) as conn:
            conn.execute(sa.update(d).where(d.c.idempotency_key.in_([r.idempotency_key for r in rows]),
                                            d.c.status == "parked")
                         .values(status="pending", next_attempt_at=None, updated_at=time.time()))
        log.info("parked deliveries re-driven", count=len(rows))
        return len(rows)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                moved = self.run_once()
            except Exception as exc:  # the journal may be briefly unreachable; parked work waits, nothing is lost
                log.warning("parker could not re-drive parked deliveries", error=str(exc))
                moved = 0
            if not moved:
                self.stop.wait(self.interval)
