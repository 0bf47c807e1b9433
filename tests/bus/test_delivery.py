"""Delivery decisions: quick retries, Retry-After, park with a next-attempt time, dead letters.

Backoff waits go through the ``stop`` event; :class:`RecordingStop` records each requested wait and returns at
once, so these tests check the delays the policy asked for without sleeping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from adapters.base import Outcome
from bus.config import RetryPolicy
from bus.delivery import deliver_with_retries, park_delay
from bus.errors import PermanentError, TransientError

QUICK = RetryPolicy(attempts=4, backoff="exponential", initial_delay=0.01, max_delay=0.04, park=5.0, max_parks=3)


class RecordingStop(threading.Event):
    """A stop event that never waits: it records what the retry loop asked for."""

    def __init__(self, stop_after: int | None = None) -> None:
        super().__init__()
        self.waits: list[float] = []
        self.stop_after = stop_after

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(float(timeout or 0.0))
        if self.stop_after is not None and len(self.waits) >= self.stop_after:
            self.set()
        return self.is_set()


def failing(errors: list[Exception], result: object = "ok") -> tuple[Callable[[int], Outcome], list[int]]:
    """A send that raises the given errors in turn, then succeeds; records the attempt numbers it was given."""
    seen: list[int] = []

    def send(attempt: int) -> Outcome:
        seen.append(attempt)
        if errors:
            raise errors.pop(0)
        return Outcome(result=result, reference="R-1")

    return send, seen


def test_first_attempt_succeeds() -> None:
    send, seen = failing([])
    stop = RecordingStop()
    attempted = deliver_with_retries(send, QUICK, stop=stop)
    assert (attempted.status, attempted.attempts, attempted.error) == ("delivered", 1, None)
    assert attempted.outcome == Outcome(result="ok", reference="R-1")
    assert seen == [1] and stop.waits == []


def test_transient_errors_are_retried_quickly_with_bounded_backoff() -> None:
    send, seen = failing([TransientError("timeout"), TransientError("HTTP 503")])
    stop = RecordingStop()
    attempted = deliver_with_retries(send, QUICK, stop=stop)
    assert (attempted.status, attempted.attempts) == ("delivered", 3)
    assert seen == [1, 2, 3]
    assert len(stop.waits) == 2
    # full jitter: attempt n waits somewhere in [0, min(max_delay, initial_delay * 2**(n-1))]
    assert 0 <= stop.waits[0] <= 0.01 and 0 <= stop.waits[1] <= 0.02


def test_exponential_backoff_never_exceeds_max_delay() -> None:
    policy = RetryPolicy(attempts=10, initial_delay=0.01, max_delay=0.03, park=1.0)
    send, _ = failing([TransientError("busy")] * 9)
    stop = RecordingStop()
    assert deliver_with_retries(send, policy, stop=stop).status == "delivered"
    assert len(stop.waits) == 9 and max(stop.waits) <= 0.03


def test_fixed_backoff_waits_the_initial_delay_every_time() -> None:
    policy = RetryPolicy(attempts=3, backoff="fixed", initial_delay=0.02, max_delay=1.0)
    send, _ = failing([TransientError("a"), TransientError("b")])
    stop = RecordingStop()
    deliver_with_retries(send, policy, stop=stop)
    assert stop.waits == [0.02, 0.02]


def test_spent_retries_park_with_a_next_attempt_time() -> None:
    errors: list[Exception] = [TransientError(f"HTTP 503 #{i}") for i in range(10)]
    send, seen = failing(errors)
    before = time.time()
    attempted = deliver_with_retries(send, QUICK, parks=1, stop=RecordingStop())
    assert (attempted.status, attempted.attempts, seen) == ("park", 4, [1, 2, 3, 4])
    assert str(attempted.error) == "HTTP 503 #3"  # the last error is the one the operator sees
    assert attempted.next_attempt_at is not None
    # second park: park interval doubled (5s * 2**1)
    assert before + 10.0 <= attempted.next_attempt_at <= time.time() + 10.0


def test_retry_after_is_a_floor_for_quick_retries() -> None:
    send, _ = failing([TransientError("HTTP 429", retry_after=0.035), TransientError("HTTP 429", retry_after=0.03)])
    stop = RecordingStop()
    attempted = deliver_with_retries(send, QUICK, stop=stop)
    assert attempted.status == "delivered"
    assert stop.waits[0] >= 0.035 and stop.waits[1] >= 0.03


def test_retry_after_longer_than_max_delay_parks_at_once() -> None:
    send, seen = failing([TransientError("HTTP 429", retry_after=120.0)])
    stop = RecordingStop()
    before = time.time()
    attempted = deliver_with_retries(send, QUICK, stop=stop)
    assert (attempted.status, attempted.attempts, seen, stop.waits) == ("park", 1, [1], [])
    assert isinstance(attempted.error, TransientError) and attempted.error.retry_after == 120.0
    assert attempted.next_attempt_at is not None and attempted.next_attempt_at >= before + 120.0


def test_permanent_error_is_dead_at_once() -> None:
    send, seen = failing([PermanentError("HTTP 422: quantity must be positive")])
    stop = RecordingStop()
    attempted = deliver_with_retries(send, QUICK, stop=stop)
    assert (attempted.status, attempted.attempts, seen, stop.waits) == ("dead", 1, [1], [])
    assert str(attempted.error) == "HTTP 422: quantity must be positive"
    assert attempted.next_attempt_at is None


def test_an_untranslated_exception_is_dead_and_names_its_type() -> None:
    send, seen = failing([KeyError("order_id")])
    attempted = deliver_with_retries(send, QUICK, stop=RecordingStop())
    assert (attempted.status, seen) == ("dead", [1])
    assert isinstance(attempted.error, PermanentError)
    assert str(attempted.error) == "KeyError: 'order_id'"
    assert isinstance(attempted.error.__cause__, KeyError)


def test_max_parks_turns_the_next_park_into_a_dead_letter() -> None:
    send, _ = failing([TransientError("down")] * 10)
    attempted = deliver_with_retries(send, QUICK, parks=QUICK.max_parks, stop=RecordingStop())
    assert attempted.status == "dead"
    assert isinstance(attempted.error, PermanentError)
    assert str(attempted.error) == "gave up after 3 parks: down"
    send, _ = failing([TransientError("down")] * 10)
    assert deliver_with_retries(send, QUICK, parks=QUICK.max_parks - 1, stop=RecordingStop()).status == "park"


def test_zero_max_parks_means_dead_when_quick_retries_are_spent() -> None:
    policy = RetryPolicy(attempts=2, initial_delay=0.001, max_delay=0.001, max_parks=0)
    send, seen = failing([TransientError("down")] * 5)
    assert deliver_with_retries(send, policy, stop=RecordingStop()).status == "dead"
    assert seen == [1, 2]


def test_stopping_during_backoff_parks_instead_of_retrying_back_to_back() -> None:
    send, seen = failing([TransientError("down")] * 10)
    stop = RecordingStop(stop_after=1)
    attempted = deliver_with_retries(send, QUICK, stop=stop)
    assert (attempted.status, attempted.attempts, seen) == ("park", 1, [1])
    assert str(attempted.error) == "down"


@pytest.mark.parametrize(("park", "parks", "retry_after", "expected"), [
    (60.0, 0, None, 60.0), (60.0, 1, None, 120.0), (60.0, 3, None, 480.0),
    (60.0, 20, None, 60.0 * 2**10),  # the doubling stops after ten parks
    (3600.0, 5, None, 86400.0),  # and no park is longer than a day
    (60.0, 0, 600.0, 600.0), (60.0, 1, 30.0, 120.0),
])
def test_park_delay_grows_is_capped_and_honours_retry_after(park: float, parks: int, retry_after: float | None,
                                                            expected: float) -> None:
    policy = RetryPolicy(park=park)
    error = TransientError("x", retry_after=retry_after) if retry_after is not None else None
    assert park_delay(policy, parks, error) == expected


def test_without_a_stop_event_real_waits_are_short() -> None:
    policy = RetryPolicy(attempts=3, backoff="fixed", initial_delay=0.001, max_delay=0.001)
    send, seen = failing([TransientError("a"), TransientError("b")])
    attempted = deliver_with_retries(send, policy)
    assert (attempted.status, seen) == ("delivered", [1, 2, 3])
    assert attempted.duration_ms > 0


def test_a_first_attempt_made_elsewhere_is_not_repeated() -> None:
    """The worker sends a batch's first attempts together (Adapter.call_many) and hands each result in as
    ``first``: a success is taken as it is, a failure is classified like a raised one and retried from attempt 2."""
    began = time.monotonic() - 0.05
    send, seen = failing([])
    done = deliver_with_retries(send, QUICK, stop=RecordingStop(), first=Outcome(result="made", reference="R-9"),
                                started=began)
    assert (done.status, done.attempts, done.outcome) == ("delivered", 1, Outcome(result="made", reference="R-9"))
    assert seen == [] and done.duration_ms >= 50  # timed from when the first attempt began

    send, seen = failing([TransientError("HTTP 503")])
    retried = deliver_with_retries(send, QUICK, stop=RecordingStop(), first=TransientError("HTTP 503"))
    assert (retried.status, retried.attempts) == ("delivered", 3)
    assert seen == [2, 3]

    send, seen = failing([])
    refused = deliver_with_retries(send, QUICK, stop=RecordingStop(), first=PermanentError("HTTP 400"))
    assert (refused.status, refused.attempts, str(refused.error)) == ("dead", 1, "HTTP 400")
    assert seen == []

    # an exception the adapter did not translate is permanent, as when raised
    send, seen = failing([])
    bug = deliver_with_retries(send, QUICK, stop=RecordingStop(), first=KeyError("payload"))
    assert bug.status == "dead" and "KeyError" in str(bug.error) and seen == []
