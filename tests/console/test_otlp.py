"""OpenTelemetry end to end: a webhook with a W3C traceparent enters ``ironbus run``, is delivered to an SCM
whose answer becomes a follow-up delivered to an SRM, and a real OTLP/HTTP receiver gets one connected trace
covering the three systems; the outbound requests carry the delivery spans' traceparent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bus import telemetry
from bus.envelope import Event
from tests.helpers.otlp import OtlpReceiver
from tests.helpers.sink import Sink
from tests.helpers.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]
INBOUND_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
INBOUND_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def sink() -> Iterator[Sink]:
    with Sink() as s:
        yield s


def _routes(tmp_path: Path, sink_url: str) -> Path:
    routes = tmp_path / "routes.yaml"
    routes.write_text(textwrap.dedent(f"""\
        systems:
          crm:
            adapter: webhook
            settings:
              signature: {{scheme: token, secret: t0ken-for-test, header: X-Hook-Token}}
          scm:
            adapter: http
            settings:
              base_url: {sink_url}
              operations:
                update_demand: {{method: POST, path: /demand}}
          srm:
            adapter: http
            settings:
              base_url: {sink_url}
              operations:
                create_po: {{method: POST, path: /po}}
        routes:
          - name: demand
            from: crm.received
            key: order
            to:
              - {{operation: scm.update_demand, emit: procurement.requested}}
          - name: procurement
            from: procurement.requested
            to: [srm.create_po]
        """))
    return routes


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_one_connected_trace_through_three_systems(tmp_path: Path, sink: Sink) -> None:
    routes = _routes(tmp_path, sink.url)
    port = _free_port()
    with OtlpReceiver() as receiver:
        env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100",
               "OTEL_SERVICE_NAME": "ironbus-test"}
        env.pop("OTEL_SDK_DISABLED", None)
        env.pop("OTEL_TRACES_EXPORTER", None)
        bus = subprocess.Popen(
            [sys.executable, str(ROOT / "cli.py"), "run", "--routes", str(routes), "--port", str(port),
             "--journal", f"sqlite:///{tmp_path}/j.sqlite", "--workers", "1", "--log-format", "json",
             "--log-level", "debug"],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_until(lambda: _ready(port) or bus.poll() is not None, timeout=30, what="the bus to be ready")
            assert bus.poll() is None, bus.stderr.read() if bus.stderr else ""
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/hooks/crm/received", data=b'{"order": "SO-77", "qty": 3}',
                headers={"Content-Type": "application/json", "X-Hook-Token": "t0ken-for-test",
                         "traceparent": f"00-{INBOUND_TRACE}-{INBOUND_SPAN}-01"}, method="POST")
            with urllib.request.urlopen(request, timeout=10) as answer:
                assert answer.status == 202
            wait_until(lambda: len(sink.delivered) == 2, timeout=30, what="both deliveries at the sink")
        finally:
            bus.send_signal(signal.SIGTERM)
            _, logs = bus.communicate(timeout=60)
        wait_until(lambda: sum(s.name.startswith("deliver") for s in receiver.spans) >= 2, timeout=10,
                   what="the delivery spans at the OTLP receiver")

    spans = receiver.spans
    assert {s.trace_id for s in spans} == {INBOUND_TRACE}, "every span belongs to the inbound trace"
    by_id = {s.span_id: s for s in spans}
    ingests = [s for s in spans if s.name.startswith("ingest ")]
    first = next(s for s in ingests if s.attributes["ironbus.origin"] == "webhook")
    assert first.parent_span_id == INBOUND_SPAN
    assert first.service == "ironbus-test"
    deliver_scm = next(s for s in spans if s.name == "deliver demand → scm.update_demand")
    deliver_srm = next(s for s in spans if s.name == "deliver procurement → srm.create_po")
    assert deliver_scm.parent_span_id == first.span_id
    follow = next(s for s in ingests if s.attributes["ironbus.origin"] == "followup")
    assert follow.parent_span_id == deliver_scm.span_id, "the follow-up is a child of the delivery that caused it"
    assert deliver_srm.parent_span_id == follow.span_id
    assert {s.name for s in spans} >= {"route demand", "route procurement"}
    # every span reaches the inbound span through its parents: one connected tree
    for span in spans:
        seen = span
        for _ in range(10):
            if seen.parent_span_id == INBOUND_SPAN:
                break
            seen = by_id[seen.parent_span_id]
        else:
            raise AssertionError(f"span {span.name} is not connected to the inbound one")
    assert {deliver_scm.attributes["ironbus.system"], deliver_srm.attributes["ironbus.system"],
            first.attributes["ironbus.source"]} == {"scm", "srm", "ironbus/crm"}
    # the outbound requests carried the delivery spans' context
    sent = {h["traceparent"] for h in sink.headers.values()}
    assert sent == {f"00-{INBOUND_TRACE}-{deliver_scm.span_id}-01", f"00-{INBOUND_TRACE}-{deliver_srm.span_id}-01"}
    # the structured logs carry the trace id
    assert f'"trace_id": "{INBOUND_TRACE}"' in logs or f'"trace_id":"{INBOUND_TRACE}"' in logs, logs[-2000:]
    # each attempt's journaled ids are its exported span's, and `ironbus trace` lists them
    journaled = _journaled_spans(f"sqlite:///{tmp_path}/j.sqlite")
    assert journaled == {(s.attributes["ironbus.idempotency_key"], INBOUND_TRACE, s.span_id)
                         for s in (deliver_scm, deliver_srm)}
    trace = subprocess.run([sys.executable, str(ROOT / "cli.py"), "trace", "--journal",
                            f"sqlite:///{tmp_path}/j.sqlite", "--key", "SO-77"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, check=True).stdout
    for span in (deliver_scm, deliver_srm):
        assert f"trace {INBOUND_TRACE} span {span.span_id}" in trace, trace


def _journaled_attempts(url: str) -> list[Any]:
    """Every attempt the journal holds: its attempt log and the delivering attempts on the delivery rows."""
    import sqlalchemy as sa

    from bus.journal import Journal, tables

    journal = Journal(url)
    try:
        with journal.engine.connect() as conn:
            keys = list(conn.execute(sa.select(tables.deliveries.c.idempotency_key)).scalars())
        return [a for key in keys for a in journal.attempts_for(key)]
    finally:
        journal.close()


def _journaled_spans(url: str) -> set[tuple[str, str, str]]:
    """(idempotency key, trace id, span id) of every span id the journal holds for its attempts."""
    return {(a.idempotency_key, a.trace_id, span) for a in _journaled_attempts(url) if a.span_ids
            for span in a.span_ids.split()}


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def test_off_by_default_and_by_the_standard_switches() -> None:
    assert telemetry.enabled is False
    assert telemetry.configure_from_env({}) is False
    assert telemetry.configure_from_env({"OTEL_SDK_DISABLED": "true",
                                         "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}) is False
    assert telemetry.configure_from_env({"OTEL_TRACES_EXPORTER": "none",
                                         "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}) is False
    assert telemetry.enabled is False


def test_trace_id_follows_the_transaction() -> None:
    event = Event(type="a", source="s")
    follow = event.caused("b", "s", {})
    assert telemetry.trace_id_for(event) == telemetry.trace_id_for(follow)
    assert len(telemetry.trace_id_for(event)) == 32
    inbound = telemetry.with_inbound([event], {"traceparent": f"00-{INBOUND_TRACE}-{INBOUND_SPAN}-01"})[0]
    assert telemetry.trace_id_for(inbound) == INBOUND_TRACE
    bad = telemetry.with_inbound([event], {"traceparent": "00-zz-1-01"})[0]
    assert bad is event


def test_calls_sent_together_carry_their_own_span(tmp_path: Path, sink: Sink) -> None:
    """Several first attempts to one http operation go out at once (call_many): each request still carries the
    traceparent of its own delivery span, and each follow-up continues its own order's trace."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from bus.runtime import Runtime, RuntimeOptions
    from tests.helpers.routes import orders, write_routes

    exporter = InMemorySpanExporter()
    telemetry.configure([], processor=SimpleSpanProcessor(exporter))
    try:
        runtime = Runtime(write_routes(tmp_path, sink.url), journal=f"sqlite:///{tmp_path}/j.sqlite",
                          options=RuntimeOptions(workers=1, batch_size=32, port=None, triggers=False))
        batch = orders(6)
        runtime.ingest(batch)  # queued before the worker starts: one batch, sent together
        runtime.start()
        try:
            assert runtime.wait_idle(timeout=30)
        finally:
            runtime.stop()
    finally:
        telemetry.shutdown()
    spans = exporter.get_finished_spans()
    delivers = {f"00-{s.context.trace_id:032x}-{s.context.span_id:016x}-01": s for s in spans
                if s.name.startswith("deliver ")}
    assert len(delivers) == 12  # 6 orders x (scm, then srm by the follow-up)
    assert any(s.attributes.get("ironbus.grouped") for s in delivers.values()), "the scm calls went together"
    sent = [h["traceparent"] for h in sink.headers.values()]
    assert sorted(sent) == sorted(delivers), "every request carried its own delivery span"
    for event, _ in batch:
        trace = telemetry.trace_id_for(event)
        mine = [s for s in spans if f"{s.context.trace_id:032x}" == trace]
        assert {s.name for s in mine} >= {"ingest crm.order_changed", "route demand",
                                          "deliver demand → scm.update_demand", "ingest procurement.requested",
                                          "deliver procurement → srm.create_po"}


