"""Group commit for inbound events: journal them, then enqueue them, many callers per transaction.

A webhook answers 202 only once its event is durable in both the journal and the queue. Doing one
transaction per request would cap the bus at the database's commit rate, so concurrent submissions are
collected by one background thread for up to ``max_wait`` seconds / ``max_batch`` events, written with one
journal transaction and one queue publish (with the embedded queue, whose rows live in the journal's database:
one transaction for both, and no outbox), and then every caller's future is resolved (or failed with the
same error: nothing was acknowledged, so the source retries).

One caller's bad input must never fail the others: every event is checked (:func:`bus.limits.check_event`)
before it joins a group, and the caller gets the refusal at once. Should a group still fail, each submission
is committed again on its own, so only the one that cannot be stored fails (unless the store itself is down,
which fails them all, quickly).
"""

from __future__ import annotations

import asyncio
import os
import queue as stdqueue
import threading
import time
from collections.abc import Sequence

import sqlalchemy as sa
import structlog

from bus import telemetry
from bus.envelope import Event
from bus.errors import TransientError
from bus.handoff import Handoff
from bus.journal import Journal
from bus.journal.keptconn import kept_connections
from bus.limits import check_event
from bus.outbox import Outbox, message_for
from bus.queue.base import Queue
from bus.queue.embedded import EmbeddedQueue

__all__ = ["Ingestor"]

log = structlog.get_logger(__name__)

class _Waiter:
    """One caller waiting for its group commit: a thread blocked on a lock, or an asyncio future.

    Lighter than a ``concurrent.futures.Future`` (which builds a Condition per request), and resolving a
    whole group on one event loop takes a single ``call_soon_threadsafe``: at thousands of webhook requests
    per second both showed in the profile.
    """

    __slots__ = ("_lock", "error", "future", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = loop
        self.error: BaseException | None = None
        if loop is None:
            self._lock: threading.Lock | None = threading.Lock()
            self._lock.acquire()
            self.future: asyncio.Future[None] | None = None
        else:
            self._lock = None
            self.future = loop.create_future()

    def wait(self) -> None:
        assert self._lock is not None
        self._lock.acquire()
        if self.error is not None:
            raise self.error

    def resolve(self, error: BaseException | None) -> None:
        """For a thread waiter; asyncio waiters are resolved on their loop by :func:`_resolve_on_loop`."""
        self.error = error
        assert self._lock is not None
        self._lock.release()


def _resolve_on_loop(waiters: list[tuple[_Waiter, BaseException | None]]) -> None:
    for waiter, error in waiters:
        future = waiter.future
        if future is not None and not future.done():  # a cancelled request (client went away) is done
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)


#: One caller's events, each encoded (by the check that admitted it: journal and queue store those bytes), and
#: the caller waiting for them.
_Submission = tuple[Sequence[tuple[Event, str]], list[bytes], _Waiter]

#: The longest a webhook request waits for its group commit before it is answered 503 (its source sends it again).
#: Vendors give up on a webhook after 5–10 s (HubSpot and Shopify after 5): an answer after that is never read,
#: and a request held through a store or broker stall would only pile up behind it. The group may still commit
#: the events afterwards; the resend then has the same event ids (bus.inbound) and nothing is delivered twice.
ANSWER_WITHIN = float(os.environ.get("IRONBUS_INGEST_ANSWER_WITHIN") or 3.0)
_DOWN_SECONDS = 0.5  # how long submissions fail at once after the store failed as a whole


def _systemic(error: BaseException) -> bool:
    """An error of the store as a whole (unreachable database or broker), not of one submission's rows."""
    if isinstance(error, TransientError | OSError | sa.exc.OperationalError | sa.exc.InterfaceError):
        return True
    return isinstance(error, sa.exc.DBAPIError) and bool(error.connection_invalidated)


def _typed(error: Exception) -> BaseException:
    """A store outage as a :class:`TransientError` (callers answer 503 and log no traceback for it)."""
    if _systemic(error) and not isinstance(error, TransientError):
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        typed = TransientError(f"journal or queue unavailable: {first[:300]}")
        typed.__cause__ = error
        return typed
    return error


async def _answered(waiter: _Waiter) -> None:
    """Await the waiter's group commit, for at most :data:`ANSWER_WITHIN` seconds."""
    future = waiter.future
    assert future is not None and waiter.loop is not None
    # One timer that fails the future, not wait_for (a task and a shield per request, on the hot path); the
    # group finds the future done when it resolves it (see _resolve_on_loop).
    timer = waiter.loop.call_later(ANSWER_WITHIN, _expire, future)
    try:
        await future
    finally:
        timer.cancel()


