"""A hand-off queue between threads whose timed ``get`` always returns by its deadline.

``queue.SimpleQueue.get(timeout=...)`` can block for good on CPython (seen on 3.11): when a ``put`` left its
internal lock released and the deadline passes before ``get`` looks again (a thread descheduled on a loaded
machine), it waits on the lock with a negative timeout, which means "for ever", until the next ``put``. The
ingestor's group commit waits a couple of milliseconds for more requests that way; on a loaded host a group
then hung until some other request arrived, and with none coming (a benchmark's last requests, a quiet
night) its webhook requests never got their answer. A deque under a :class:`threading.Condition` has no such
edge.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from typing import Generic, TypeVar

__all__ = ["Handoff"]

T = TypeVar("T")


class Handoff(Generic[T]):
    """FIFO between threads: :meth:`put` never blocks; :meth:`get` raises :class:`queue.Empty` at its deadline."""

    def __init__(self) -> None:
        self._items: deque[T] = deque()
        self._ready = threading.Condition(threading.Lock())

    def put(self, item: T) -> None:
        with self._ready:
            self._items.append(item)
            self._ready.notify()

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
            return self._items.popleft()

    def get_nowait(self) -> T:
        return self.get(0)
