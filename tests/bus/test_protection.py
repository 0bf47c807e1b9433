from __future__ import annotations

import threading
import time

import pytest

from bus.config import SystemConfig
from bus.errors import PermanentError, TransientError
from bus.protection import (
    CircuitBreaker,
    CircuitOpenError,
    Protections,
    RateLimited,
    RateLimiter,
    SystemProtection,
)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# -- rate limiter ---------------------------------------------------------------------------------------

def test_bucket_allows_a_burst_then_refills_at_the_configured_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter(3, 1.5, clock=clock)  # 2 tokens per second
    assert [limiter.try_acquire() for _ in range(4)] == [True, True, True, False]
    assert limiter.wait_time() == pytest.approx(0.5)
    clock.advance(0.5)
    assert limiter.try_acquire()
    assert not limiter.try_acquire()
    clock.advance(10)  # long idle: the bucket holds at most `requests` tokens
    assert sum(limiter.try_acquire() for _ in range(10)) == 3


def test_acquire_gives_up_at_once_when_the_wait_exceeds_the_timeout() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1, 60, clock=clock)
    assert limiter.acquire(timeout=0)
    started = time.monotonic()
    assert not limiter.acquire(timeout=5)  # needs 60 s: no point waiting 5
    assert time.monotonic() - started < 1.0


def test_acquire_waits_for_the_next_token_with_a_real_clock() -> None:
    limiter = RateLimiter(1, 0.2)
    assert limiter.acquire(0)
    started = time.monotonic()
    assert limiter.acquire(timeout=2)
    waited = time.monotonic() - started
    assert 0.1 < waited < 1.5


def test_penalise_blocks_every_thread_for_the_given_time() -> None:
    clock = FakeClock()
    limiter = RateLimiter(100, 1, clock=clock)
    limiter.penalise(7)
    assert not limiter.try_acquire()
    assert limiter.wait_time() == pytest.approx(7)
    limiter.penalise(2)  # a shorter penalty does not shorten a longer one
    limiter.penalise(7)  # nor do many threads reporting the same 429 stack up
    assert limiter.wait_time() == pytest.approx(7)
    clock.advance(7)
    # After the pause: one call, then the configured rate (no burst at the vendor that throttled us).
    assert limiter.try_acquire()
    assert not limiter.try_acquire()
    clock.advance(0.0505)  # 5.05 tokens' worth (a hair over 5, clear of float rounding)
    assert sum(limiter.try_acquire() for _ in range(100)) == 5


def test_threads_together_never_exceed_the_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter(50, 1, clock=clock)
    granted: list[bool] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(20):
            ok = limiter.try_acquire()
            with lock:
                granted.append(ok)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert granted.count(True) == 50
    assert len(granted) == 160


def test_close_wakes_a_waiting_thread() -> None:
    limiter = RateLimiter(1, 3600)
    assert limiter.acquire(0)
    result: list[bool] = []
    waiting = threading.Event()
    wait = limiter._cond.wait

    def observed_wait(timeout: float | None = None) -> bool:
        waiting.set()  # the thread is inside acquire(), blocked: close() must wake it
        return wait(timeout)

    limiter._cond.wait = observed_wait  # type: ignore[method-assign]
    t = threading.Thread(target=lambda: result.append(limiter.acquire(timeout=None)))
    t.start()
    assert waiting.wait(5), "the thread never blocked waiting for a token"
    limiter.close()
    t.join(5)
    assert result == [False]


@pytest.mark.parametrize(("requests", "per"), [(0, 1.0), (1, 0.0)])
def test_rate_limiter_rejects_nonsense(requests: int, per: float) -> None:
    with pytest.raises(ValueError):
        RateLimiter(requests, per)


# -- circuit breaker -------------------------------------------------------------------------------------

def test_breaker_opens_after_consecutive_failures_only() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(3, 30, clock=clock)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # resets the count
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == "closed" and breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open"
    assert breaker.opened_at == 1000.0
    assert not breaker.allow()
    assert breaker.retry_at() == 1030.0


def test_half_open_lets_exactly_one_probe_through_and_success_closes() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(1, 10, clock=clock)
    breaker.record_failure()
    clock.advance(10)
    assert breaker.state == "half_open"
    assert [breaker.allow() for _ in range(5)] == [True, False, False, False, False]
    breaker.record_success()
    assert breaker.state == "closed"
    assert breaker.opened_at is None
    assert all(breaker.allow() for _ in range(5))