def test_bulk_calls_get_a_span_per_delivery(tmp_path: Path) -> None:
    """A batch route's bulk call: one delivery span per item, failed items marked, follow-ups not needed."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import StatusCode

    from tests.bus.test_bulk import run
    from tests.helpers.routes import orders

    exporter = InMemorySpanExporter()
    telemetry.configure([], processor=SimpleSpanProcessor(exporter))
    try:
        events = orders(5)
        events[1] = (events[1][0].with_(data={"number": "SO-bad", "qty": "refuse"}), "send")
        _, journal = run(tmp_path, events)
        journal.close()
    finally:
        telemetry.shutdown()
    spans = [s for s in exporter.get_finished_spans() if s.name == "deliver bulk → erp.upsert"]
    assert len(spans) == 5 and all(s.attributes["ironbus.grouped"] for s in spans)
    failed = [s for s in spans if s.status.status_code == StatusCode.ERROR]
    assert [s.attributes["ironbus.event_id"] for s in failed] == [events[1][0].id]
    for span in spans:
        assert f"{span.context.trace_id:032x}" == telemetry.trace_id_for(
            next(e for e, _ in events if e.id == span.attributes["ironbus.event_id"]))


def test_journaled_attempt_ids_are_the_exported_spans(tmp_path: Path) -> None:
    """Under failures (503, 429, timeouts; quick retries and parks), every delivery attempt's span is journaled
    with the attempt-log row of its pass (a pass's quick retries: several ids), and only those."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from bus.runtime import Runtime, RuntimeOptions
    from tests.helpers.routes import orders, write_routes

    exporter = InMemorySpanExporter()
    url = f"sqlite:///{tmp_path}/j.sqlite"
    with Sink(mode="random") as sink:
        telemetry.configure([], processor=SimpleSpanProcessor(exporter))
        try:
            runtime = Runtime(write_routes(tmp_path, sink.url), journal=url,
                              options=RuntimeOptions(workers=2, port=None, triggers=False))
            runtime.ingest(orders(20))
            runtime.start()
            try:
                assert runtime.wait_idle(timeout=60)
            finally:
                runtime.stop()
        finally:
            telemetry.shutdown()
    exported = {(s.attributes["ironbus.idempotency_key"], f"{s.context.trace_id:032x}", f"{s.context.span_id:016x}")
                for s in exporter.get_finished_spans() if s.name.startswith("deliver ")}
    assert len(exported) >= 40  # 20 orders x (scm, srm), and the retries
    assert _journaled_spans(url) == exported
    counts = [len(a.span_ids.split()) for a in _journaled_attempts(url) if a.span_ids]
    assert max(counts) > 1, "some pass made quick retries: its row holds each of their spans"