def _expire(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_exception(TransientError(f"the events were not stored within {ANSWER_WITHIN:g}s "
                                            "(journal or queue slow); retry later"))


class Ingestor:
    """Durably accepts inbound events. Thread-safe; use one per process."""

    def __init__(self, journal: Journal, queue: Queue, *, max_wait: float = 0.002, max_batch: int = 500) -> None:
        self.journal = journal
        self.queue = queue
        self.max_wait = max_wait
        self.max_batch = max_batch
        self.outbox = Outbox(journal)
        # The embedded queue's rows live in the journal's database: events and their messages commit in one
        # transaction, so no outbox row is needed (nor its insert and delete, nor a second commit per group).
        self._joint = isinstance(queue, EmbeddedQueue) and queue.shares(journal.engine)
        # After the store failed as a whole (journal or broker down), submissions fail at once for a moment
        # instead of queueing behind attempts that fail one by one: a vendor gets its 503 in milliseconds.
        self._down_until = 0.0
        self._down_reason = ""
        self._published: list[str] = []  # outbox rows to remove with the next group (or when idle)
        # not SimpleQueue: see bus.handoff; a group is weighed in events
        self._submissions: Handoff[_Submission | None] = Handoff(lambda item: len(item[0]) if item else 1)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="ironbus-ingest", daemon=True)
        self._thread.start()

    def _submit(self, events: Sequence[tuple[Event, str]], waiter: _Waiter) -> None:
        if self._closed:
            raise RuntimeError("the ingestor is closed")
        # raises InputRejected in the caller; a bad event never joins a group
        bodies = [check_event(event) for event, _ in events]
        if time.monotonic() < self._down_until:
            raise TransientError(f"the bus cannot store events right now ({self._down_reason}); retry later")
        self._submissions.put((events, bodies, waiter))

    def ingest(self, events: Sequence[tuple[Event, str]]) -> None:
        """Journal and enqueue the events; returns when both are durable (raises what the store raised)."""
        if not events:
            return
        if telemetry.enabled:
            self._traced(events)
            return
        waiter = _Waiter()
        self._submit(events, waiter)
        waiter.wait()

    async def ingest_async(self, events: Sequence[tuple[Event, str]]) -> None:
        """As :meth:`ingest`, for the event loop: awaits the group commit without blocking the loop."""
        if not events:
            return
        if telemetry.enabled:
            await self._traced_async(events)
            return
        waiter = _Waiter(asyncio.get_running_loop())
        self._submit(events, waiter)
        await _answered(waiter)

    def _traced(self, events: Sequence[tuple[Event, str]]) -> None:
        """:meth:`ingest` with an ``ingest`` span per event, open until the event is durable."""
        traced, spans = telemetry.begin_ingest(events)
        waiter = _Waiter()
        try:
            self._submit(traced, waiter)
            waiter.wait()
        except BaseException as exc:
            telemetry.end_ingest(spans, exc)
            raise
        telemetry.end_ingest(spans)

    async def _traced_async(self, events: Sequence[tuple[Event, str]]) -> None:
        traced, spans = telemetry.begin_ingest(events)
        waiter = _Waiter(asyncio.get_running_loop())
        try:
            self._submit(traced, waiter)
            await _answered(waiter)
        except BaseException as exc:
            telemetry.end_ingest(spans, exc)
            raise
        telemetry.end_ingest(spans)

    def _run(self) -> None:
        with kept_connections():  # this thread's group commits on one connection (bus.journal.keptconn)
            self._collect()

    def _collect(self) -> None:
        while True:
            if self._published:
                try:
                    first = self._submissions.get(timeout=max(0.05, self._down_until - time.monotonic()))
                except stdqueue.Empty:  # idle: remove the published events' outbox rows now
                    self._flush_published()
                    continue
            else:
                first = self._submissions.get()
            if first is None:
                self._flush_published()
                return
            batch = [first]
            stop = False
            # the rest of the group: what comes within the window, taken in one wake-up (see bus.handoff)
            for item in self._submissions.gather(self.max_batch - len(first[0]), time.monotonic() + self.max_wait):
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._commit(batch)
            if stop:
                return

    def _store(self, events: list[tuple[Event, str]], bodies: list[bytes]) -> BaseException | None:
        # The journal row and the queue message carry the same bytes, encoded once (by check_event).
        if self._joint:
            assert isinstance(self.queue, EmbeddedQueue)
            try:
                with self.journal.unit() as unit:
                    self.journal.record_events(events, unit=unit, bodies=bodies)
                    self.queue.publish_held(unit, [message_for(event, body)
                                                   for (event, _), body in zip(events, bodies, strict=True)])
            except Exception as exc:  # noqa: BLE001 - handed to the waiting callers: nothing was stored
                return _typed(exc)
            return None
        try:
            self.outbox.record(events, self._published, bodies)
        except Exception as exc:  # noqa: BLE001 - handed to the waiting callers, who decide
            return _typed(exc)
        self._published = []
        try:
            self.queue.publish([message_for(event, body) for (event, _), body in zip(events, bodies, strict=True)])
        except Exception as exc:  # noqa: BLE001 - handed to the waiting callers, who decide
            # The callers answer 503 and their sources send again: these must never be published as well.
            try:
                self.outbox.refused([event.id for event, _ in events])
            except Exception as again:  # noqa: BLE001 - then the relay publishes them (at least once)
                log.warning("ingest.refusal_not_recorded", events=len(events), error=str(again))
            return _typed(exc)
        self._published.extend(event.id for event, _ in events)
        return None

    def _flush_published(self) -> None:
        if not self._published:
            return
        if time.monotonic() < self._down_until:
            return  # the store is down: try again once it may be back, not every few milliseconds
        try:
            self.outbox.published(self._published)
            self._published = []
        except Exception as exc:  # noqa: BLE001 - kept for the next try; the relay's grace period covers it
            log.warning("ingest.outbox_cleanup_failed", events=len(self._published), error=str(exc))
            if _systemic(exc):
                self._trip(exc)

    def _commit(self, batch: list[_Submission]) -> None:
        events = [pair for submission, _, _ in batch for pair in submission]
        bodies = [body for _, encoded, _ in batch for body in encoded]
        if time.monotonic() < self._down_until:  # queued before the store went down: no attempt either
            self._resolve(batch, [TransientError(f"the bus cannot store events right now ({self._down_reason}); "
                                                 "retry later")] * len(batch))
            return
        error = self._store(events, bodies)
        errors: list[BaseException | None] = [error] * len(batch)
        if error is not None and len(batch) > 1:
            # One submission may be what failed the group: commit each alone so the others still succeed.
            # Journaling is idempotent on the event id, so whatever the failed group did write is harmless.
            # When the first two alone fail as well and none succeeded, the store itself is failing: the rest
            # get the same error at once instead of one more slow attempt each.
            succeeded = False
            for i, (submission, encoded, _) in enumerate(batch):
                if i >= 2 and not succeeded and errors[0] is not None and errors[1] is not None:
                    break
                errors[i] = self._store(list(submission), encoded)
                succeeded = succeeded or errors[i] is None
            log.warning("ingest.failed", events=len(events), error=str(error),
                        failed_alone=sum(1 for e in errors if e is not None), submissions=len(batch))
            if not succeeded and _systemic(error):
                self._trip(error)
        elif error is not None:
            log.warning("ingest.failed", events=len(events), error=str(error))
            if _systemic(error):
                self._trip(error)
        self._resolve(batch, errors)

    def _trip(self, error: BaseException) -> None:
        self._down_until = time.monotonic() + _DOWN_SECONDS
        self._down_reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__

    @staticmethod
    def _resolve(batch: list[_Submission], errors: Sequence[BaseException | None]) -> None:
        on_loops: dict[asyncio.AbstractEventLoop, list[tuple[_Waiter, BaseException | None]]] = {}
        for (_, _, waiter), failed in zip(batch, errors, strict=True):
            if waiter.loop is None:
                waiter.resolve(failed)
            else:
                on_loops.setdefault(waiter.loop, []).append((waiter, failed))
        for loop, waiters in on_loops.items():
            try:
                loop.call_soon_threadsafe(_resolve_on_loop, waiters)
            except RuntimeError:  # that loop is closed: its callers are gone
                pass

    def close(self) -> None:
        """Commit what was submitted, then stop the background thread."""
        if not self._closed:
            self._closed = True
            self._submissions.put(None, urgent=True)
            self._thread.join(timeout=30)
