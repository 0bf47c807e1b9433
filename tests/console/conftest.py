"""A running bus with its operator console, a real HTTP sink behind two of its systems, and tokens."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bus.runtime import Runtime, RuntimeOptions
from bus.webconsole import Auth
from tests.helpers.routes import write_routes
from tests.helpers.sink import Sink

OPERATOR_TOKEN = "operator-token-0123456789"
READONLY_TOKEN = "readonly-token-0123456789"
SECRET = "s3cr3t-never-rendered-42"


@dataclass
class ConsoleBus:
    runtime: Runtime
    sink: Sink
    url: str  # http://127.0.0.1:port/console

    def ingest_order(self, number: str, qty: str = "2,5", rev: int = 1) -> str:
        from bus.envelope import Event

        event = Event(type="crm.order_changed", source="ironbus/crm", data={"number": number, "qty": qty, "rev": rev})
        self.runtime.ingest([(event, "send")])
        return event.id


@pytest.fixture
def console_bus(tmp_path: Path) -> Iterator[ConsoleBus]:
    yield from _console_bus(tmp_path)


#: the tracing-tool link template of :func:`traced_console_bus`
TRACING_URL = "https://jaeger.example/trace/{trace_id}?uiFind={{ span_id }}"


@pytest.fixture
def traced_console_bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ConsoleBus]:
    """As :func:`console_bus`, with a link template to a tracing tool."""
    monkeypatch.setenv("IRONBUS_CONSOLE_TRACING_URL", TRACING_URL)
    yield from _console_bus(tmp_path)


def _console_bus(tmp_path: Path) -> Iterator[ConsoleBus]:
    with Sink() as sink:
        routes = write_routes(tmp_path, sink.url, attempts=1)
        # a system with a secret in its settings: the Systems page must never show it
        text = routes.read_text().replace("systems:\n", textwrap.indent(textwrap.dedent(f"""\
            erp:
              adapter: http
              settings:
                base_url: {sink.url}
                auth: {{type: bearer, token: {SECRET}}}
                operations:
                  ping: {{method: POST, path: /ping}}
            """), "  ").join(["systems:\n", ""]), 1)
        # protections on the SRM, for the Systems view
        text = text.replace("  srm:\n    adapter: http\n", "  srm:\n    adapter: http\n"
                            "    rate_limit: {requests: 50, per: 1s}\n    circuit_breaker: {failures: 5, reset: 30s}\n")
        routes.write_text(text)
        auth = Auth(tokens={OPERATOR_TOKEN: "operator", READONLY_TOKEN: "readonly"})
        runtime = Runtime(routes, journal=f"sqlite:///{tmp_path}/var/ironbus.sqlite",
                          options=RuntimeOptions(workers=2, port=0, triggers=False, lease_seconds=5, console=auth))
        runtime.start()
        try:
            yield ConsoleBus(runtime, sink, f"http://127.0.0.1:{runtime.port}/console")
        finally:
            runtime.stop()
