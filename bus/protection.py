"""Per-system protections: a rate limiter and a circuit breaker.

Both are shared by every worker thread delivering to one system, so that a vendor's limits are respected by
the process as a whole, not by each thread on its own.

* :class:`RateLimiter` — a token bucket: at most ``requests`` calls per ``per`` seconds, with bursts up to
  ``requests``. :meth:`RateLimiter.penalise` honours a vendor's "slow down" (HTTP 429 ``Retry-After``): every
  thread waits it out, not only the one that was told.
* :class:`CircuitBreaker` — stops deliveries to a system that keeps failing transiently. After ``failures``
  consecutive transient failures it *opens*; after ``reset`` seconds it lets exactly one probe through
  (*half-open*); the probe's success closes it, its failure opens it again. While it is open the worker does
  not attempt deliveries but parks them until :meth:`CircuitBreaker.retry_at`.
* :class:`Protections` — the registry, one :class:`SystemProtection` per configured system, with a
  :meth:`Protections.snapshot` for ``ironbus status`` and metrics.

A worker wraps each delivery like this::

    guard = protections.get(target.system)
    guard.admit(timeout=5.0)          # raises CircuitOpenError / RateLimited (both TransientError)
    try:
        outcome = adapter.call(operation, call)
    except BaseException as exc:
        guard.observe(exc)
        raise
    guard.observe(None)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol

import structlog

from bus.config import SystemConfig
from bus.errors import CircuitOpenError, RateLimited, TransientError

__all__ = [
    "CircuitBreaker",
    "CircuitOpenError",
    "Protections",
    "RateLimited",
    "RateLimiter",
    "SharedFactories",
    "SystemProtection",
]

log = structlog.get_logger(__name__)

Clock = Callable[[], float]
State = Literal["closed", "open", "half_open"]


class RateLimiter:
    """Token bucket allowing ``requests`` calls per ``per`` seconds (bursts up to ``requests``). Thread-safe.

    ``clock`` must be monotonic; it is injectable for tests. Waiting uses a condition variable, so a thread
    blocked in :meth:`acquire` also wakes up early when :meth:`close` is called.
    """

    def __init__(self, requests: int, per: float, clock: Clock = time.monotonic) -> None:
        if requests < 1:
            raise ValueError(f"rate limit requests must be >= 1, got {requests}")
        if per <= 0:
            raise ValueError(f"rate limit interval must be > 0 seconds, got {per}")
        self.requests = requests
        self.per = float(per)
        self._rate = requests / self.per  # tokens per second
        self._clock = clock
        self._tokens = float(requests)
        self._updated = clock()
        self._blocked_until = 0.0
        self._cond = threading.Condition()
        self._closed = False

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(float(self.requests), self._tokens + elapsed * self._rate)
        self._updated = now

    def _wait_locked(self, now: float) -> float:
        self._refill(now)
        penalty = max(0.0, self._blocked_until - now)
        if self._tokens >= 1.0:
            return penalty
        return max(penalty, (1.0 - self._tokens) / self._rate)

    def wait_time(self) -> float:
        """Seconds until a call would be allowed (0.0 when one is allowed now). Does not take a token."""
        with self._cond:
            return self._wait_locked(self._clock())

    def try_acquire(self) -> bool:
        """Take a token if one is free right now."""
        with self._cond:
            if self._wait_locked(self._clock()) > 0.0:
                return False
            self._tokens -= 1.0
            return True

    def acquire(self, timeout: float | None = None) -> bool:
        """Take a token, waiting up to ``timeout`` seconds (None: as long as needed). False on timeout.

        Gives up at once, without waiting, when the wait needed already exceeds the timeout: a worker should
        rather park the delivery than hold a thread.
        """
        with self._cond:
            deadline = None if timeout is None else self._clock() + timeout
            while not self._closed:
                now = self._clock()
                wait = self._wait_locked(now)
                if wait <= 0.0:
                    self._tokens -= 1.0
                    return True
                if deadline is not None and now + wait > deadline:
                    return False
                self._cond.wait(wait)
            return False

    def penalise(self, seconds: float) -> None:
        """No call for ``seconds`` from now, for every thread (the vendor said so, e.g. 429 Retry-After)."""
        if seconds <= 0:
            return
        with self._cond:
            now = self._clock()
            self._refill(now)
            self._blocked_until = max(self._blocked_until, now + seconds)
            # After the pause, one call, then the configured rate: no whole burst at a vendor that just throttled
            # us. Derived from the deadline, not accumulated, so many threads reporting the same 429 do not
            # stack their penalties.
            self._tokens = min(self._tokens, 1.0 - (self._blocked_until - now) * self._rate)
            self._cond.notify_all()

    def close(self) -> None:
        """Wake every waiting thread; they return False."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def snapshot(self) -> dict[str, Any]:
        with self._cond:
            now = self._clock()
            self._refill(now)
            return {"requests": self.requests, "per": self.per, "tokens": round(self._tokens, 3),
                    "penalised_for": round(max(0.0, self._blocked_until - now), 3)}


