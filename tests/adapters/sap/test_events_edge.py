"""Business events through the bus's real webhook edge: an Event Mesh push is journaled and routed (202);
bad credentials, bodies and event types are refused with the right 4xx and nothing is journaled."""

from __future__ import annotations

import base64
import json
import textwrap
from pathlib import Path

import httpx

from adapters.sap import SapAdapter
from adapters.stub import StubAdapter
from bus.runtime import Runtime, RuntimeOptions
from tests.helpers.wait import wait_until

from .conftest import Gateway
from .test_contract import EVENT_PASSWORD, EVENT_USER


def test_business_events_on_the_webhook_edge(gateway: Gateway, tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text(textwrap.dedent(f"""\
        version: 1
        systems:
          s4:
            adapter: sap
            settings:
              url: {gateway.url}
              auth: {{type: basic, username: u, password: p}}
              events: {{username: {EVENT_USER}, password: {EVENT_PASSWORD}}}
          scm: {{adapter: stub}}
        routes:
          - name: sap-events
            from: s4.business_events
            filter: "object == 'salesorder'"
            to: [scm.take]
        """))
    from bus.config import load_config

    config = load_config(routes)
    scm = StubAdapter("scm", {})
    runtime = Runtime(config, journal=f"sqlite:///{tmp_path}/ib.sqlite",
                      options=RuntimeOptions(workers=1, port=0, triggers=False, lease_seconds=5),
                      adapters={"s4": SapAdapter("s4", config.systems["s4"].settings), "scm": scm})
    runtime.start()
    url = f"http://127.0.0.1:{runtime.port}/hooks/s4/business_events"
    good = "Basic " + base64.b64encode(f"{EVENT_USER}:{EVENT_PASSWORD}".encode()).decode()
    bad = "Basic " + base64.b64encode(f"{EVENT_USER}:nope-nope".encode()).decode()
    event = {"type": "sap.s4.beh.salesorder.v1.SalesOrder.Created.v1", "specversion": "1.0", "id": "e-1",
             "source": "/default/sap.s4.beh/244572008", "time": "2026-12-01T10:00:00Z",
             "data": {"SalesOrder": "4711"}}
    ce = {"content-type": "application/cloudevents+json"}
    try:
        answers = {
            "good": httpx.post(url, content=json.dumps(event), headers={**ce, "authorization": good}),
            "bad password": httpx.post(url, content=json.dumps(event), headers={**ce, "authorization": bad}),
            "no auth": httpx.post(url, content=json.dumps(event), headers=ce),
            "not json": httpx.post(url, content=b"{oops", headers={**ce, "authorization": good}),
            "foreign type": httpx.post(url, content=json.dumps({**event, "type": "com.example.thing"}),
                                       headers={**ce, "authorization": good}),
        }
        assert {k: v.status_code for k, v in answers.items()} == {
            "good": 202, "bad password": 401, "no auth": 401, "not json": 400, "foreign type": 422}
        assert EVENT_PASSWORD not in answers["bad password"].text
        wait_until(lambda: scm.calls, timeout=10, what="the routed business event")
        [(operation, call)] = scm.calls
        assert operation == "take" and call.payload["key"] == "4711" and call.event.key == "4711"
    finally:
        runtime.stop()
