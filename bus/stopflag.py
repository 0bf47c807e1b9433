"""A stop request made from a signal handler, safely: no lock is taken in the handler.

Python runs a signal handler in the main thread, between two bytecodes of whatever that thread was doing. A
handler that calls :meth:`threading.Event.set` takes the event's lock; if the main thread was inside
:meth:`threading.Event.wait` on that same event, holding that lock for a moment, the handler waits for a lock its
own thread holds, and the process hangs for good. That is what a supervised bus process did, rarely, on SIGTERM:
it never stopped and was killed after 60 s. The handler here only sets an attribute, and the waiting loop sleeps
in short steps (a signal cuts a sleep short only to run the handler; the loop sees the flag at its next step).
"""

from __future__ import annotations

import signal
import time
from types import FrameType
from typing import Any

__all__ = ["STOP_SIGNALS", "StopFlag"]

#: The signals that ask a bus command to stop gracefully.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopFlag:
    """Set by :meth:`request` (a signal handler) and read by the main loop with :meth:`wait`."""

    def __init__(self) -> None:
        self._requested = False

    def request(self, _signum: int = 0, _frame: FrameType | None = None) -> None:
        """Ask to stop; usable as a signal handler (it takes no lock and allocates nothing)."""
        self._requested = True

    def is_set(self) -> bool:
        return self._requested

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds unless a stop was asked; whether one was asked."""
        if not self._requested:
            time.sleep(timeout)
        return self._requested

    def install(self) -> dict[int, Any]:
        """Make SIGTERM and SIGINT call :meth:`request`; the handlers they had, to put back."""
        return {sig: signal.signal(sig, self.request) for sig in STOP_SIGNALS}
