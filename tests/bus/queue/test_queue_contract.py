"""The Queue contract (bus/queue/base.py), one body per backend: embedded SQLite, embedded PostgreSQL, RabbitMQ."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

from queue_backends import Backend

from bus.queue.base import Lease, Message


def take(queue: Any, count: int, within: float = 10.0, batch: int = 50) -> list[Lease]:
    """Consume until ``count`` leases arrived or ``within`` seconds passed."""
    leases: list[Lease] = []
    deadline = time.monotonic() + within
    while len(leases) < count and time.monotonic() < deadline:
        leases.extend(queue.consume(min(batch, count - len(leases)), max(0.0, deadline - time.monotonic())))
    return leases


def test_publish_consume_ack_and_release_with_delay(backend: Backend) -> None:
    queue = backend.open()
    # Given three published messages, one pinned to a route and target with headers
    queue.publish([Message(b"one", key="A"), Message(b"two", key="B", route="r1", target="scm.update", parks=2,
                                                      headers={"trace": "t-1"}), Message(b"three")])
    # When they are consumed
    leases = take(queue, 3)
    by_body = {lease.message.body: lease for lease in leases}
    assert set(by_body) == {b"one", b"two", b"three"}
    two = by_body[b"two"].message
    assert (two.key, two.route, two.target, two.parks, two.headers) == ("B", "r1", "scm.update", 2, {"trace": "t-1"})
    assert all(lease.delivery_count == 1 for lease in leases)
    # Then acked ones are gone and a released one comes back only after its delay, counted as a redelivery
    by_body[b"one"].ack()
    by_body[b"three"].ack()
    released_at = time.monotonic()
    by_body[b"two"].release(1.0)
    assert queue.consume(10, 0.3) == []
    [again] = take(queue, 1)
    assert time.monotonic() - released_at >= 0.95
    assert again.message.body == b"two" and again.message.key == "B"
    assert again.delivery_count == 2
    again.ack()
    assert queue.consume(10, 0.3) == []
    assert queue.depth()["ready"] == 0


def test_per_key_order_with_four_concurrent_consumers(backend: Backend) -> None:
    queue = backend.open()
    keys = [f"SO-{k}" for k in range(12)]
    per_key = 15
    queue.publish([Message(f"{key}/{n}".encode(), key=key) for n in range(per_key) for key in keys])
    queue.publish([Message(f"free/{n}".encode()) for n in range(20)])  # keyless: unordered, never blocked
    seen: dict[str, list[int]] = {key: [] for key in keys}
    active: set[str] = set()
    violations: list[str] = []
    lock = threading.Lock()
    total = len(keys) * per_key + 20
    done = [0]

    def worker() -> None:
        rng = random.Random()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with lock:
                if done[0] >= total:
                    return
            for lease in queue.consume(5, 0.2):
                key, n = lease.message.body.decode().split("/")
                if key != "free":
                    with lock:
                        if key in active:
                            violations.append(f"{key} handed out twice at once")
                        active.add(key)
                time.sleep(rng.random() * 0.002)  # simulated work, lets consumers interleave
                if key != "free":
                    with lock:
                        seen[key].append(int(n))
                        active.discard(key)
                lease.ack()
                with lock:
                    done[0] += 1

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert violations == []
    assert done[0] == total
    assert all(seen[key] == list(range(per_key)) for key in keys), seen


def test_an_abandoned_lease_is_redelivered(backend: Backend) -> None:
    # Given a consumer that takes a message and dies without settling it
    crashed = backend.open(lease_seconds=0.5)
    crashed.publish([Message(b"survivor", key="K"), Message(b"behind", key="K")])
    [lease] = take(crashed, 1)
    assert lease.message.body == b"survivor"
    crashed.close()
    # Then another consumer gets it again (embedded: when the lease expires; RabbitMQ: when the channel
    # closes), before the message behind it on the same key
    survivor = backend.open(lease_seconds=30.0)
    [again] = take(survivor, 1, within=15.0)
    assert again.message.body == b"survivor"
    assert again.delivery_count >= 2
    again.ack()
    [behind] = take(survivor, 1)
    assert behind.message.body == b"behind"
    behind.ack()