class CircuitBreaker:
    """closed → open after ``failures`` consecutive transient failures → half-open after ``reset`` seconds.

    Half-open lets exactly ONE probe through (:meth:`allow` returns True once); the probe's
    :meth:`record_success` closes the circuit, its :meth:`record_failure` re-opens it for another ``reset``.
    A probe whose result is never recorded (its worker died) is given up after ``reset`` seconds, and the
    next caller probes instead, so a lost probe cannot wedge the circuit open.

    Only *transient* failures should be recorded as failures. A permanent error (400, validation) proves the
    system is up and answering, so record it as a success. ``clock`` defaults to wall time so that
    :attr:`opened_at` and :meth:`retry_at` are epoch seconds a worker can park a delivery until.
    """

    def __init__(self, failures: int, reset: float, clock: Clock = time.time, name: str = "") -> None:
        if failures < 1:
            raise ValueError(f"circuit breaker failures must be >= 1, got {failures}")
        if reset < 0:
            raise ValueError(f"circuit breaker reset must be >= 0 seconds, got {reset}")
        self.failures = failures
        self.reset = float(reset)
        self.name = name
        self._clock = clock
        self._lock = threading.Lock()
        self._state: State = "closed"
        self._consecutive = 0
        self._opened_at: float | None = None
        self._probe_started: float | None = None
        self.trips = 0  # how often the circuit opened since start (a metric)

    @property
    def state(self) -> State:
        """The state as of now: an open circuit whose reset has passed reports ``half_open``."""
        with self._lock:
            return self._current(self._clock())

    @property
    def opened_at(self) -> float | None:
        """When the circuit last opened (clock seconds); None while closed."""
        with self._lock:
            return self._opened_at if self._state != "closed" else None

    def _current(self, now: float) -> State:
        if self._state == "open" and self._opened_at is not None and now >= self._opened_at + self.reset:
            return "half_open"
        return self._state

    def allow(self) -> bool:
        """May a delivery be attempted now? In half-open, True for exactly one caller (the probe)."""
        with self._lock:
            now = self._clock()
            state = self._current(now)
            if state == "closed":
                return True
            if state == "open":
                return False
            probe_lost = self._probe_started is not None and now >= self._probe_started + self.reset
            if self._probe_started is None or probe_lost:
                self._state = "half_open"
                self._probe_started = now
                log.info("circuit half-open: probing", system=self.name)
                return True
            return False

    def record_success(self) -> None:
        """A call succeeded (or failed permanently, which also proves the system answers): close."""
        with self._lock:
            if self._state != "closed":
                log.info("circuit closed", system=self.name)
            self._state = "closed"
            self._consecutive = 0
            self._opened_at = None
            self._probe_started = None

    def record_failure(self) -> None:
        """A call failed transiently: count it; open at the threshold, re-open after a failed probe."""
        with self._lock:
            now = self._clock()
            if self._state == "closed":
                self._consecutive += 1
                if self._consecutive >= self.failures:
                    self._open(now)
            elif self._probe_started is not None:
                self._open(now)
            # A failure reported while open and before a probe comes from a call admitted before the circuit
            # opened; it must not push the probe time further away.

    def cancel_probe(self) -> None:
        """The caller that :meth:`allow` chose as probe did not attempt the call: let the next caller probe."""
        with self._lock:
            if self._state == "half_open":
                self._probe_started = None

    def _open(self, now: float) -> None:
        self._state = "open"
        self._opened_at = now
        self._probe_started = None
        self.trips += 1
        log.warning("circuit opened", system=self.name, consecutive_failures=self._consecutive,
                    retry_in=self.reset)

    def retry_at(self) -> float:
        """When a parked delivery should next be tried (clock seconds): now while closed, else the probe time."""
        with self._lock:
            now = self._clock()
            state = self._current(now)
            if state == "closed" or self._opened_at is None:
                return now
            if state == "open":
                return self._opened_at + self.reset
            if self._probe_started is None:
                return now
            # A probe is in flight: the others wait for its result (or for it to be given up as lost).
            return self._probe_started + self.reset

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            now = self._clock()
            state = self._current(now)
            opened = self._opened_at if state != "closed" else None
            consecutive = self._consecutive
        return {"state": state, "failures": self.failures, "reset": self.reset,
                "consecutive_failures": consecutive, "opened_at": opened,
                "retry_at": self.retry_at() if state != "closed" else None, "trips": self.trips}


