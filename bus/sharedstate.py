"""Rate-limit budgets and circuit state shared by every process and host that uses one journal database.

A vendor's limit is per account, not per ``ironbus run``: N processes with a limiter each sent N times the
allowed rate, and a circuit opened by one process let the others keep hammering a system that is down.

* :class:`SharedRateLimiter` keeps the token bucket in a row of ``ib_rate_buckets``; taking a token is one
  short transaction (the row is locked ``FOR UPDATE`` on PostgreSQL; SQLite serialises writers). Only systems
  with a ``rate_limit`` pay for it, and those are slow by definition. A 429's ``Retry-After`` pauses every
  process. Should the database not answer, the process falls back to its own bucket until it does.
* :class:`SharedCircuitBreaker` is the process's breaker that also writes when it opens or closes
  (``ib_circuits``) and, at most every :data:`SYNC_SECONDS`, adopts what another process wrote: a circuit
  opened anywhere is open everywhere within half a second, and a successful probe anywhere closes it.

The rows live in the journal (``journal.rate_buckets``, ``journal.circuits``: :mod:`bus.journal.limiterstate`);
this module is the policy. Clocks are wall time (``time.time``), so hosts sharing a journal need synchronised
clocks (NTP), as usual.
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
import structlog

from bus.journal import Journal
from bus.journal.limiterstate import Bucket, CircuitStates, RateBuckets
from bus.protection import CircuitBreaker, RateLimiter

__all__ = ["SYNC_SECONDS", "SharedCircuitBreaker", "SharedRateLimiter", "shared_factories"]

log = structlog.get_logger(__name__)

#: How stale a process's view of another process's circuit may be.
SYNC_SECONDS = 0.5


class SharedRateLimiter(RateLimiter):
    """A :class:`RateLimiter` whose bucket lives in the journal database (same interface)."""

    def __init__(self, buckets: RateBuckets, system: str, requests: int, per: float) -> None:
        super().__init__(requests, per)  # the local bucket: the fallback while the database is away
        self.buckets = buckets
        self.system = system

    def _refilled(self, bucket: Bucket) -> tuple[float, float]:
        """``(now, tokens)``: the bucket refilled to now. Never moves ``updated_at`` back: a time taken before
        the row was ours would count the interval another process already refilled a second time."""
        now = max(time.time(), bucket.updated_at)
        return now, min(float(self.requests), bucket.tokens + (now - bucket.updated_at) * self._rate)

    def _fresh(self) -> Bucket:
        return Bucket(float(self.requests), time.time(), 0.0)

    def _take(self, take: bool) -> float:
        """In one transaction: refill, and take a token when ``take`` and one is free. Returns the wait (0.0
        when a token was taken, or would be free now)."""

        def change(bucket: Bucket) -> tuple[Bucket, float]:
            now, tokens = self._refilled(bucket)
            penalty = max(0.0, bucket.blocked_until - now)
            wait = penalty if tokens >= 1.0 else max(penalty, (1.0 - tokens) / self._rate)
            if take and wait <= 0.0:
                tokens -= 1.0
            return Bucket(tokens, now, bucket.blocked_until), float(wait)

        return self.buckets.change(self.system, self._fresh(), change)

    def wait_time(self) -> float:
        try:
            return self._take(False)
        except sa.exc.SQLAlchemyError:
            return super().wait_time()

    def try_acquire(self) -> bool:
        try:
            return self._take(True) <= 0.0
        except sa.exc.SQLAlchemyError:
            return super().try_acquire()

    def acquire(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._closed:
            try:
                wait = self._take(True)
            except sa.exc.SQLAlchemyError as exc:
                log.warning("rate_limit.shared_unavailable", system=self.system, error=str(exc).splitlines()[0])
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                return super().acquire(remaining)
            if wait <= 0.0:
                return True
            if deadline is not None and time.monotonic() + wait > deadline:
                return False
            with self._cond:
                self._cond.wait(wait)  # close() wakes it
        return False

    def penalise(self, seconds: float) -> None:
        if seconds <= 0:
            return
        super().penalise(seconds)

        def change(bucket: Bucket) -> tuple[Bucket, None]:
            # no token until the pause is over, and the bucket empty enough that none is free right after
            now, tokens = self._refilled(bucket)
            return Bucket(min(tokens, 1.0 - seconds * self._rate), now,
                          max(bucket.blocked_until, now + seconds)), None

        try:
            self.buckets.change(self.system, self._fresh(), change)
        except sa.exc.SQLAlchemyError as exc:
            log.warning("rate_limit.shared_unavailable", system=self.system, error=str(exc).splitlines()[0])

    def snapshot(self) -> dict[str, Any]:
        try:
            row = self.buckets.get(self.system)
        except sa.exc.SQLAlchemyError:
            return super().snapshot()
        now = time.time()
        tokens = float(self.requests) if row is None else \
            min(float(self.requests), row.tokens + max(0.0, now - row.updated_at) * self._rate)
        blocked = 0.0 if row is None else max(0.0, row.blocked_until - now)
        return {"requests": self.requests, "per": self.per, "tokens": round(tokens, 3),
                "penalised_for": round(blocked, 3), "shared": True}


class SharedCircuitBreaker(CircuitBreaker):
    """A :class:`CircuitBreaker` that shares opening and closing with the other processes (see module doc)."""

    def __init__(self, circuits: CircuitStates, failures: int, reset: float, name: str) -> None:
        super().__init__(failures, reset, name=name)
        self.circuits = circuits
        self._synced = 0.0
        self._closed_at = 0.0  # when this process last saw the circuit close: older openings are stale

    def _write(self, opened_at: float | None) -> None:
        try:
            self.circuits.put(self.name, opened_at, time.time())
        except sa.exc.SQLAlchemyError as exc:
            log.warning("circuit.shared_unavailable", system=self.name, error=str(exc).splitlines()[0])

    def _sync(self) -> None:
        now = time.time()
        if now - self._synced < SYNC_SECONDS:
            return
        self._synced = now
        try:
            row = self.circuits.get(self.name)
        except sa.exc.SQLAlchemyError:
            return
        if row is None:
            return
        with self._lock:
            opened_at = row[0]
            if opened_at is not None and opened_at <= self._closed_at:
                stale = True  # an opening this process has already seen closed (a late or failed write)
            else:
                stale = False
            if opened_at is not None and self._state == "closed" and not stale:
                # another process opened it: so is it here, with the same probe time
                self._state, self._opened_at, self._probe_started = "open", opened_at, None
                log.info("circuit opened by another process", system=self.name)
            elif opened_at is None and self._state != "closed":
                # another process's probe succeeded
                self._state, self._consecutive, self._opened_at, self._probe_started = "closed", 0, None, None
                self._closed_at = now
                log.info("circuit closed by another process", system=self.name)
        if stale and self._state == "closed":
            self._write(None)

    def allow(self) -> bool:
        self._sync()
        return super().allow()

    def retry_at(self) -> float:
        self._sync()
        return super().retry_at()

    def record_success(self) -> None:
        was_open = self._state != "closed"
        super().record_success()
        if was_open:
            self._closed_at = time.time()
            self._write(None)

    def record_failure(self) -> None:
        trips = self.trips
        super().record_failure()
        if self.trips != trips:
            self._write(self._opened_at)


class _Factories:
    """:class:`bus.protection.SharedFactories` on the journal's database."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def limiter(self, system: str, requests: int, per: float) -> RateLimiter:
        return SharedRateLimiter(self.journal.rate_buckets, system, requests, per)

    def breaker(self, system: str, failures: int, reset: float) -> CircuitBreaker:
        return SharedCircuitBreaker(self.journal.circuits, failures, reset, name=system)


def shared_factories(journal: Journal) -> _Factories:
    """Limiters and breakers whose budgets and circuit state live in the journal's database, shared by every
    process (and host) of one bus."""
    return _Factories(journal)
