from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bus.envelope import Event
from bus.journal import DeadLetter, DeliveryUpdate, Journal, idempotency_key, tables
from bus.journal.engine import write
from bus.ordering import SequenceGuard


def _event(key: str = "SO-1", sequence: int | None = None, **kw: object) -> Event:
    return Event(type="order.changed", source="crm", data={"order": key}, key=key, sequence=sequence, **kw)  # type: ignore[arg-type]


def _update(event: Event, status: str, attempt: int = 1, **kw: object) -> DeliveryUpdate:
    return DeliveryUpdate(idempotency_key(event.id, "r1", "scm.update"), event.id, "r1", "scm.update", status,
                          attempt, **kw)  # type: ignore[arg-type]


def test_record_events_is_idempotent_and_round_trips(journal: Journal) -> None:
    first = _event()
    journal.record_events([(first, "webhook")])
    # a re-sent event with the same id keeps its first record
    journal.record_events([(first.with_(data={"changed": True}), "webhook"), (_event("SO-2"), "poll")])
    assert journal.get_event(first.id) == first
    assert journal.get_event("missing") is None
    assert journal.status_counts()["events"] == 2
    with pytest.raises(ValueError, match="origin 'carrier-pigeon'"):
        journal.record_events([(_event(), "carrier-pigeon")])


def test_settle_upserts_state_and_appends_attempts(journal: Journal) -> None:
    event = _event()
    key = idempotency_key(event.id, "r1", "scm.update")
    journal.settle([_update(event, "parked", 1, error="503 busy", error_kind="transient", next_attempt_at=99.0)])
    row = journal.delivery(key)
    assert row is not None and (row.status, row.parks, row.last_error, row.next_attempt_at) == \
        ("parked", 1, "503 busy", 99.0)
    assert journal.delivered_keys([key]) == set()
    journal.settle([_update(event, "delivered", 2, reference="PO-9", payload={"qty": 3})])
    # a later redelivery reporting a failure must not undo the success
    journal.settle([_update(event, "pending", 3, error="late duplicate", error_kind="transient")])
    row = journal.delivery(key)
    assert row is not None
    assert (row.status, row.attempts, row.parks, row.reference, row.payload) == \
        ("delivered", 2, 1, "PO-9", {"qty": 3})
    assert row.delivered_at is not None
    assert journal.delivered_keys([key, "other"]) == {key}
    assert [(a.attempt, a.status) for a in journal.attempts_for(key)] == [(1, "transient"), (2, "ok"),
                                                                          (3, "transient")]


def _logged(journal: Journal) -> list[tuple[str, int, str]]:
    with write(journal.engine) as conn:
        return [(r.idempotency_key, r.attempt, r.status) for r in conn.execute(
            sa.select(tables.attempts).order_by(tables.attempts.c.id))]


def test_a_delivering_attempt_is_kept_on_its_delivery_row_not_in_the_attempt_log(journal: Journal) -> None:
    # Given a delivery that failed once, then deliveries that succeed at once, one of them traced
    failed, first, traced = _event("SO-1"), _event("SO-2"), _event("SO-3")
    keys = [idempotency_key(e.id, "r1", "scm.update") for e in (failed, first, traced)]
    journal.settle([_update(failed, "parked", 1, error="503", error_kind="transient", started_at=1.0)])
    # When all three succeed in one batch
    journal.settle([_update(failed, "delivered", 2, started_at=2.0, duration_ms=4.5),
                    _update(first, "delivered", 1, started_at=3.0, duration_ms=1.5),
                    _update(traced, "delivered", 1, started_at=4.0)], spans={keys[2]: ("ab" * 16, "cd" * 8)})
    # Then the log holds only the failure; each delivery's attempts read whole, in the order they started
    assert _logged(journal) == [(keys[0], 1, "transient")]
    assert [(a.attempt, a.status, a.started_at) for a in journal.attempts_for(keys[0])] == \
        [(1, "transient", 1.0), (2, "ok", 2.0)]
    [only] = journal.attempts_for(keys[1])
    assert (only.id, only.attempt, only.status, only.error, only.duration_ms) == (0, 1, "ok", None, 1.5)
    [spanned] = journal.attempts_for(keys[2])
    assert (spanned.trace_id, spanned.span_ids) == ("ab" * 16, "cd" * 8)


def test_a_second_success_of_a_delivered_delivery_is_logged(journal: Journal) -> None:
    # Given a delivered delivery, and another in the same batch that is new
    done, fresh = _event("SO-1"), _event("SO-2")
    done_key, fresh_key = (idempotency_key(e.id, "r1", "scm.update") for e in (done, fresh))
    journal.settle([_update(done, "delivered", 1, started_at=1.0)])
    # When both report a success (the first again: its lease ran out while it was being delivered)
    journal.settle([_update(done, "delivered", 2, started_at=5.0), _update(fresh, "delivered", 1, started_at=6.0)])
    # Then the first success stays on the row and the second is logged; nothing is lost for the new one either
    assert [(a.attempt, a.status, a.started_at) for a in journal.attempts_for(done_key)] == \
        [(1, "ok", 1.0), (2, "ok", 5.0)]
    assert [(a.attempt, a.started_at) for a in journal.attempts_for(fresh_key)] == [(1, 6.0)]
    row = journal.delivery(done_key)
    assert row is not None and (row.attempts, row.started_at) == (1, 1.0)


