"""Group commit for inbound events: journal them, then enqueue them, many callers per transaction.

A webhook answers 202 only once its event is durable in both the journal and the queue. Doing one
transaction per request would cap the bus at the database's commit rate, so concurrent submissions are
collected by one background thread for up to ``max_wait`` seconds / ``max_batch`` events, written with one
journal transaction and one queue publish, and then every caller's future is resolved (or failed with the
same error: nothing was acknowledged, so the source retries).
"""

from __future__ import annotations

import asyncio
import queue as stdqueue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future

import structlog

from bus.envelope import Event
from bus.journal import Journal
from bus.queue.base import Message, Queue

__all__ = ["Ingestor"]

log = structlog.get_logger(__name__)

_Submission = tuple[Sequence[tuple[Event, str]], "Future[None]"]


def message_for(event: Event) -> Message:
    """The queue message that carries an inbound event."""
    return Message(body=event.encode(), key=event.key)


class Ingestor:
    """Durably accepts inbound events. Thread-safe; use one per process."""

    def __init__(self, journal: Journal, queue: Queue, *, max_wait: float = 0.002, max_batch: int = 500) -> None:
        self.journal = journal
        self.queue = queue
        self.max_wait = max_wait
        self.max_batch = max_batch
        self._submissions: stdqueue.SimpleQueue[_Submission | None] = stdqueue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="ironbus-ingest", daemon=True)
        self._thread.start()

    def submit(self, events: Sequence[tuple[Event, str]]) -> Future[None]:
        """Queue ``(event, origin)`` pairs for the next group commit; the future resolves once they are
        journaled and enqueued."""
        if self._closed:
            raise RuntimeError("the ingestor is closed")
        future: Future[None] = Future()
        if not events:
            future.set_result(None)
        else:
            self._submissions.put((events, future))
        return future

    def ingest(self, events: Sequence[tuple[Event, str]]) -> None:
        """Journal and enqueue the events; returns when both are durable (raises what the store raised)."""
        self.submit(events).result()

    async def ingest_async(self, events: Sequence[tuple[Event, str]]) -> None:
        """As :meth:`ingest`, for the event loop: awaits the group commit without blocking the loop."""
        await asyncio.wrap_future(self.submit(events))

    def _run(self) -> None:
        while True:
            first = self._submissions.get()
            if first is None:
                return
            batch = [first]
            count = len(first[0])
            deadline = time.monotonic() + self.max_wait
            stop = False
            while count < self.max_batch:
                remaining = deadline - time.monotonic()
                try:
                    item = self._submissions.get(timeout=remaining) if remaining > 0 else \
                        self._submissions.get_nowait()
                except stdqueue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
                count += len(item[0])
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[_Submission]) -> None:
        events = [pair for submission, _ in batch for pair in submission]
        try:
            self.journal.record_events(events)
            self.queue.publish([message_for(event) for event, _ in events])
        except Exception as exc:  # noqa: BLE001 - handed to every waiting caller, who decides
            log.warning("ingest.failed", events=len(events), error=str(exc))
            for _, future in batch:
                future.set_exception(exc)
            return
        for _, future in batch:
            future.set_result(None)

    def close(self) -> None:
        """Commit what was submitted, then stop the background thread."""
        if not self._closed:
            self._closed = True
            self._submissions.put(None)
            self._thread.join(timeout=30)
