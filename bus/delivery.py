"""Delivering one dispatch: quick retries with tenacity, then a single decision — delivered, park, or dead.

The retry policy is decided here and nowhere else. Quick retries stay short (they hold a worker thread);
when they are spent, or when the system asks for a pause longer than the policy's ``max_delay``, the delivery
is *parked* with a next-attempt time and the worker moves on, so one slow system cannot block the others.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from adapters.base import Outcome
from bus.config import RetryPolicy
from bus.errors import DeliveryError, PermanentError, TransientError

__all__ = ["Attempted", "deliver_with_retries", "park_delay"]


@dataclass(frozen=True)
class Attempted:
    """How a delivery ended in this worker: ``delivered``, ``park`` (retry at ``next_attempt_at``) or ``dead``.

    ``stopped`` says the stop event cut the quick retries short: ``status`` is then what spending them would
    have decided (park, or dead once ``max_parks`` is reached), and a caller that can leave its message unacked
    may do that instead, so the delivery is decided again after the restart.
    """

    status: Literal["delivered", "park", "dead"]
    attempts: int
    outcome: Outcome | None = None
    error: DeliveryError | None = None
    next_attempt_at: float | None = None
    duration_ms: float = 0.0
    stopped: bool = False


class _TooLongToWait(Exception):
    """The system asked for a pause longer than quick retries may take: park instead."""

    def __init__(self, error: TransientError) -> None:
        self.error = error
        super().__init__(str(error))


class _Stopping(Exception):
    """The worker is stopping while a delivery waits for its next quick retry."""


def _pause(stop: threading.Event, seconds: float) -> None:
    if stop.wait(seconds):
        raise _Stopping


def _delay(policy: RetryPolicy, failures: int, exc: BaseException | None) -> float:
    """Seconds to wait after the ``failures``-th failed attempt."""
    if policy.backoff == "fixed":
        delay = policy.initial_delay
    else:
        # exponential with full jitter: spreads retries of many workers hitting one recovering system
        delay = random.uniform(0, min(policy.max_delay, policy.initial_delay * 2 ** (failures - 1)))
    if isinstance(exc, TransientError) and exc.retry_after is not None:
        delay = max(delay, exc.retry_after)  # Retry-After is a floor, never shortened by jitter
    return delay


def _wait(policy: RetryPolicy, offset: int = 0) -> Callable[[RetryCallState], float]:
    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        return _delay(policy, state.attempt_number + offset, exc)

    return wait


def park_delay(policy: RetryPolicy, parks: int, error: TransientError | None) -> float:
    """How long a parked delivery waits: the policy's park interval growing with each park, capped at 1 day,
    never less than the system's own Retry-After."""
    delay = min(policy.park * (2.0 ** min(parks, 10)), 86400.0)
    if error is not None and error.retry_after is not None:
        delay = max(delay, error.retry_after)
    return delay


def deliver_with_retries(send: Callable[[int], Outcome], policy: RetryPolicy, *, parks: int = 0,
                         stop: threading.Event | None = None, first: Outcome | Exception | None = None,
                         started: float | None = None) -> Attempted:
    """Call ``send(attempt)`` with quick retries on :class:`TransientError`; decide what happens next.

    ``send`` gets the 1-based attempt number. Any exception other than the bus's delivery errors is treated as
    permanent: it is a bug or a vendor exception the adapter failed to translate, and retrying will not fix it.
    ``first`` is the outcome (or exception) of a first attempt already made elsewhere — several sent at once,
    see :meth:`adapters.base.Adapter.call_many` — begun at ``started`` (``time.monotonic()``); ``send`` then
    makes the retries only.
    """
    started = time.monotonic() if started is None else started
    attempts = 0
    last: TransientError | None = None
    stop = stop or threading.Event()

    def call() -> Outcome:
        nonlocal attempts, last
        attempts += 1
        try:
            if attempts == 1 and first is not None:
                if isinstance(first, Exception):
                    raise first
                return first
            return send(attempts)
        except TransientError as exc:
            last = exc
            if exc.retry_after is not None and exc.retry_after > policy.max_delay:
                raise _TooLongToWait(exc) from exc
            raise
        except DeliveryError:
            raise
        except Exception as exc:  # untranslated vendor/library exception: permanent, with its type for the operator
            raise PermanentError(f"{type(exc).__name__}: {exc}") from exc

    # Fast path: most deliveries succeed at once; the retry machinery is only built when the first one fails.
    first_error: BaseException | None = None
    try:
        return Attempted("delivered", 1, outcome=call(), duration_ms=_ms(started))
    except _TooLongToWait as exc:
        return _park(policy, parks, exc.error, attempts, started)
    except PermanentError as exc:
        return Attempted("dead", attempts, error=exc, duration_ms=_ms(started))
    except TransientError as exc:
        first_error = exc
    assert isinstance(first_error, TransientError)
    last = first_error
    if policy.attempts <= 1:
        return _park(policy, parks, first_error, attempts, started)
    try:
        _pause(stop, _delay(policy, 1, first_error))
    except _Stopping:
        return replace(_park(policy, parks, first_error, attempts, started), stopped=True)  # do not hammer

    retrying = Retrying(
        stop=stop_after_attempt(policy.attempts - 1), wait=_wait(policy, offset=1),
        retry=retry_if_exception_type(TransientError), reraise=True,
        sleep=lambda seconds: _pause(stop, seconds),
    )
    try:
        outcome = retrying(call)
    except _Stopping:
        # shutting down mid-backoff: park rather than fire the remaining retries back to back
        assert last is not None
        return replace(_park(policy, parks, last, attempts, started), stopped=True)
    except _TooLongToWait as exc:
        return _park(policy, parks, exc.error, attempts, started)
    except TransientError as exc:
        return _park(policy, parks, exc, attempts, started)
    except PermanentError as exc:
        return Attempted("dead", attempts, error=exc, duration_ms=_ms(started))
    return Attempted("delivered", attempts, outcome=outcome, duration_ms=_ms(started))


def _park(policy: RetryPolicy, parks: int, error: TransientError, attempts: int, started: float) -> Attempted:
    if parks >= policy.max_parks:
        reason = PermanentError(f"gave up after {parks} parks: {error}")
        return Attempted("dead", attempts, error=reason, duration_ms=_ms(started))
    return Attempted("park", attempts, error=error, next_attempt_at=time.time() + park_delay(policy, parks, error),
                     duration_ms=_ms(started))


def _ms(started: float) -> float:
    return (time.monotonic() - started) * 1000.0