def test_settle_accepts_the_same_delivery_twice_in_one_batch(journal: Journal) -> None:
    event = _event()
    journal.settle([_update(event, "parked", 1, error="x", error_kind="transient"),
                    _update(event, "parked", 2, error="y", error_kind="transient"), _update(event, "delivered", 3)])
    row = journal.delivery(idempotency_key(event.id, "r1", "scm.update"))
    assert row is not None and (row.status, row.parks, row.attempts) == ("delivered", 2, 3)


def test_deliveries_and_events_queries_for_trace_and_replay(journal: Journal) -> None:
    a, b = _event("SO-1", correlationid="corr-1"), _event("SO-2")
    journal.record_events([(a, "webhook"), (b, "poll")])
    journal.settle([_update(a, "delivered"), _update(b, "dead", error="400", error_kind="permanent")])
    assert [e.id for e in journal.events_for(correlationid="corr-1")] == [a.id]
    assert [e.id for e in journal.events_for(key="SO-2")] == [b.id]
    assert {e.id for e in journal.events_for(route="r1")} == {a.id, b.id}
    assert journal.events_for(route="other") == []
    assert [e.id for e in journal.events_for(event_ids=[b.id])] == [b.id]
    assert journal.events_for(since=time.time() + 60) == []
    assert len(journal.events_for(limit=1)) == 1
    assert {d.status for d in journal.deliveries_for_events([a.id, b.id])} == {"delivered", "dead"}
    counts = journal.status_counts()
    assert counts["deliveries"] == {"r1": {"scm.update": {"delivered": 1, "dead": 1}}}


def test_the_applied_sequence_only_moves_forward(journal: Journal) -> None:
    guard = SequenceGuard(journal)
    guard.applied_many([("r1", "SO-1", 5)])
    guard.applied_many([("r1", "SO-1", 4)])  # an older version applied late must not move the mark back
    guard.applied_many([("r2", "SO-1", 1)])  # scopes are independent
    assert guard.last_many([("r1", "SO-1"), ("r2", "SO-1"), ("r1", "SO-2")]) == {("r1", "SO-1"): 5,
                                                                                   ("r2", "SO-1"): 1}
    guard.applied_many([("r1", "SO-1", 6)])
    assert guard.last_many([("r1", "SO-1")]) == {("r1", "SO-1"): 6}


def test_the_applied_sequence_is_race_free_across_processes(journal: Journal, journal_url: str) -> None:
    # Given four processes recording the same sequences of one key in different orders
    worker = Path(__file__).with_name("sequence_worker.py")
    procs = [subprocess.Popen([sys.executable, str(worker), journal_url, "r1", "SO-1", "60", str(seed)],
                              stdout=subprocess.PIPE, text=True) for seed in range(4)]
    for p in procs:
        p.communicate(timeout=120)
    assert all(p.returncode == 0 for p in procs)
    # Then the mark is the newest sequence, whatever the interleaving
    assert SequenceGuard(journal).last_many([("r1", "SO-1")]) == {("r1", "SO-1"): 60}


def test_prune_removes_only_settled_old_events(journal: Journal) -> None:
    settled, unsettled, dead, fresh = _event("A"), _event("B"), _event("C"), _event("D")
    journal.record_events([(e, "webhook") for e in (settled, unsettled, dead)])
    journal.settle([_update(settled, "delivered"), _update(unsettled, "parked", error="x", error_kind="transient"),
                    _update(dead, "dead", error="400", error_kind="permanent")])
    journal.dead_letter([DeadLetter(body=dead.encode(), reason="400", event_id=dead.id, route="r1")])
    journal.set_watermark("crm", "poll", "w", seen_keys=["k1"])
    with write(journal.engine) as conn:  # age everything written so far by ten days
        for table, column in ((tables.events, "received_at"), (tables.seen, "seen_at")):
            conn.execute(table.update().values({column: table.c[column] - 10 * 86400}))
    journal.record_events([(fresh, "webhook")])
    journal.settle([_update(fresh, "delivered")])

    counts = journal.prune(older_than_days=7)

    assert counts["events"] == 1 and counts["deliveries"] == 1 and counts["attempts"] == 1
    assert counts["seen"] == 1
    assert journal.get_event(settled.id) is None
    assert journal.delivery(idempotency_key(settled.id, "r1", "scm.update")) is None
    for kept in (unsettled, dead, fresh):
        assert journal.get_event(kept.id) is not None
    assert journal.filter_unseen("crm", "poll", ["k1"]) == ["k1"]
    # once the dead letter is purged its event is settled and goes too
    [letter] = journal.dead_letters()
    journal.mark_dead_letters([letter.id], "purged")
    journal.settle([_update(dead, "filtered")])
    assert journal.prune(older_than_days=7)["events"] == 1
    with journal.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(tables.events)).scalar() == 2


