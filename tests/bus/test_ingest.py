from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bus.envelope import Event
from bus.errors import TransientError
from bus.ingest import Ingestor
from bus.journal import Journal
from bus.journal.unit import UnitOfWork
from bus.queue.base import Message
from bus.queue.embedded import EmbeddedQueue


class CountingJournal(Journal):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.calls = 0

    def record_events(self, events: Sequence[tuple[Event, str]], **kw: Any) -> None:
        self.calls += 1
        super().record_events(events, **kw)


class FailingQueue:
    def publish(self, messages: Sequence[Message]) -> None:
        raise TransientError("broker down")


def _drain(queue: EmbeddedQueue, count: int) -> list[Event]:
    events: list[Event] = []
    while len(events) < count:
        leases = queue.consume(500, 5.0)
        assert leases, "queue ran dry before every event arrived"
        events.extend(Event.decode(lease.message.body) for lease in leases)
        queue.ack_many(leases)
    return events


def test_concurrent_async_callers_share_group_commits(tmp_path: Path) -> None:
    journal = CountingJournal(f"sqlite:///{tmp_path}/ironbus.sqlite")
    queue = EmbeddedQueue(journal.engine)
    ingestor = Ingestor(journal, queue, max_wait=0.005)
    events = [Event(type="order.changed", source="crm", data={"n": n}, key=f"SO-{n % 7}") for n in range(300)]

    async def main() -> None:
        await asyncio.gather(*(ingestor.ingest_async([(event, "webhook")]) for event in events))

    asyncio.run(main())
    # every caller resolved only after its event was journaled and queued …
    assert all(journal.get_event(event.id) == event for event in events)
    received = _drain(queue, len(events))
    assert sorted(e.id for e in received) == sorted(e.id for e in events)
    assert all(Event.decode(event.encode()).key == event.key for event in received)
    # … and they were written in far fewer transactions than callers
    assert journal.calls < len(events) / 5
    ingestor.close()


