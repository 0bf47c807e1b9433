"""The console over HTTP, without a browser: authentication, roles, CSRF, no secret rendered, audited
actions, clear 4xx answers for bad input, and the console off unless configured."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from bus.errors import ConfigError
from bus.webconsole import Auth, hash_password, verify_password
from bus.webconsole.masking import MASK, masked
from tests.console.conftest import OPERATOR_TOKEN, READONLY_TOKEN, SECRET, ConsoleBus


def _client(bus: ConsoleBus, token: str) -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=bus.url.removesuffix("/console"), follow_redirects=False, timeout=10)
    answer = client.post("/console/login", data={"secret": token})
    assert answer.status_code == 303, answer.text
    page = client.get("/console/dlq").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    assert csrf is not None
    return client, csrf.group(1)


def _dead(bus: ConsoleBus, number: str = "SO-1") -> int:
    bus.sink.mode = "permanent"
    bus.ingest_order(number)
    assert bus.runtime.wait_idle(timeout=30)
    rows = bus.runtime.journal.dead_letters()
    assert rows
    return rows[-1].id


def test_every_page_needs_a_login(console_bus: ConsoleBus) -> None:
    client = httpx.Client(base_url=console_bus.url.removesuffix("/console"), timeout=10)
    for path in ("/console/search", "/console/tx/x", "/console/dlq", "/console/routes", "/console/systems",
                 "/console/queue", "/console/masterdata", "/console/audit"):
        answer = client.get(path, follow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"] == "/console/login", path
    assert client.post("/console/dlq/retry", data={"ids": "1"}).status_code == 401
    assert client.post("/console/login", data={"secret": "wrong-token-0123456789"}).status_code == 401
    assert client.get("/console/search", headers={"Cookie": "ib_console=forged.forged"},
                      follow_redirects=False).status_code == 303
    # the webhook app still answers beside it
    assert client.get("/ping").text == "pong"


def test_retry_needs_csrf_and_the_operator_role(console_bus: ConsoleBus) -> None:
    letter = _dead(console_bus)
    console_bus.sink.mode = "ok"
    reader, reader_csrf = _client(console_bus, READONLY_TOKEN)
    assert reader.post("/console/dlq/retry", data={"ids": str(letter), "csrf": reader_csrf}).status_code == 403
    operator, csrf = _client(console_bus, OPERATOR_TOKEN)
    assert operator.post("/console/dlq/retry", data={"ids": str(letter)}).status_code == 403, "no CSRF token"
    assert operator.post("/console/dlq/retry", data={"ids": str(letter), "csrf": "x" * 32}).status_code == 403
    assert operator.post("/console/dlq/retry", data={"ids": str(letter), "csrf": csrf},
                         headers={"Origin": "https://evil.example"}).status_code == 403
    assert console_bus.runtime.journal.dead_letter_by_id(letter).state == "dead"
    answer = operator.post("/console/dlq/retry", data={"ids": str(letter), "csrf": csrf})
    assert answer.status_code == 303
    assert console_bus.runtime.journal.dead_letter_by_id(letter).state == "retried"
    assert console_bus.sink.wait_for(2, timeout=30)
    audit = operator.get("/console/audit").text
    assert "dead_letter.retry" in audit and "token:operator" in audit


def test_edit_is_journaled_and_bad_json_is_a_400(console_bus: ConsoleBus) -> None:
    letter = _dead(console_bus)
    operator, csrf = _client(console_bus, OPERATOR_TOKEN)
    bad = operator.post(f"/console/dlq/{letter}/edit", data={"data": "{not json", "csrf": csrf})
    assert bad.status_code == 400 and "not JSON" in bad.text
    good = operator.post(f"/console/dlq/{letter}/edit",
                         data={"data": '{"number": "SO-1", "qty": "7,5", "rev": 1}', "csrf": csrf, "and_retry": "0"})
    assert good.status_code == 303
    page = operator.get(f"/console/dlq/{letter}").text
    assert "dead_letter.edit" in page and "7,5" in page and "2,5" in page  # after and before
    from bus.journal.consoledata import audit_rows

    row = audit_rows(console_bus.runtime.journal, subject=f"dead_letter:{letter}")[0]
    assert row["actor"] == "token:operator" and row["detail"]["before"]["qty"] == "2,5"
    assert row["detail"]["after"]["qty"] == "7,5"
    assert operator.get("/console/dlq/999999").status_code == 404
    assert operator.get("/console/search?status=bogus").status_code == 400
    assert operator.get("/console/search?since=yesterday").status_code == 400


def test_purge_asks_for_confirmation(console_bus: ConsoleBus) -> None:
    letter = _dead(console_bus)
    operator, csrf = _client(console_bus, OPERATOR_TOKEN)
    ask = operator.post("/console/dlq/purge", data={"ids": str(letter), "csrf": csrf})
    assert ask.status_code == 200 and "confirm-purge" in ask.text
    assert console_bus.runtime.journal.dead_letter_by_id(letter).state == "dead"
    done = operator.post("/console/dlq/purge", data={"ids": str(letter), "csrf": csrf, "confirm": "yes"})
    assert done.status_code == 303
    assert console_bus.runtime.journal.dead_letter_by_id(letter).state == "purged"


def test_no_secret_is_rendered(console_bus: ConsoleBus) -> None:
    client, _ = _client(console_bus, READONLY_TOKEN)
    page = client.get("/console/systems")
    assert page.status_code == 200 and "erp" in page.text
    assert SECRET not in page.text and MASK in page.text
    assert "circuit closed" in page.text and "50 per 1.0 s" in page.text  # the live protections of the srm
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert OPERATOR_TOKEN not in page.text and READONLY_TOKEN not in page.text


def test_masking_rules() -> None:
    settings = {"base_url": "https://user:pw@example.com/api", "auth": {"type": "oauth2", "client_secret": "x"},
                "api_key": "k", "operations": {"a": {"path": "/x"}}, "password": ""}
    shown = masked(settings)
    assert shown["auth"] == MASK and shown["api_key"] == MASK
    assert shown["base_url"] == f"https://{MASK}@example.com/api"
    assert shown["operations"] == {"a": {"path": "/x"}}


def test_passwords_and_users_file(tmp_path: Path) -> None:
    stored = hash_password("correct horse battery")
    assert stored.startswith("scrypt$") and "correct" not in stored
    assert verify_password("correct horse battery", stored)
    assert not verify_password("wrong", stored)
    users = tmp_path / "users.yaml"
    users.write_text(f"users:\n  alice: {{role: operator, password: '{stored}'}}\n")
    auth = Auth.from_env(users, environ={})
    session = auth.login("alice", "correct horse battery")
    assert session is not None and session.operator
    assert auth.login("alice", "nope") is None and auth.login("bob", "correct horse battery") is None
    assert auth.session(auth.cookie(session)) == session
    users.write_text("users:\n  alice: {role: operator, password: plain}\n")
    with pytest.raises(ConfigError, match="never a plain password"):
        Auth.from_env(users, environ={})
    with pytest.raises(ConfigError, match="needs authentication"):
        Auth.from_env(None, environ={})
    with pytest.raises(ConfigError, match="too short"):
        Auth.from_env(None, environ={"IRONBUS_CONSOLE_TOKEN": "short"})


def test_off_unless_configured(tmp_path: Path) -> None:
    from bus.runtime import Runtime, RuntimeOptions
    from tests.helpers.routes import write_routes

    runtime = Runtime(write_routes(tmp_path, "http://127.0.0.1:9"), journal=f"sqlite:///{tmp_path}/j.sqlite",
                      options=RuntimeOptions(workers=1, port=0, triggers=False))
    runtime.start()
    try:
        answer = httpx.get(f"http://127.0.0.1:{runtime.port}/console/search", timeout=10)
        assert answer.status_code == 404
    finally:
        runtime.stop()


def test_ironbus_console_alone_over_a_journal(tmp_path: Path) -> None:
    import os
    import socket
    import subprocess
    import sys

    from tests.helpers.wait import wait_until

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "IRONBUS_CONSOLE_TOKEN": OPERATOR_TOKEN}
    proc = subprocess.Popen([sys.executable, str(root / "cli.py"), "console", "--journal",
                             f"sqlite:///{tmp_path}/j.sqlite", "--port", str(port)], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def up() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/console/login", timeout=1).status_code == 200
        except httpx.HTTPError:
            return proc.poll() is not None

    try:
        wait_until(up, timeout=30, what="ironbus console to listen")
        assert proc.poll() is None
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
        assert client.post("/console/login", data={"secret": OPERATOR_TOKEN}).status_code == 303
        assert client.get("/console/routes").status_code == 200  # no routes file: the page says so
        assert client.get("/", follow_redirects=False).headers["location"] == "/console/search"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    refused = subprocess.run([sys.executable, str(root / "cli.py"), "console", "--journal",
                              f"sqlite:///{tmp_path}/j.sqlite"], cwd=tmp_path, capture_output=True, text=True,
                             env={k: v for k, v in os.environ.items() if not k.startswith("IRONBUS_CONSOLE")})
    assert refused.returncode == 2 and "needs authentication" in refused.stderr


def test_metrics_cover_the_views(console_bus: ConsoleBus) -> None:
    from bus import metrics
    from bus.journal import gauges

    _dead(console_bus)
    runtime = console_bus.runtime
    gauges.refresh(runtime.journal, runtime.queue, {"scm": {"rate_limit": {"tokens": 4.5}, "circuit": {"trips": 2}}},
                   every=0.0)
    text = metrics.render().decode()
    assert 'ironbus_dead_letters{route="demand"} 1.0' in text
    assert 'ironbus_rate_limit_tokens{system="scm"} 4.5' in text
    assert 'ironbus_circuit_trips{system="scm"} 2.0' in text
    assert "ironbus_queue_oldest_seconds" in text and "ironbus_parked_deliveries" in text
    assert 'ironbus_deliveries_total{route="demand",status="dead",target="scm.update_demand"}' in text


def test_grafana_dashboard_reads_only_metrics_the_bus_exports() -> None:
    import json

    from bus.metrics import Metrics

    dashboard = json.loads((Path(__file__).resolve().parents[2] / "docs" / "grafana" / "ironbus.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs
    metrics = Metrics()
    exported = {m.name for m in metrics.registry.collect()}
    for expr in exprs:
        for name in re.findall(r"ironbus_[a-z_]+", expr):
            base = re.sub(r"_(bucket|total|count|sum)$", "", name)
            assert base in exported, f"{name} in the dashboard is not a metric of bus/metrics.py"


def test_master_data_check_and_link_from_the_console(tmp_path: Path) -> None:
    """xref check against systems that list their customers, and a problem linked away from its row."""
    import textwrap

    from adapters.base import Adapter, MasterRecord
    from bus.plugins import register
    from bus.runtime import Runtime, RuntimeOptions

    class Directory(Adapter):
        name = "test_directory"
        settings_schema = {"type": "object", "additionalProperties": True}

        def master_data(self, entity: str) -> list[MasterRecord] | None:
            if entity != "customer":
                return None
            return [MasterRecord(id=f"{self.system.upper()}-7", code="VAT-7", name="Acme")]

    register("test_directory", Directory)
    routes = tmp_path / "routes.yaml"
    routes.write_text(textwrap.dedent("""\
        systems:
          crm: {adapter: test_directory}
          scm: {adapter: test_directory}
        routes: []
        """))
    auth = Auth(tokens={OPERATOR_TOKEN: "operator"})
    runtime = Runtime(routes, journal=f"sqlite:///{tmp_path}/j.sqlite",
                      options=RuntimeOptions(workers=1, port=0, triggers=False, console=auth))
    runtime.start()
    try:
        bus = ConsoleBus(runtime, None, f"http://127.0.0.1:{runtime.port}/console")  # type: ignore[arg-type]
        client, csrf = _client(bus, OPERATOR_TOKEN)
        runtime.journal.xref.link("customer", "C-7", "crm", "CRM-7")
        report = client.post("/console/masterdata/check", data={"csrf": csrf})
        assert report.status_code == 200
        assert "unlinked" in report.text and "SCM-7" in report.text and "missing" in report.text
        fixed = client.post("/console/masterdata/link", data={"csrf": csrf, "entity": "customer", "canonical": "C-7",
                                                                 "system": "scm", "system_id": "SCM-7"})
        assert fixed.status_code == 303
        assert runtime.journal.xref.lookup("customer", "scm", "SCM-7") == "C-7"
        again = client.post("/console/masterdata/check", data={"csrf": csrf})
        assert "Consistent" in again.text
        audit = client.get("/console/audit").text
        assert "xref.link" in audit and "xref.check" in audit
    finally:
        runtime.stop()


def test_guessing_logins_is_throttled(console_bus: ConsoleBus) -> None:
    client = httpx.Client(base_url=console_bus.url.removesuffix("/console"), timeout=10)
    answers = [client.post("/console/login", data={"secret": f"guess-{i:020d}"}).status_code for i in range(12)]
    assert answers[:10] == [401] * 10 and answers[10:] == [429, 429]
    assert client.post("/console/login", data={"secret": OPERATOR_TOKEN}).status_code == 429, "even the right one"


def test_each_attempt_shows_its_spans_linked_to_the_tracing_tool(traced_console_bus: ConsoleBus) -> None:
    """With tracing on, each attempt's span ids are journaled and shown, linked by the configured template;
    with tracing off nothing is stored."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from bus import telemetry
    from tests.console.conftest import TRACING_URL

    bus = traced_console_bus
    untraced = bus.ingest_order("SO-OFF")
    assert bus.runtime.wait_idle(timeout=30)
    exporter = InMemorySpanExporter()
    telemetry.configure([], processor=SimpleSpanProcessor(exporter))
    try:
        traced = bus.ingest_order("SO-ON")
        assert bus.runtime.wait_idle(timeout=30)
    finally:
        telemetry.shutdown()
    delivers = [s for s in exporter.get_finished_spans() if s.name.startswith("deliver ")]
    assert len(delivers) == 2  # scm, then srm by the follow-up
    journal = bus.runtime.journal
    off = [a for d in journal.deliveries_for_events([untraced]) for a in journal.attempts_for(d.idempotency_key)]
    assert off and all(a.trace_id is None and a.span_ids is None for a in off), "tracing off stores nothing"
    reader, _ = _client(bus, READONLY_TOKEN)
    page = reader.get(f"/console/tx/{traced}").text
    for span in delivers:
        trace_id, span_id = f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"
        link = TRACING_URL.replace("{trace_id}", trace_id).replace("{{ span_id }}", span_id)
        assert f'<a href="{link}" rel="noopener">{span_id}</a>' in page
    assert "uiFind" not in reader.get(f"/console/tx/{untraced}").text.split("open in tracing")[-1]
