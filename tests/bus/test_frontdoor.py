"""The front door (bus.frontdoor) and the unit of work a worker batch settles in (bus.settle)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bus import metrics
from bus.envelope import Event
from bus.frontdoor import FrontDoor, Pinned
from bus.journal import Journal
from bus.journal.records import DeadLetter, DeliveryUpdate, idempotency_key
from bus.queue.embedded import EmbeddedQueue
from bus.worker import Batch, Worker


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal(f"sqlite:///{tmp_path}/j.sqlite")
    yield j
    j.close()


def _submitted(origin: str) -> float:
    value = metrics.default().registry.get_sample_value("ironbus_events_submitted_total", {"origin": origin})
    return value or 0.0


def test_new_events_are_journaled_and_queued_and_pinned_work_only_queued(journal: Journal) -> None:
    queue = EmbeddedQueue(journal.engine, max_poll_interval=0.01)
    door = FrontDoor(journal, queue)
    try:
        before = _submitted("send"), _submitted("parked")
        # When a new event and a pinned re-drive of it come in
        event = Event(type="order.changed", source="crm", data={"n": 1}, key="SO-1")
        door.submit([event], "send")
        door.submit([Pinned(event.encode(), event.key, "r1", "scm.update", parks=2)], "parked")
        # Then the event is journaled once, and both are queued, the second pinned with its park count
        assert journal.get_event(event.id) == event
        assert len(journal.events_for(event_ids=[event.id])) == 1
        first = queue.consume(10, timeout=1.0)
        assert [(lease.message.route, lease.message.target) for lease in first] == [(None, None)]
        queue.ack_many(first)
        second = queue.consume(10, timeout=1.0)
        assert [(m.route, m.target, m.parks) for m in (lease.message for lease in second)] == \
            [("r1", "scm.update", 2)]
        assert (_submitted("send"), _submitted("parked")) == (before[0] + 1, before[1] + 1)
    finally:
        door.close()


def test_unknown_origins_are_refused(journal: Journal) -> None:
    door = FrontDoor(journal, EmbeddedQueue(journal.engine))
    try:
        with pytest.raises(ValueError, match="origin"):
            door.submit([Event(type="t", source="s", data={})], "parked")  # a new event cannot be 'parked'
        with pytest.raises(ValueError, match="origin"):
            door.submit([Pinned(b"{}", None, "r1")], "webhook")  # re-queued work is not a webhook
    finally:
        door.close()


def test_a_batch_settles_its_rows_follow_ups_and_acks_in_one_unit_of_work(
        journal: Journal, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a consumed message and the batch that settles it: a delivery, a dead letter and a follow-up
    queue = EmbeddedQueue(journal.engine, max_poll_interval=0.01)
    door = FrontDoor(journal, queue)
    worker = Worker(pipeline=None, adapters={}, journal=journal, queue=queue, door=door)  # type: ignore[arg-type]
    try:
        event = Event(type="order.changed", source="crm", data={"n": 1}, key="SO-1")
        door.submit([event], "send")
        leases = queue.consume(10, timeout=1.0)
        key = idempotency_key(event.id, "r1", "scm.update")
        follow = event.caused("order.synced", "scm", {"n": 1})
        batch = Batch(updates=[DeliveryUpdate(key, event.id, "r1", "scm.update", "delivered")],
                      letters=[DeadLetter(b"{}", "follow-up not emitted", event.id, "r1", "scm.update")],
                      followups=[(follow, "followup")])

        def broken(*_: Any, **__: Any) -> None:
            raise RuntimeError("the database went away")

        # When the last write of the unit fails
        monkeypatch.setattr(worker.sequences, "remember_digests", broken)
        with pytest.raises(RuntimeError, match="went away"):
            worker.settle_journal(batch, leases)
        # Then nothing is kept: no state, no letter, no follow-up in the journal or the queue, no ack
        assert journal.delivery(key) is None
        assert journal.count("dead") == 0
        assert journal.get_event(follow.id) is None
        assert queue.depth() == {"ready": 0, "leased": 1, "delayed": 0}
        # When the batch is settled again (the leases are still held: the failed unit did not settle them)
        monkeypatch.undo()
        worker.settle_journal(batch, leases)
        # Then all of it is kept together: the state, the letter, the follow-up (journaled and queued), the ack
        row = journal.delivery(key)
        assert row is not None and row.status == "delivered"
        assert journal.count("dead") == 1
        assert journal.get_event(follow.id) is not None
        queued = queue.consume(10, timeout=1.0)
        assert [Event.decode(lease.message.body).id for lease in queued] == [follow.id]
    finally:
        door.close()
