"""Rate-limit budgets and circuit state shared by every process on one journal (issue 12, item 10).

Two limiters / breakers standing for two processes (each its own object, as each process builds its own)
share one PostgreSQL journal: together they keep the vendor's limit once, a 429 pauses both, and a circuit
opened by one is open for the other, closed again by one successful probe.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from bus.journal import Journal
from bus.sharedstate import SYNC_SECONDS, SharedCircuitBreaker, SharedRateLimiter
from tests.helpers.pg import pg_schema_url
from tests.helpers.wait import wait_until


@pytest.fixture
def journal(postgres_url: str) -> Iterator[Journal]:
    for url in pg_schema_url(postgres_url, prefix="ibh_shared"):
        store = Journal(url)
        yield store
        store.close()


def test_two_processes_keep_one_budget(journal: Journal) -> None:
    limiters = [SharedRateLimiter(journal.rate_buckets, "hubspot", 10, 1.0) for _ in range(2)]
    taken: list[float] = []
    lock = threading.Lock()
    started = time.monotonic()

    def work(limiter: SharedRateLimiter) -> None:
        while time.monotonic() - started < 2.0:
            if limiter.acquire(timeout=0.5):
                with lock:
                    taken.append(time.monotonic() - started)

    threads = [threading.Thread(target=work, args=(limiter,)) for limiter in limiters for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    elapsed = max(taken)
    # a burst of 10, then 10 per second, for both processes together (each alone would allow as much)
    assert len(taken) <= 10 + 10 * elapsed + 1, (len(taken), elapsed)
    assert len(taken) >= 10 + 10 * elapsed * 0.5


def test_a_429_pauses_every_process(journal: Journal) -> None:
    told, other = (SharedRateLimiter(journal.rate_buckets, "crm", 100, 1.0) for _ in range(2))
    told.penalise(1.5)
    assert other.wait_time() > 1.0
    assert not other.acquire(timeout=0.2)


def test_a_circuit_opened_by_one_process_is_open_in_the_other(journal: Journal) -> None:
    a = SharedCircuitBreaker(journal.circuits, failures=2, reset=30, name="srm")
    b = SharedCircuitBreaker(journal.circuits, failures=2, reset=30, name="srm")
    assert b.allow()
    a.record_failure()
    a.record_failure()
    assert a.state == "open"
    wait_until(lambda: not b.allow(), timeout=SYNC_SECONDS * 6, what="the other process to see the circuit open")
    assert b.retry_at() == pytest.approx(a.retry_at(), abs=0.01)
    # one process's successful probe closes it everywhere
    a.record_success()
    wait_until(lambda: b.allow(), timeout=SYNC_SECONDS * 6, what="the other process to see it closed")