def test_delivered_keys_reads_only_the_asked_rows_on_a_table_without_statistics(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Given a PostgreSQL journal filled with delivered rows before any ANALYZE (as at the start of a drain),
    the worker's "already delivered?" lookup must read the rows it asks for, not every delivered row of the
    table: with a status condition in the query the planner once led with the (route, target, status) index
    and read them all on every batch, which cost more than the rest of the journal's work."""
    from bus.journal import sql as sql_helpers
    from tests.helpers.pg import pg_schema_url

    for url in pg_schema_url(postgres_url):
        journal = Journal(url)
        try:
            events = [_event(f"SO-{i}") for i in range(8000)]
            parked = events[-10:]
            for start in range(0, len(events), 2000):
                part = events[start:start + 2000]
                journal.record_events([(e, "send") for e in part])
                journal.settle([_update(e, "delivered") for e in part if e not in parked])
            journal.settle([_update(e, "parked", error="down", error_kind="transient") for e in parked])
            asked = [idempotency_key(e.id, "r1", "scm.update") for e in events[4000:4020]] + ["missing:r1:t"]
            statements: list[tuple[str, Any]] = []
            run_compiled = sql_helpers.run_compiled

            def seen(conn: Any, sql: str, params: Any, *, _seen: list[tuple[str, Any]] = statements,
                     _run: Any = run_compiled, **kw: Any) -> Any:  # the lookup runs on the driver
                _seen.append((sql, params))
                return _run(conn, sql, params, **kw)

            monkeypatch.setattr(sql_helpers, "run_compiled", seen)

            # When: the lookup runs
            found = journal.delivered_keys(asked + [idempotency_key(e.id, "r1", "scm.update") for e in parked])
            # Then: it answers exactly the delivered ones …
            assert found == set(asked[:20])
            # … and the database read no row it was not asked for
            lookup = [(sql, params) for sql, params in statements if "ib_deliveries" in sql]
            assert len(lookup) == 1
            with journal.engine.connect() as conn:
                plan = conn.exec_driver_sql("EXPLAIN (ANALYZE, FORMAT JSON) " + lookup[0][0], lookup[0][1]).scalar()
            nodes, removed = [plan[0]["Plan"]], 0
            while nodes:
                node = nodes.pop()
                removed += node.get("Rows Removed by Filter", 0) + node.get("Rows Removed by Index Recheck", 0)
                nodes.extend(node.get("Plans", []))
            assert removed == 0, plan
        finally:
            journal.close()


def test_a_worker_batch_settles_in_one_transaction(journal: Journal, monkeypatch: pytest.MonkeyPatch) -> None:
    """Delivery states, dead letters and per-key marks of one batch are committed together: a failure in the
    last of these writes leaves none of them behind (before, each was its own transaction)."""
    from bus.worker import Batch, Worker

    worker = Worker(pipeline=None, adapters={}, journal=journal, queue=None, door=None)  # type: ignore[arg-type]
    event = _event("SO-9", sequence=3)
    key = idempotency_key(event.id, "r1", "scm.update")
    batch = Batch(updates=[_update(event, "delivered")], applied=[("r1:scm.update", "SO-9", 3)],
                  letters=[DeadLetter(b"{}", "follow-up not emitted", event.id, "r1", "scm.update")],
                  digests={("r1:scm.update", "SO-9"): "abc"})

    def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError("the database went away")

    # Given the batch's last write fails
    monkeypatch.setattr(worker.sequences, "remember_digests", broken)
    with pytest.raises(RuntimeError, match="went away"):
        worker.settle_journal(batch)
    # Then nothing of the batch was kept
    assert journal.delivery(key) is None
    assert journal.count("dead") == 0
    assert SequenceGuard(journal).last_many([("r1:scm.update", "SO-9")]) == {}
    # When it is settled again (the queue hands the batch out again), all of it is kept
    monkeypatch.undo()
    worker.settle_journal(batch)
    row = journal.delivery(key)
    assert row is not None and row.status == "delivered"
    assert journal.count("dead") == 1
    assert SequenceGuard(journal).last_many([("r1:scm.update", "SO-9")]) == {("r1:scm.update", "SO-9"): 3}
    assert SequenceGuard(journal).last_digests([("r1:scm.update", "SO-9")]) == {("r1:scm.update", "SO-9"): "abc"}