class SystemProtection:
    """The rate limiter and circuit breaker of one system (either may be absent)."""

    def __init__(self, system: str, limiter: RateLimiter | None = None, breaker: CircuitBreaker | None = None,
                 clock: Clock = time.time) -> None:
        self.system = system
        self.limiter = limiter
        self.breaker = breaker
        self._clock = clock

    def admit(self, timeout: float = 0.0) -> None:
        """Let one delivery through, or raise a :class:`TransientError` saying when to come back.

        Raises :class:`CircuitOpenError` when the circuit is open (or another caller holds the half-open
        probe) and :class:`RateLimited` when no token frees up within ``timeout`` seconds. Both carry
        ``retry_after``, so the worker parks the delivery instead of spending an attempt on it.
        """
        if self.breaker is not None and not self.breaker.allow():
            wait = max(0.0, self.breaker.retry_at() - self._clock())
            raise CircuitOpenError(f"{self.system}: circuit open, next probe in {wait:.1f}s", retry_after=wait)
        if self.limiter is not None and not self.limiter.acquire(timeout):
            wait = self.limiter.wait_time()
            # A probe that cannot run must not keep the half-open slot: hand it to the next caller.
            if self.breaker is not None:
                self.breaker.cancel_probe()
            raise RateLimited(f"{self.system}: rate limit reached, next slot in {wait:.1f}s", retry_after=wait)

    def observe(self, error: BaseException | None) -> None:
        """Record a delivery's result: None for success, else the exception the adapter raised."""
        if isinstance(error, CircuitOpenError | RateLimited):
            return  # our own refusal, not the system's answer
        if isinstance(error, TransientError):
            if self.limiter is not None and error.retry_after:
                self.limiter.penalise(error.retry_after)
            if self.breaker is not None:
                self.breaker.record_failure()
        elif self.breaker is not None:
            # Success, or a permanent error: either way the system answered.
            self.breaker.record_success()

    def snapshot(self) -> dict[str, Any]:
        return {"rate_limit": self.limiter.snapshot() if self.limiter else None,
                "circuit": self.breaker.snapshot() if self.breaker else None}


class SharedFactories(Protocol):
    """Builds the rate limiter and circuit breaker of one system from state shared across processes."""

    def limiter(self, system: str, requests: int, per: float) -> RateLimiter: ...

    def breaker(self, system: str, failures: int, reset: float) -> CircuitBreaker: ...


class Protections:
    """One :class:`SystemProtection` per system, built from ``rate_limit`` / ``circuit_breaker`` in routes.yaml."""

    def __init__(self, systems: Mapping[str, SystemProtection] | None = None, clock: Clock = time.time) -> None:
        self._systems: dict[str, SystemProtection] = dict(systems or {})
        self._clock = clock
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, systems: Mapping[str, SystemConfig], clock: Clock = time.time,
                    monotonic: Clock = time.monotonic, *, shared: SharedFactories | None = None) -> Protections:
        """``shared``: how to build limiters and breakers whose budget and state every process of the bus shares
        (:func:`bus.sharedstate.shared_factories`); None keeps them in this process."""
        built: dict[str, SystemProtection] = {}
        for name, system in systems.items():
            if shared is not None:
                limiter: RateLimiter | None = shared.limiter(name, *system.rate_limit) if system.rate_limit else None
                breaker: CircuitBreaker | None = (shared.breaker(name, *system.circuit_breaker)
                                                  if system.circuit_breaker else None)
                built[name] = SystemProtection(name, limiter, breaker, clock)
                continue
            limiter = RateLimiter(*system.rate_limit, clock=monotonic) if system.rate_limit else None
            breaker = (CircuitBreaker(*system.circuit_breaker, clock=clock, name=name)
                       if system.circuit_breaker else None)
            built[name] = SystemProtection(name, limiter, breaker, clock)
        return cls(built, clock)

    def get(self, system: str) -> SystemProtection:
        """The protection of ``system``; an unprotected one (admits everything) when none is configured."""
        found = self._systems.get(system)  # every configured system is there already: no lock per delivery
        if found is not None:
            return found
        with self._lock:
            found = self._systems.get(system)
            if found is None:
                found = self._systems[system] = SystemProtection(system, clock=self._clock)
            return found

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """``{system: {"rate_limit": {...} | None, "circuit": {...} | None}}`` for status and metrics."""
        with self._lock:
            items = sorted(self._systems.items())
        return {name: guard.snapshot() for name, guard in items}

    def close(self) -> None:
        """Wake every thread waiting for a rate-limit token (shutdown)."""
        with self._lock:
            guards = list(self._systems.values())
        for guard in guards:
            if guard.limiter is not None:
                guard.limiter.close()