class ThreadNotingJournal(Journal):
    """Notes the thread that journals each group."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.threads: list[int] = []

    def record_events(self, events: Sequence[tuple[Event, str]], **kw: Any) -> None:
        self.threads.append(threading.get_ident())
        super().record_events(events, **kw)


class ThreadNotingQueue(EmbeddedQueue):
    """Notes the thread that publishes each group."""

    def __init__(self, engine: sa.Engine) -> None:
        super().__init__(engine)
        self.threads: list[int] = []

    def publish(self, messages: Sequence[Message]) -> None:
        self.threads.append(threading.get_ident())
        super().publish(messages)

    def publish_within(self, unit: UnitOfWork, messages: Sequence[Message]) -> None:
        self.threads.append(threading.get_ident())
        super().publish_within(unit, messages)

    def publish_held(self, unit: UnitOfWork, messages: Sequence[Message]) -> None:
        self.threads.append(threading.get_ident())
        super().publish_held(unit, messages)


def test_async_callers_journal_and_queue_off_the_event_loop(tmp_path: Path) -> None:
    # The webhook server awaits ingest_async on its event loop: a blocking journal insert or queue publish
    # there would stall every other request, so both must run on another thread.
    journal = ThreadNotingJournal(f"sqlite:///{tmp_path}/ironbus.sqlite")
    queue = ThreadNotingQueue(journal.engine)
    ingestor = Ingestor(journal, queue)
    event = Event(type="t", source="s", data={"n": 1})

    async def main() -> int:
        await ingestor.ingest_async([(event, "webhook")])
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    ingestor.close()
    assert journal.get_event(event.id) == event
    assert len(journal.threads) == len(queue.threads) == 1
    assert loop_thread not in journal.threads + queue.threads


def test_sync_ingest_from_threads(tmp_path: Path) -> None:
    journal = Journal(f"sqlite:///{tmp_path}/ironbus.sqlite")
    queue = EmbeddedQueue(journal.engine)
    ingestor = Ingestor(journal, queue)
    events = [Event(type="t", source="s", data=n) for n in range(40)]
    threads = [threading.Thread(target=ingestor.ingest, args=([(e, "poll")],)) for e in events]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(_drain(queue, 40)) == 40
    ingestor.ingest([])  # nothing to do, returns at once
    ingestor.close()
    with pytest.raises(RuntimeError, match="closed"):
        ingestor.ingest([(events[0], "poll")])


def test_a_failed_publish_fails_every_caller_in_the_batch(tmp_path: Path) -> None:
    journal = Journal(f"sqlite:///{tmp_path}/ironbus.sqlite")
    ingestor = Ingestor(journal, FailingQueue(), max_wait=0.01)  # type: ignore[arg-type]

    async def main() -> list[BaseException | None]:
        return await asyncio.gather(*(ingestor.ingest_async([(Event(type="t", source="s"), "webhook")])
                                      for _ in range(10)), return_exceptions=True)

    results = asyncio.run(main())
    assert all(isinstance(r, TransientError) and "broker down" in str(r) for r in results)
    ingestor.close()


class CommitCountingJournal(Journal):
    """Counts the write transactions begun on its engine, as SQLite sees them (``BEGIN IMMEDIATE`` statements:
    the ingest thread begins its transactions on the driver, not through SQLAlchemy)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.writes = 0
        self.engine.dispose()  # connections opened by the migration have no trace callback

        def _trace(statement: str) -> None:
            if statement.startswith("BEGIN IMMEDIATE"):
                self.writes += 1

        @sa.event.listens_for(self.engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.set_trace_callback(_trace)


def test_embedded_groups_commit_events_and_messages_in_one_transaction(tmp_path: Path) -> None:
    # The embedded queue's rows live in the journal's database: a group's events and their messages commit
    # together, with no outbox row to insert and delete (one write per group, not three).
    journal = CommitCountingJournal(f"sqlite:///{tmp_path}/ironbus.sqlite")
    queue = EmbeddedQueue(journal.engine)
    ingestor = Ingestor(journal, queue)
    journal.writes = 0
    for n in range(5):
        ingestor.ingest([(Event(type="t", source="s", data={"n": n}), "send")])
    ingestor.close()
    assert journal.writes == 5
    assert len(_drain(queue, 5)) == 5
    with journal.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM ib_outbox")).scalar() == 0
    assert journal.status_counts()["events"] == 5
    journal.close()


class StalledQueue:
    """A broker that takes the messages and never confirms them, until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.published: list[Message] = []

    def publish(self, messages: Sequence[Message]) -> None:
        assert self.release.wait(30), "the test never released the stalled publish"
        self.published.extend(messages)


def test_a_webhook_caller_is_answered_in_time_while_the_store_stalls(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # A stalled publish must not hold the vendor's request past ANSWER_WITHIN: it gets a TransientError (503),
    # and the group, once it goes through, still stores the events (the resend will carry the same ids).
    monkeypatch.setattr("bus.ingest.ANSWER_WITHIN", 0.3)
    journal = Journal(f"sqlite:///{tmp_path}/ironbus.sqlite")
    queue = StalledQueue()
    ingestor = Ingestor(journal, queue)  # type: ignore[arg-type]
    event = Event(type="t", source="s")

    async def main() -> BaseException | None:
        try:
            await ingestor.ingest_async([(event, "webhook")])
        except TransientError as exc:
            return exc
        return None

    error = asyncio.run(main())
    assert isinstance(error, TransientError) and "not stored within 0.3s" in str(error)
    assert not queue.published  # answered while the publish was still held
    queue.release.set()
    ingestor.close()
    assert [Event.decode(m.body).id for m in queue.published] == [event.id]
    assert journal.get_event(event.id) == event
    journal.close()


def test_each_event_is_encoded_once_and_the_journal_and_queue_hold_the_same_bytes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = Journal(f"sqlite:///{tmp_path}/ironbus.sqlite")
    queue = EmbeddedQueue(journal.engine)
    ingestor = Ingestor(journal, queue)
    encoded: list[str] = []
    original = Event.encode
    monkeypatch.setattr(Event, "encode", lambda self: encoded.append(self.id) or original(self))
    events = [Event(type="order.changed", source="crm", data={"n": n, "lines": [{"sku": "A", "qty": n}]},
                    key=f"SO-{n}") for n in range(20)]
    ingestor.ingest([(event, "webhook") for event in events])
    ingestor.close()
    assert sorted(encoded) == sorted(event.id for event in events)  # once each, not once per store
    leases = queue.consume(50, 5.0)
    with journal.engine.connect() as conn:
        stored = dict(conn.execute(sa.text("SELECT id, body FROM ib_events")).all())
    assert {lease.message.body for lease in leases} == {bytes(body) for body in stored.values()}
    assert sorted((Event.decode(lease.message.body) for lease in leases), key=lambda e: e.id) == \
        sorted(events, key=lambda e: e.id)
    queue.ack_many(leases)


def test_record_events_refuses_bodies_that_do_not_match_the_events(tmp_path: Path) -> None:
    journal = Journal(f"sqlite:///{tmp_path}/ironbus.sqlite")
    event = Event(type="order.changed", source="crm", data={})
    with pytest.raises(ValueError, match="1 bodies for 2 events"):
        journal.record_events([(event, "webhook"), (event.with_(id="other"), "webhook")], bodies=[event.encode()])
