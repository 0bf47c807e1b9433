"""Streaming reads of the journal (keyset-paginated chunks) and the bulk loops built on them: replay and dlq retry."""

from __future__ import annotations

import time

import sqlalchemy as sa

from bus.envelope import Event
from bus.frontdoor import FrontDoor
from bus.journal import DeadLetter, Journal, tables
from bus.journal.engine import write
from bus.journal.stream import (
    EventSelection,
    LetterSelection,
    count_dead_letters,
    count_events,
    dead_letter_chunks,
    event_chunks,
    missing_events,
)
from bus.queue.embedded import EmbeddedQueue
from bus.replay import replay_events, retry_dead_letters
from bus.tracing import build_trace


def _events(journal: Journal, n: int, *, key: str = "SO-1") -> list[Event]:
    events = [Event(type="order.changed", source="crm", data={"n": i}, key=key) for i in range(n)]
    # one record_events call: every event shares one received_at, so the order rests on the id alone
    journal.record_events([(e, "webhook") for e in events])
    return events


def test_event_chunks_cover_every_event_once_in_order_across_equal_timestamps(journal: Journal) -> None:
    events = _events(journal, 23) + _events(journal, 4, key="SO-2")
    chunks = list(event_chunks(journal.engine, EventSelection(), chunk=5))
    assert [len(c) for c in chunks] == [5, 5, 5, 5, 5, 2]
    seen = [e.id for c in chunks for e in c]
    assert len(seen) == len(set(seen)) == 27 and set(seen) == {e.id for e in events}
    with journal.engine.connect() as conn:
        expected = list(conn.execute(sa.select(tables.events.c.id)
                                     .order_by(tables.events.c.received_at, tables.events.c.id)).scalars())
    assert seen == expected
    first = chunks[0][0]
    assert Event.decode(first.body).id == first.id  # the stored bytes, published as they are


def test_event_selection_filters_and_counts(journal: Journal) -> None:
    _events(journal, 3, key="A")
    b = _events(journal, 2, key="B")
    assert count_events(journal.engine, EventSelection(key="B")) == 2
    assert [e.id for c in event_chunks(journal.engine, EventSelection(key="B")) for e in c] == \
        sorted(e.id for e in b)
    assert count_events(journal.engine, EventSelection(until=time.time() - 3600)) == 0
    assert missing_events(journal.engine, [b[0].id, "nope"]) == {"nope"}


def test_replay_streams_every_event_once_and_journals_one_marker_per_batch(journal: Journal) -> None:
    events = _events(journal, 1203)
    door = FrontDoor(journal, EmbeddedQueue(journal.engine))
    assert replay_events(journal, door, EventSelection(since=time.time() - 60), route="r1") == 1203
    door.close()
    with journal.engine.connect() as conn:
        rows = conn.execute(sa.select(tables.queue.c.body, tables.queue.c.route)).all()
        markers = conn.execute(sa.select(tables.events.c.body)
                               .where(tables.events.c.type == "ironbus.replayed")).scalars().all()
    assert sorted(Event.decode(bytes(r.body)).id for r in rows) == sorted(e.id for e in events)
    assert {r.route for r in rows} == {"r1"}
    assert [Event.decode(bytes(m)).data["count"] for m in markers] == [500, 500, 203]  # not one row per event


def test_trace_shows_each_replayed_event_under_its_batch_marker_and_no_other(journal: Journal) -> None:
    early = _events(journal, 7, key="A")  # one received_at: every batch boundary falls on equal timestamps
    time.sleep(0.01)
    later = _events(journal, 5, key="B") + _events(journal, 4, key="A")
    door = FrontDoor(journal, EmbeddedQueue(journal.engine))
    assert replay_events(journal, door, EventSelection(key="A"), rate=30.0) == 11  # batches of 3
    door.close()
    for event in [*early, *later]:
        [chain] = build_trace(journal, event_id=event.id)
        marks = [e for e in chain["events"] if e["type"] == "ironbus.replayed"]
        if event.key == "A":
            assert [m["causationid"] for m in marks] == [event.id], event
        else:
            assert marks == []  # inside a batch's time range, but not of its selection
def test_replay_paces_to_the_rate_asked_for(journal: Journal) -> None:
    _events(journal, 30)
    started = time.monotonic()
    door = FrontDoor(journal, EmbeddedQueue(journal.engine))
    assert replay_events(journal, door, EventSelection(key="SO-1"), rate=100.0) == 30
    door.close()
    # batches of 10 (a tenth of a second's worth) leave at 0, 0.1 and 0.2 s
    assert time.monotonic() - started >= 0.19


def test_dead_letter_chunks_honour_filters_and_limit(journal: Journal) -> None:
    now = time.time()
    journal.dead_letter([DeadLetter(b"x", f"HTTP {500 + i % 2}", f"e{i}", "r1" if i < 30 else "r2", "t",
                                    created_at=now) for i in range(40)])
    sel = LetterSelection(route="r1", error="http 501")
    assert count_dead_letters(journal.engine, sel) == 15
    got = [r.id for c in dead_letter_chunks(journal.engine, sel, chunk=4) for r in c]
    assert len(got) == 15 and got == sorted(got)
    limited = LetterSelection(route="r1", limit=7)
    assert [len(c) for c in dead_letter_chunks(journal.engine, limited, chunk=3)] == [3, 3, 1]
    assert count_dead_letters(journal.engine, limited) == 7


def test_retry_re_queues_in_batches_and_marks_retried(journal: Journal) -> None:
    events = _events(journal, 3, key="K-1")
    with write(journal.engine) as conn:
        conn.execute(tables.dead_letters.insert(), [
            {"event_id": events[i % 3].id, "route": "r1", "target": "t", "reason": "boom", "error_kind": "permanent",
             "attempts": 1, "body": events[i % 3].encode(), "created_at": time.time(), "state": "dead"}
            for i in range(1100)])
    door = FrontDoor(journal, EmbeddedQueue(journal.engine))
    done = retry_dead_letters(journal, door, LetterSelection())
    door.close()
    assert done.count == 1100 and not done.followups
    assert journal.count("dead") == 0 and journal.count("retried") == 1100
    with journal.engine.connect() as conn:
        keys = conn.execute(sa.select(tables.queue.c.key).distinct()).scalars().all()
        assert conn.execute(sa.select(sa.func.count()).select_from(tables.queue)).scalar() == 1100
    assert keys == ["K-1"]  # each message keeps its event's ordering key
