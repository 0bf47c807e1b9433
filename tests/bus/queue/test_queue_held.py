"""Held messages: what the ingestor publishes is claimed by its own process as it is inserted, and handed to
that process's consumers from memory — only where a claim would have handed it out at once."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from bus.journal import Journal
from bus.queue.base import Lease, Message
from bus.queue.embedded import EmbeddedLease, EmbeddedQueue
from tests.helpers.pg import pg_schema_url


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    journal = Journal(f"sqlite:///{tmp_path}/ironbus.sqlite")
    yield journal
    journal.close()


def _publish(journal: Journal, queue: EmbeddedQueue, messages: Sequence[Message]) -> None:
    with journal.unit() as unit:
        queue.publish_held(unit, messages)


def _consuming(queue: EmbeddedQueue, batch: int = 10) -> None:
    """A consumer of ``queue`` asks for messages (and finds none): from now on the queue holds for it."""
    assert queue.consume(batch, 0.0) == []


def _bodies(leases: Sequence[Lease]) -> list[bytes]:
    return [lease.message.body for lease in leases]


def _count_claims(queue: EmbeddedQueue) -> list[int]:
    """Wraps ``queue``'s claim statement; the returned list gets one entry per claim it runs."""
    claim, claims = queue._rows.claim, []

    def counted(*args: Any, **kw: Any) -> Any:
        claims.append(1)
        return claim(*args, **kw)

    queue._rows.claim = counted  # type: ignore[method-assign]
    return claims


def test_held_messages_reach_this_process_without_a_claim_and_are_durable(journal: Journal) -> None:
    # Given a process whose consumer is consuming, and another process sharing the journal
    mine, other = EmbeddedQueue(journal.engine), EmbeddedQueue(journal.engine)
    _consuming(mine)
    claims = _count_claims(mine)
    # When this process publishes three messages of distinct keys
    _publish(journal, mine, [Message(b"a", key="A"), Message(b"b", key="B"), Message(b"n")])
    # Then its consumer gets them from memory, claimed once, and the other process cannot take them
    leases = mine.consume(10, 1.0)
    assert _bodies(leases) == [b"a", b"b", b"n"] and claims == []
    assert all(isinstance(x, EmbeddedLease) and x.delivery_count == 1 for x in leases)
    assert mine.depth() == {"ready": 0, "leased": 3, "delayed": 0}
    assert other.consume(10, 0.2) == []
    # and acking them deletes their rows, as for any claimed row
    mine.ack_many(leases)
    assert mine.depth() == {"ready": 0, "leased": 0, "delayed": 0}
    mine.close()
    other.close()


def test_a_key_with_a_row_already_queued_is_not_held_and_keeps_its_order(journal: Journal) -> None:
    # Given a consuming process and a key A with a message queued already (ready, not yet claimed)
    queue = EmbeddedQueue(journal.engine)
    _consuming(queue)
    queue.publish([Message(b"a1", key="A")])
    # When two more of key A and one of key B are published together
    _publish(journal, queue, [Message(b"a2", key="A"), Message(b"b1", key="B"), Message(b"a3", key="A")])
    # Then only B is held, and A's rows are handed out after a1, in order
    assert _bodies(list(queue._held)) == [b"b1"]
    order: list[bytes] = []
    deadline = time.monotonic() + 10
    while len(order) < 4 and time.monotonic() < deadline:
        for lease in queue.consume(10, 0.5):
            order.append(lease.message.body)
            lease.ack()
    assert [b for b in order if b.startswith(b"a")] == [b"a1", b"a2", b"a3"] and b"b1" in order
    queue.close()


def test_only_the_first_message_of_a_key_in_one_publish_is_held(journal: Journal) -> None:
    queue = EmbeddedQueue(journal.engine)
    _consuming(queue)
    _publish(journal, queue, [Message(b"a1", key="A"), Message(b"a2", key="A")])
    first = queue.consume(10, 1.0)
    assert _bodies(first) == [b"a1"]
    assert queue.consume(10, 0.2) == []  # a2 waits behind the held a1
    first[0].ack()
    [second] = queue.consume(10, 1.0)
    assert second.message.body == b"a2"
    second.ack()
    queue.close()


def test_nothing_is_held_without_a_consumer_and_at_most_two_batches_ahead(journal: Journal) -> None:
    # Given a process that only receives (no consumer has asked for messages)
    receiver, worker = EmbeddedQueue(journal.engine), EmbeddedQueue(journal.engine)
    _publish(journal, receiver, [Message(b"x")])
    # Then its message is ready for any process's consumer
    assert _bodies(worker.consume(10, 1.0)) == [b"x"]
    # And a process whose consumer takes batches of 2 holds 4 of 6 at most; the rest stay ready
    _consuming(receiver, batch=2)
    _publish(journal, receiver, [Message(str(i).encode()) for i in range(6)])
    assert receiver.held() == 4
    assert receiver.depth()["ready"] == 2
    receiver.close()
    worker.close()


def test_close_hands_back_what_no_consumer_took(journal: Journal) -> None:
    mine, other = EmbeddedQueue(journal.engine), EmbeddedQueue(journal.engine)
    _consuming(mine)
    _publish(journal, mine, [Message(b"m", key="K")])
    mine.close()
    [lease] = other.consume(10, 1.0)  # at once, not after the lease would have run out
    assert (lease.message.body, lease.delivery_count) == (b"m", 2)  # handed back, as a released claim is
    lease.ack()
    other.close()


def test_a_killed_process_held_messages_come_back_when_their_leases_expire(journal: Journal) -> None:
    # Given a process that held a message and then stopped renewing (killed: it never closes)
    paused = EmbeddedQueue(journal.engine, lease_seconds=0.3, renew=False)
    _consuming(paused)
    _publish(journal, paused, [Message(b"m", key="K")])
    # Then another process gets it once the lease ran out, counted as a second delivery
    other = EmbeddedQueue(journal.engine)
    deadline = time.monotonic() + 10
    leases: list[Lease] = []
    while not leases and time.monotonic() < deadline:
        leases = other.consume(10, 0.5)
    assert [(x.message.body, x.delivery_count) for x in leases] == [(b"m", 2)]
    leases[0].ack()
    other.close()


def test_on_postgresql_nothing_is_held(postgres_url: str) -> None:
    for url in pg_schema_url(postgres_url, prefix="ibh"):
        journal = Journal(url)
        try:
            mine, other = EmbeddedQueue(journal.engine), EmbeddedQueue(journal.engine)
            _consuming(mine)
            _publish(journal, mine, [Message(b"p", key="P")])
            assert mine.held() == 0
            assert _bodies(other.consume(10, 1.0)) == [b"p"]
            mine.close()
            other.close()
        finally:
            journal.close()
