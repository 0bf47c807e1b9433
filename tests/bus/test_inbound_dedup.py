"""A resent webhook request is the same event, across processes sharing a journal (issue 12, items 10-11).

Two real runtimes (two "hosts") on one PostgreSQL journal and queue, each serving webhooks on its own port:
the same request posted to both, and again after a 503-style resend, is accepted with the same event ids and
delivered once; the same body after the dedup window is a new event.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bus.inbound import inbound_event_ids
from bus.runtime import Runtime, RuntimeOptions
from tests.helpers.pg import pg_schema_url
from tests.helpers.sink import Sink
from tests.helpers.wait import wait_until

TOKEN = "dedup-token-0123456"


@pytest.fixture
def journal(postgres_url: str) -> Iterator[str]:
    yield from pg_schema_url(postgres_url, prefix="ibh_dedup")


def test_a_resent_request_is_delivered_once_whichever_process_takes_it(tmp_path: Path, journal: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    with Sink("ok") as sink:
        routes = tmp_path / "routes.yaml"
        routes.write_text(textwrap.dedent(f"""\
            systems:
              vendor: {{adapter: webhook, settings: {{signature: {{scheme: token, secret: {TOKEN}}}, key: id}}}}
              scm:
                adapter: http
                settings: {{base_url: {sink.url}, operations: {{put: {{method: POST, path: /put}}}}}}
            routes:
              - {{name: r, from: vendor.received, to: [scm.put]}}
            """))
        hosts = [Runtime(routes, journal=journal, options=RuntimeOptions(workers=1, port=0, triggers=False))
                 for _ in range(2)]
        for host in hosts:
            host.start()
        try:
            body = b'{"id": "SO-1", "qty": 3}'
            answers = [httpx.post(f"http://127.0.0.1:{host.port}/hooks/vendor/received/{TOKEN}", content=body,
                                  headers={"content-type": "application/json"}, timeout=10)
                       for host in [*hosts, hosts[0]]]
            assert [a.status_code for a in answers] == [202, 202, 202]
            assert len({tuple(a.json()["accepted"]) for a in answers}) == 1
            wait_until(lambda: len(sink.delivered) == 1, timeout=30, what="the delivery")
            assert all(h.wait_idle(timeout=30) for h in hosts)
            assert list(sink.delivered.values()) == [1]
            # after the window the same body is a new change
            monkeypatch.setattr("bus.inbound.DEDUP_WINDOW", 0.001)
            later = httpx.post(f"http://127.0.0.1:{hosts[1].port}/hooks/vendor/received/{TOKEN}", content=body,
                               headers={"content-type": "application/json"}, timeout=10)
            assert later.json()["accepted"] != answers[0].json()["accepted"]
            wait_until(lambda: len(sink.delivered) == 2, timeout=30, what="the later change's delivery")
        finally:
            for host in hosts:
                host.stop()


def test_ids_are_stable_within_a_window_and_differ_by_body_endpoint_and_position() -> None:
    a = inbound_event_ids("crm", "received", b"x", 2, now=1000.0, window=3600)
    assert a == inbound_event_ids("crm", "received", b"x", 2, now=1500.0, window=3600)
    assert a[0] != a[1]
    assert a != inbound_event_ids("crm", "received", b"y", 2, now=1000.0, window=3600)
    assert a != inbound_event_ids("erp", "received", b"x", 2, now=1000.0, window=3600)
    assert a != inbound_event_ids("crm", "received", b"x", 2, now=4000.0, window=3600)
