"""The worker and runtime end to end, one test body over each backend.

Given a routes.yaml whose targets are a real local HTTP sink (the generic ``http`` adapter), when events are
ingested and the runtime runs, then every delivery arrives, failures retry / park / dead-letter as the policy
says, and the journal tells the story.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bus.config import load_config
from bus.envelope import Event
from bus.journal import Journal
from bus.queue.base import Message
from bus.runtime import Runtime, RuntimeOptions
from bus.tracing import build_trace
from tests.helpers.backends import Backend
from tests.helpers.routes import enqueue, orders, run_until_idle, write_routes
from tests.helpers.sink import Sink


def test_events_flow_through_a_two_hop_chain(tmp_path: Path, backend: Backend) -> None:
    with Sink("ok") as sink:
        routes = write_routes(tmp_path, sink.url)
        events = orders(60)
        run_until_idle(routes, backend, events)
        # every order reached the SCM, and every follow-up reached the SRM
        assert len(sink.keys()) == 120
        assert {k for k in sink.keys() if k.endswith(":demand:scm.update_demand")} == {
            f"{e.id}:demand:scm.update_demand" for e, _ in events}
        demand_key = f"{events[7][0].id}:demand:scm.update_demand"
        assert sink.bodies[demand_key] == {"order_id": "SO-7", "quantity": 7.5, "revision": 1}
    journal = Journal(backend.journal)
    try:
        chain = build_trace(journal, key="SO-7")[0]
        types = [e["type"] for e in chain["events"]]
        assert types == ["crm.order_changed", "procurement.requested"]
        assert chain["events"][1]["causationid"] == chain["events"][0]["id"]
        assert [d["status"] for e in chain["events"] for d in e["deliveries"]] == ["delivered", "delivered"]
    finally:
        journal.close()


def test_randomly_failing_sink_gets_everything_eventually(tmp_path: Path, backend: Backend) -> None:
    with Sink("random", seed=11) as sink:
        routes = write_routes(tmp_path, sink.url, attempts=2)
        events = orders(80)
        run_until_idle(routes, backend, events, timeout=120)
        assert len(sink.keys()) == 160, f"missing deliveries; failures seen: {dict(sink.failures)}"
        assert sink.failures["503"] > 0 and sink.failures["429"] > 0  # the failure modes really happened
    journal = Journal(backend.journal)
    try:
        assert journal.count("dead") == 0
    finally:
        journal.close()


def test_permanent_failures_are_dead_lettered_and_redriven(tmp_path: Path, backend: Backend) -> None:
    from cli import main

    with Sink("permanent") as sink:
        routes = write_routes(tmp_path, sink.url)
        run_until_idle(routes, backend, orders(25))
        journal = Journal(backend.journal)
        try:
            letters = journal.dead_letters(limit=100)
            assert len(letters) == 25
            assert all(r.route == "demand" and r.target == "scm.update_demand" and "400" in r.reason
                       for r in letters)
        finally:
            journal.close()
        assert not sink.keys()
        # Given the system is fixed, one command re-drives every dead letter
        sink.mode = "ok"
        args = ["dlq", "retry", "--journal", backend.journal]
        if backend.broker:
            args += ["--broker", backend.broker]
        assert main(args) == 0
        run_until_idle(routes, backend, [])
        assert len(sink.keys()) == 50  # 25 demands and their 25 follow-ups


def test_poison_messages_are_dead_lettered_and_the_next_event_flows(tmp_path: Path, backend: Backend) -> None:
    with Sink("ok") as sink:
        routes = write_routes(tmp_path, sink.url)
        runtime = Runtime(routes, journal=backend.journal, broker=backend.broker,
                          options=RuntimeOptions(workers=2, port=None, triggers=False, lease_seconds=5))
        runtime.start()
        try:
            runtime.queue.publish([Message(body=b"\x00not json{")])
            runtime.ingest([(Event(type="crm.order_changed", source="t", data={"number": "SO-X", "qty": "abc"}),
                             "send")])
            runtime.ingest(orders(3))
            assert runtime.wait_idle(timeout=60)
        finally:
            runtime.stop()
        assert len(sink.keys()) == 6
    journal = Journal(backend.journal)
    try:
        reasons = sorted(r.reason for r in journal.dead_letters())
        assert len(reasons) == 2
        assert any(r.startswith("undecodable") for r in reasons)
        assert any("number()" in r and "abc" in r for r in reasons)
        assert any(r.body == b"\x00not json{" for r in journal.dead_letters())
    finally:
        journal.close()


def test_stale_sequence_is_recorded_not_delivered(tmp_path: Path, backend: Backend) -> None:
    with Sink("ok") as sink:
        routes = write_routes(tmp_path, sink.url)
        newer = Event(type="crm.order_changed", source="t", data={"number": "SO-1", "qty": "2", "rev": 5})
        older = Event(type="crm.order_changed", source="t", data={"number": "SO-1", "qty": "1", "rev": 4})
        run_until_idle(routes, backend, [(newer, "send")])
        run_until_idle(routes, backend, [(older, "send")])
        assert f"{newer.id}:demand:scm.update_demand" in sink.keys()
        assert f"{older.id}:demand:scm.update_demand" not in sink.keys()
    journal = Journal(backend.journal)
    try:
        row = journal.delivery(f"{older.id}:demand:scm.update_demand")
        assert row is not None and row.status == "stale"
    finally:
        journal.close()


def test_shadow_route_journals_without_delivering(tmp_path: Path, backend: Backend) -> None:
    with Sink("ok") as sink:
        routes = write_routes(tmp_path, sink.url, mode="shadow")
        events = orders(3)
        run_until_idle(routes, backend, events)
        assert not sink.keys()
    journal = Journal(backend.journal)
    try:
        row = journal.delivery(f"{events[1][0].id}:demand:scm.update_demand")
        assert row is not None and row.status == "shadow"
        assert row.payload == {"order_id": "SO-1", "quantity": 1.5, "revision": 1}
    finally:
        journal.close()


def test_replay_skips_what_succeeded_unless_forced(tmp_path: Path, backend: Backend) -> None:
    from cli import main

    with Sink("ok") as sink:
        routes = write_routes(tmp_path, sink.url)
        events = orders(2)
        run_until_idle(routes, backend, events)
        first = f"{events[0][0].id}:demand:scm.update_demand"
        assert sink.delivered[first] == 1
        base = ["--journal", backend.journal, "--routes", str(routes)] + (
            ["--broker", backend.broker] if backend.broker else [])
        assert main(["replay", events[0][0].id, "--route", "demand", *base]) == 0
        run_until_idle(routes, backend, [])
        assert sink.delivered[first] == 1
        assert main(["replay", events[0][0].id, "--route", "demand", "--force", *base]) == 0
        run_until_idle(routes, backend, [])
        assert sink.delivered[first] == 2


def test_the_routes_fixture_itself_is_valid(tmp_path: Path) -> None:
    # the routes file used above is itself valid: a cheap guard against a fixture typo hiding behind skips
    routes = write_routes(tmp_path, "http://127.0.0.1:9")
    config = load_config(routes)
    assert [r.name for r in config.routes] == ["demand", "procurement"]


def test_skip_unchanged_delivers_a_payload_once_per_key_until_it_changes(tmp_path: Path) -> None:
    # Given a route with skip_unchanged: an echo (same content again) is recorded, not delivered
    with Sink("ok") as sink:
        routes = write_routes(tmp_path, sink.url)
        text = routes.read_text().replace("    key: order_id\n", "    key: order_id\n    skip_unchanged: true\n", 1)
        routes.write_text(text)
        backend = Backend("embedded-sqlite", f"sqlite:///{tmp_path}/var/ironbus.sqlite", None)
        first = Event(type="crm.order_changed", source="t", data={"number": "SO-1", "qty": "2", "rev": 1})
        echo = Event(type="crm.order_changed", source="t", data={"number": "SO-1", "qty": "2", "rev": 1})
        change = Event(type="crm.order_changed", source="t", data={"number": "SO-1", "qty": "3", "rev": 2})
        for event in (first, echo, change):
            run_until_idle(routes, backend, [(event, "send")])
        demand = ":demand:scm.update_demand"
        assert {f"{first.id}{demand}", f"{change.id}{demand}"} <= sink.keys()
        assert f"{echo.id}{demand}" not in sink.keys()
    journal = Journal(backend.journal)
    try:
        row = journal.delivery(f"{echo.id}{demand}")
        assert row is not None and row.status == "unchanged"
    finally:
        journal.close()


def test_a_parked_delivery_holds_back_later_events_of_its_key(tmp_path: Path, backend: Backend) -> None:
    # Revision 1 of an order cannot be delivered (the target is down) and parks. Revision 2 arrives meanwhile:
    # it must not overtake (which would leave revision 1 to be applied last, or to be thrown away as stale).
    # It waits behind the parked one without calling the target, and both go, in order, once the target is up.
    from tests.helpers.wait import wait_until

    with Sink("down") as sink:
        routes = write_routes(tmp_path, sink.url, attempts=1)
        first, second = (Event(type="crm.order_changed", source="ironbus/test", key="SO-1",
                               data={"number": "SO-1", "qty": f"{rev}", "rev": rev}) for rev in (1, 2))
        k1, k2 = (f"{e.id}:demand:scm.update_demand" for e in (first, second))
        runtime = Runtime(routes, journal=backend.journal, broker=backend.broker,
                          options=RuntimeOptions(workers=2, port=None, triggers=False, lease_seconds=5))
        runtime.start()
        try:
            journal = runtime.journal
            runtime.ingest([(first, "send")])
            wait_until(lambda: (d := journal.delivery(k1)) is not None and d.status == "parked", timeout=20,
                       what="revision 1 to park")
            runtime.ingest([(second, "send")])
            wait_until(lambda: (d := journal.delivery(k2)) is not None and d.status == "parked", timeout=20,
                       what="revision 2 to be held")
            held = journal.delivery(k2)
            assert held is not None and held.last_error is not None and k1 in held.last_error, held
            assert held.parks == 0  # waiting is not a failed attempt: it does not use up max_parks
            assert {a.status for a in journal.attempts_for(k2)} == {"skipped"}  # the target never saw it
            assert k2 not in sink.keys()

            sink.mode = "ok"
            wait_until(lambda: {k1, k2} <= sink.keys(), timeout=30, what="both revisions delivered")
            assert [k for k in sink.arrival_order if k in (k1, k2)] == [k1, k2]
            # the journal records each delivery just after the target answered it: wait for that; none is stale
            wait_until(lambda: [getattr(journal.delivery(k), "status", None) for k in (k1, k2)]
                       == ["delivered", "delivered"], timeout=10, what="both deliveries journaled as delivered")
        finally:
            runtime.stop()


@pytest.mark.parametrize("backend", ["embedded-sqlite", "rabbitmq"], indirect=True)
def test_a_batch_sends_its_first_attempts_together(tmp_path: Path, backend: Backend) -> None:
    """Given one worker and 16 queued orders for an http target, the first attempts go out together after one
    probe call (the sink sees several requests in flight at once) and each delivery happens exactly once."""
    with Sink("ok", company=4) as sink:
        routes = write_routes(tmp_path, sink.url)
        events = orders(16)
        enqueue(backend.journal, backend.broker, events)
        runtime = Runtime(routes, journal=backend.journal, broker=backend.broker,
                          options=RuntimeOptions(workers=1, batch_size=32, port=None, triggers=False))
        runtime.start()
        try:
            assert runtime.wait_idle(timeout=60), runtime.queue.depth()
        finally:
            runtime.stop()
        # both hops of every order arrived, once each
        assert len(sink.delivered) == 32 and set(sink.delivered.values()) == {1}
        # and a one-worker bus had several of them in flight at the same time
        assert sink.max_in_flight >= 4
