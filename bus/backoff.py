"""One exponential backoff for every loop of the bus that waits after a failure or an empty poll.

Triggers backing off a failing poll, the supervisor restarting a bus process, the RabbitMQ consumer
reconnecting, the embedded queue polling for work and the journal switching SQLite to WAL all wait
``first``, then twice that, and so on up to ``cap``. The delays come from tenacity's ``wait_exponential``
(the strategy :mod:`bus.delivery` also retries with), so the arithmetic lives in one well-tested place.
"""

from __future__ import annotations

from tenacity import RetryCallState, Retrying, wait_exponential

__all__ = ["Backoff"]

_OWNER = Retrying()  # a RetryCallState needs one; the wait strategy reads only the attempt number


class Backoff:
    """Delays ``first * 2**(n-1)`` capped at ``cap``. :meth:`delay` for the n-th failure of a count kept
    elsewhere; :meth:`next` and :meth:`reset` for a loop that keeps its own (not thread-safe: one per loop)."""

    def __init__(self, first: float, cap: float) -> None:
        self.first = first
        self.cap = cap
        self._wait = wait_exponential(multiplier=first, max=cap, exp_base=2)
        self._failures = 0

    def delay(self, failures: int) -> float:
        """The pause after the ``failures``-th failure in a row (1: ``first``). Thread-safe."""
        state = RetryCallState(_OWNER, None, (), {})
        state.attempt_number = max(failures, 1)
        return float(self._wait(state))

    def next(self) -> float:
        """The next pause of this loop, one step longer than the last."""
        self._failures += 1
        return self.delay(self._failures)

    def reset(self) -> None:
        """Back to ``first``: the loop succeeded (or was woken)."""
        self._failures = 0
