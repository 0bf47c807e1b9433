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

Clocks are wall time (``time.time``), so hosts sharing a journal need synchronised clocks (NTP), as usual.
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Engine

from bus.journal.engine import read, write
from bus.journal.sql import insert_for
from bus.protection import CircuitBreaker, RateLimiter
from bus.sidetables import ensure_tables

__all__ = ["SYNC_SECONDS", "SharedCircuitBreaker", "SharedRateLimiter", "shared_factories"]

log = structlog.get_logger(__name__)

#: How stale a process's view of another process's circuit may be.
SYNC_SECONDS = 0.5

_metadata = sa.MetaData()
_B = sa.Table(
    "ib_rate_buckets", _metadata,
    sa.Column("system", sa.Text, primary_key=True),
    sa.Column("tokens", sa.Double, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
    sa.Column("blocked_until", sa.Double, nullable=False),
)
_C = sa.Table(
    "ib_circuits", _metadata,
    sa.Column("system", sa.Text, primary_key=True),
    sa.Column("opened_at", sa.Double),
    sa.Column("updated_at", sa.Double, nullable=False),
)
def _ensure(engine: Engine) -> None:
    ensure_tables(engine, _metadata, [_B, _C])


class SharedRateLimiter(RateLimiter):
    """A :class:`RateLimiter` whose bucket lives in the journal database (same interface)."""

    def __init__(self, engine: Engine, system: str, requests: int, per: float) -> None:
        super().__init__(requests, per)  # the local bucket: the fallback while the database is away
        self.engine = engine
        self.system = system
        self._postgres = engine.dialect.name == "postgresql"
        _ensure(engine)

    def _take(self, take: bool) -> float:
        """In one transaction: refill, and take a token when ``take`` and one is free. Returns the wait (0.0
        when a token was taken, or would be free now)."""
        with write(self.engine) as conn:
            query = sa.select(_B.c.tokens, _B.c.updated_at, _B.c.blocked_until).where(_B.c.system == self.system)
            row = conn.execute(query.with_for_update() if self._postgres else query).first()
            if row is None:
                conn.execute(insert_for(conn, _B).on_conflict_do_nothing(index_elements=[_B.c.system])
                             .values(system=self.system, tokens=float(self.requests), updated_at=time.time(),
                                     blocked_until=0.0))
                row = conn.execute(query.with_for_update() if self._postgres else query).one()
            # read the clock once the row is ours, and never move updated_at back: a time taken before waiting
            # for the lock would count the interval another process already refilled a second time
            now = max(time.time(), row.updated_at)
            tokens = min(float(self.requests), row.tokens + (now - row.updated_at) * self._rate)
            penalty = max(0.0, row.blocked_until - now)
            wait = penalty if tokens >= 1.0 else max(penalty, (1.0 - tokens) / self._rate)
            if take and wait <= 0.0:
                tokens -= 1.0
            conn.execute(_B.update().where(_B.c.system == self.system).values(tokens=tokens, updated_at=now))
        return float(wait)

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
        try:
            self._take(False)  # make sure the row exists and is refilled to now
            now = time.time()
            with write(self.engine) as conn:
                conn.execute(_B.update().where(_B.c.system == self.system).values(
                    blocked_until=sa.func.max(_B.c.blocked_until, now + seconds) if not self._postgres else
                    sa.func.greatest(_B.c.blocked_until, now + seconds),
                    tokens=sa.func.min(_B.c.tokens, 1.0 - seconds * self._rate) if not self._postgres else
                    sa.func.least(_B.c.tokens, 1.0 - seconds * self._rate)))
        except sa.exc.SQLAlchemyError as exc:
            log.warning("rate_limit.shared_unavailable", system=self.system, error=str(exc).splitlines()[0])

    def snapshot(self) -> dict[str, Any]:
        try:
            with read(self.engine) as conn:
                row = conn.execute(sa.select(_B).where(_B.c.system == self.system)).first()
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

    def __init__(self, engine: Engine, failures: int, reset: float, name: str) -> None:
        super().__init__(failures, reset, name=name)
        self.engine = engine
        self._synced = 0.0
        self._closed_at = 0.0  # when this process last saw the circuit close: older openings are stale
        _ensure(engine)

    def _write(self, opened_at: float | None) -> None:
        try:
            with write(self.engine) as conn:
                stmt = insert_for(conn, _C)
                conn.execute(stmt.on_conflict_do_update(
                    index_elements=[_C.c.system], set_={"opened_at": opened_at, "updated_at": time.time()})
                    .values(system=self.name, opened_at=opened_at, updated_at=time.time()))
        except sa.exc.SQLAlchemyError as exc:
            log.warning("circuit.shared_unavailable", system=self.name, error=str(exc).splitlines()[0])

    def _sync(self) -> None:
        now = time.time()
        if now - self._synced < SYNC_SECONDS:
            return
        self._synced = now
        try:
            with read(self.engine) as conn:
                row = conn.execute(sa.select(_C.c.opened_at).where(_C.c.system == self.name)).first()
        except sa.exc.SQLAlchemyError:
            return
        if row is None:
            return
        with self._lock:
            if row.opened_at is not None and float(row.opened_at) <= self._closed_at:
                stale = True  # an opening this process has already seen closed (a late or failed write)
            else:
                stale = False
            if row.opened_at is not None and self._state == "closed" and not stale:
                # another process opened it: so is it here, with the same probe time
                self._state, self._opened_at, self._probe_started = "open", float(row.opened_at), None
                log.info("circuit opened by another process", system=self.name)
            elif row.opened_at is None and self._state != "closed":
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

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def limiter(self, system: str, requests: int, per: float) -> RateLimiter:
        return SharedRateLimiter(self.engine, system, requests, per)

    def breaker(self, system: str, failures: int, reset: float) -> CircuitBreaker:
        return SharedCircuitBreaker(self.engine, failures, reset, name=system)


def shared_factories(engine: Engine) -> _Factories:
    """Limiters and breakers whose budgets and circuit state live in the journal's database, shared by every
    process (and host) of one bus."""
    return _Factories(engine)