def test_failed_probe_reopens_for_another_reset_period() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(2, 10, clock=clock)
    breaker.record_failure()
    breaker.record_failure()
    clock.advance(12)
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open"
    assert breaker.retry_at() == 1022.0
    assert breaker.trips == 2


def test_lost_probe_is_given_up_after_reset() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(1, 10, clock=clock)
    breaker.record_failure()
    clock.advance(10)
    assert breaker.allow()  # this probe's worker dies and never reports
    clock.advance(5)
    assert not breaker.allow()
    assert breaker.retry_at() == 1020.0
    clock.advance(5)
    assert breaker.allow()


def test_late_failure_from_before_the_trip_does_not_delay_the_probe() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(1, 10, clock=clock)
    breaker.record_failure()
    clock.advance(3)
    breaker.record_failure()
    assert breaker.retry_at() == 1010.0


def test_breaker_is_thread_safe_one_probe_among_many_threads() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(1, 1, clock=clock)
    breaker.record_failure()
    clock.advance(1)
    allowed: list[bool] = []
    barrier = threading.Barrier(16)

    def worker() -> None:
        barrier.wait()
        allowed.append(breaker.allow())

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert allowed.count(True) == 1


# -- system protection and registry ----------------------------------------------------------------------

def test_admit_raises_circuit_open_with_the_time_to_the_probe() -> None:
    clock = FakeClock()
    guard = SystemProtection("scm", breaker=CircuitBreaker(1, 30, clock=clock), clock=clock)
    guard.admit()
    guard.observe(TransientError("503"))
    clock.advance(5)
    with pytest.raises(CircuitOpenError) as info:
        guard.admit()
    assert isinstance(info.value, TransientError)
    assert info.value.retry_after == pytest.approx(25)


def test_permanent_error_counts_as_the_system_answering() -> None:
    clock = FakeClock()
    guard = SystemProtection("scm", breaker=CircuitBreaker(2, 30, clock=clock), clock=clock)
    guard.observe(TransientError("timeout"))
    guard.observe(PermanentError("400"))
    guard.observe(TransientError("timeout"))
    assert guard.breaker is not None and guard.breaker.state == "closed"


def test_retry_after_from_the_vendor_penalises_the_whole_system() -> None:
    mono = FakeClock()
    guard = SystemProtection("crm", limiter=RateLimiter(10, 1, clock=mono))
    guard.observe(TransientError("429", retry_after=4))
    with pytest.raises(RateLimited) as info:
        guard.admit(timeout=1)
    assert info.value.retry_after == pytest.approx(4)
    mono.advance(4)
    guard.admit(timeout=0)


def test_rate_limited_probe_hands_the_probe_slot_on() -> None:
    clock = FakeClock()
    mono = FakeClock()
    limiter = RateLimiter(1, 100, clock=mono)
    breaker = CircuitBreaker(1, 10, clock=clock)
    guard = SystemProtection("crm", limiter=limiter, breaker=breaker, clock=clock)
    assert limiter.try_acquire()
    breaker.record_failure()
    clock.advance(10)
    with pytest.raises(RateLimited):
        guard.admit(timeout=0)
    assert breaker.state == "half_open"
    assert breaker.allow()  # the next caller may probe


def test_own_refusals_are_not_recorded_as_system_failures() -> None:
    clock = FakeClock()
    guard = SystemProtection("x", breaker=CircuitBreaker(1, 10, clock=clock), clock=clock)
    guard.observe(CircuitOpenError("open", retry_after=3))
    guard.observe(RateLimited("slow", retry_after=3))
    assert guard.breaker is not None and guard.breaker.state == "closed"


def test_registry_built_from_config_and_snapshot() -> None:
    clock = FakeClock()
    systems = {
        "crm": SystemConfig("crm", "stub", {}, rate_limit=(5, 1.0), circuit_breaker=(2, 60.0)),
        "scm": SystemConfig("scm", "stub", {}),
    }
    protections = Protections.from_config(systems, clock=clock, monotonic=clock)
    crm = protections.get("crm")
    crm.observe(TransientError("a"))
    crm.observe(TransientError("b"))
    protections.get("scm").admit()  # unprotected: always admitted
    protections.get("unknown").admit()
    snap = protections.snapshot()
    assert snap["crm"]["circuit"]["state"] == "open"
    assert snap["crm"]["circuit"]["retry_at"] == 1060.0
    assert snap["crm"]["rate_limit"]["requests"] == 5
    assert snap["scm"] == {"rate_limit": None, "circuit": None}
    assert set(snap) == {"crm", "scm", "unknown"}
