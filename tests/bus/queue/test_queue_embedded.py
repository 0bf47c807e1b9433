"""Embedded-queue specifics: lease ownership, extension, depth, keys blocked behind a delayed head."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bus.journal import Journal
from bus.queue.base import Message
from bus.queue.embedded import EmbeddedLease, EmbeddedQueue


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    return Journal(f"sqlite:///{tmp_path}/ironbus.sqlite")


def wait_for_lease(queue: EmbeddedQueue, within: float = 10.0) -> EmbeddedLease:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        leases = queue.consume(1, 0.5)
        if leases:
            assert isinstance(leases[0], EmbeddedLease)
            return leases[0]
    pytest.fail("no lease within the deadline")


def test_a_late_ack_does_not_delete_a_message_someone_else_reclaimed(journal: Journal) -> None:
    slow = EmbeddedQueue(journal.engine, lease_seconds=0.2, renew=False)  # a paused process renews nothing
    fast = EmbeddedQueue(journal.engine, lease_seconds=30)
    slow.publish([Message(b"m")])
    stale = wait_for_lease(slow)
    fresh = wait_for_lease(fast)  # after the slow consumer's lease expired
    assert fresh.delivery_count == 2
    stale.ack()  # too late: must not remove the message the fast consumer now holds
    assert fast.depth()["leased"] == 1
    fresh.ack()
    assert fast.depth() == {"ready": 0, "leased": 0, "delayed": 0}


def test_extend_keeps_a_long_delivery_leased(journal: Journal) -> None:
    queue = EmbeddedQueue(journal.engine, lease_seconds=0.3)
    queue.publish([Message(b"m")])
    lease = wait_for_lease(queue)
    assert lease.extend(30)
    other = EmbeddedQueue(journal.engine, lease_seconds=30)
    deadline = time.monotonic() + 0.6  # well past the original lease
    while time.monotonic() < deadline:
        assert other.consume(1, 0.1) == []
    lease.ack()
    assert not lease.extend(30)  # gone


def test_a_released_head_blocks_its_key_but_not_others(journal: Journal) -> None:
    queue = EmbeddedQueue(journal.engine)
    queue.publish([Message(b"a1", key="A"), Message(b"a2", key="A"), Message(b"b1", key="B")])
    first = queue.consume(10, 1.0)
    assert sorted(lease.message.body for lease in first) == [b"a1", b"b1"]
    a1 = next(lease for lease in first if lease.message.key == "A")
    a1.release(0.3, park=True)
    next(lease for lease in first if lease.message.key == "B").ack()
    assert queue.depth() == {"ready": 1, "leased": 0, "delayed": 1}
    again = wait_for_lease(queue)
    assert (again.message.body, again.message.parks, again.delivery_count) == (b"a1", 1, 2)
    again.ack()
    assert wait_for_lease(queue).message.body == b"a2"


def test_consume_wakes_as_soon_as_this_process_publishes(journal: Journal) -> None:
    import threading

    queue = EmbeddedQueue(journal.engine, max_poll_interval=5.0)  # a poll alone would take seconds
    waiting = threading.Event()
    wait = queue._changed.wait

    def observed_wait(timeout: float | None = None) -> bool:
        if timeout is not None and timeout >= 1.0:  # the back-off has grown: the consumer is asleep
            waiting.set()
        return wait(timeout)

    queue._changed.wait = observed_wait  # type: ignore[method-assign]
    got: list[float] = []

    def consumer() -> None:
        leases = queue.consume(1, 30.0)
        got.append(time.monotonic())
        queue.ack_many(leases)

    thread = threading.Thread(target=consumer)
    thread.start()
    assert waiting.wait(timeout=20), "the consumer never backed off to a long wait"
    published = time.monotonic()
    queue.publish([Message(b"now")])
    thread.join(timeout=30)
    assert got and got[0] - published < 0.9  # woken, not polled: its wait was at least 1 s long
