"""A hand-off queue between threads whose timed ``get`` always returns by its deadline.

``queue.SimpleQueue.get(timeout=...)`` can block for good on CPython (seen on 3.11): when a ``put`` left its
internal lock released and the deadline passes before ``get`` looks again (a thread descheduled on a loaded
machine), it waits on the lock with a negative timeout, which means "for ever", until the next ``put``. The
ingestor's group commit waits a couple of milliseconds for more requests that way; on a loaded host a group
then hung until some other request arrived, and with none coming (a benchmark's last requests, a quiet
night) its webhook requests never got their answer. A deque under a :class:`threading.Condition` has no such
edge.

:meth:`Handoff.gather` collects a group without waking its taker on every ``put``: the ingest thread used to
wake once per webhook request while it waited out its group window (each wake a thread switch and a fight for
the GIL with the event loop that just put); now it wakes once, when the window ends or the group is full.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Handoff"]

T = TypeVar("T")


class Handoff(Generic[T]):
    """FIFO between threads: :meth:`put` never blocks; :meth:`get` raises :class:`queue.Empty` at its deadline.

    ``weight`` tells what an item counts for in :meth:`gather` (default 1 each).
    """

    def __init__(self, weight: Callable[[T], int] | None = None) -> None:
        self._items: deque[T] = deque()
        self._ready = threading.Condition(threading.Lock())
        self._weight_of = weight or (lambda _item: 1)
        self._weight = 0  # of the items queued
        self._wanted = 1  # a put wakes the taker once the items queued weigh this much
        self._urgent = False

    def put(self, item: T, *, urgent: bool = False) -> None:
        """Queue ``item``; ``urgent`` wakes a :meth:`gather` before its deadline (a stop request)."""
        with self._ready:
            self._items.append(item)
            self._weight += self._weight_of(item)
            self._urgent = self._urgent or urgent
            if urgent or self._weight >= self._wanted:
                self._ready.notify()

    def gather(self, limit: int, deadline: float) -> list[T]:
        """The oldest items weighing up to ``limit`` (more by at most the last one taken, and never none when
        one is queued), once that much is queued or at ``deadline`` (``time.monotonic()``) or an urgent put,
        whichever comes first. Possibly an empty list."""
        with self._ready:
            self._wanted = limit
            try:
                while self._weight < limit and not self._urgent:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._ready.wait(remaining)
            finally:
                self._wanted = 1
                self._urgent = False
            taken: list[T] = []
            weight = 0
            while self._items and weight < limit:
                item = self._items.popleft()
                taken.append(item)
                weight += self._weight_of(item)
            self._weight -= weight
            return taken

    def get(self, timeout: float | None = None) -> T:
        """The oldest item, waiting up to ``timeout`` seconds (None: until one comes; 0 or less: not at all)."""
        with self._ready:
            if not self._items:
                if timeout is None:
                    while not self._items:
                        self._ready.wait()
                else:
                    deadline = time.monotonic() + timeout
                    while not self._items:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            raise queue.Empty
                        self._ready.wait(remaining)
            item = self._items.popleft()
            self._weight -= self._weight_of(item)
            return item

    def get_nowait(self) -> T:
        return self.get(0)
