"""The webhook server over real loopback HTTP: signatures, limits, status codes, ingest, probes, metrics."""

from __future__ import annotations

import asyncio
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

import bus.webhooks.app as app_module
from adapters.base import WebhookAnswer, WebhookRequest
from adapters.signatures import hubspot_v3_signature
from adapters.webhook import WebhookAdapter
from bus.envelope import Event
from bus.errors import ConfigError, WebhookRejected
from bus.metrics import Metrics
from bus.webhooks import Endpoint, WebhookApp, WebhookServer, endpoints_for

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "webhooks"
HUBSPOT_SECRET = "hs-client-secret"
FRAPPE = orjson.loads((FIXTURES / "erpnext" / "webhook_signature_test_vector_COMPUTED.json").read_bytes())


class Bus:
    """What the server talks to: a recording ingest that can be made to fail, and a readiness switch."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.fail = False
        self.ready = (True, "ok")
        self.ingest_calls = 0

    async def ingest(self, events: list[Event]) -> None:
        self.ingest_calls += 1
        if self.fail:
            raise RuntimeError("journal is down")
        self.events.extend(events)


def broken_handler(request: WebhookRequest) -> list[Any]:
    raise KeyError("bug in handler")


def not_a_list(request: WebhookRequest) -> list[Any]:
    return {"oops": 1}  # type: ignore[return-value]


def soap_handler(request: WebhookRequest) -> list[Any]:
    if not request.body.startswith(b"<"):
        raise WebhookRejected("not XML", reason="malformed_body")
    return [{"body": request.body.decode()}]


def soap_answer(request: WebhookRequest | None, status: int, reason: str, detail: str,
                accepted: list[str]) -> WebhookAnswer | None:
    """A protocol that dictates its own answer: 200 with an Ack for an accepted document, a fault otherwise."""
    if status == 202:
        return WebhookAnswer(200, f"<Ack>{len(accepted)}</Ack>".encode(), "text/xml", {"X-Ack": "true"})
    return WebhookAnswer(status, f"<Fault>{reason}</Fault>".encode(), "text/xml")


def build_endpoints() -> dict[tuple[str, str], Endpoint]:
    endpoints: dict[tuple[str, str], Endpoint] = {}
    endpoints |= endpoints_for("crm", WebhookAdapter("crm", {"signature": {"scheme": "hubspot-v3",
                                                                           "secret": HUBSPOT_SECRET},
                                                             "split": "[*]", "key": "to_string(objectId)"}))
    endpoints |= endpoints_for("erp", WebhookAdapter("erp", {"signature": {"scheme": "frappe",
                                                                           "secret": FRAPPE["webhook_secret"]},
                                                             "key": "name"}))
    endpoints |= endpoints_for("odoo", WebhookAdapter("odoo", {"signature": {"scheme": "token", "secret": "t0k3n"}}))
    endpoints[("soap", "notify")] = Endpoint("soap", "notify", soap_handler, "soap.notify", answer=soap_answer)
    endpoints[("bad", "raise")] = Endpoint("bad", "raise", broken_handler, "bad.raise")
    endpoints[("bad", "shape")] = Endpoint("bad", "shape", not_a_list, "bad.shape", blocking=False)
    return endpoints


class Harness:
    def __init__(self, server: WebhookServer, bus: Bus, metrics: Metrics) -> None:
        self.server = server
        self.bus = bus
        self.metrics = metrics
        self.client = httpx.Client(base_url=server.url, timeout=10.0)

    def sample(self, name: str, **labels: str) -> float:
        for family in text_string_to_metric_families(self.metrics.render().decode()):
            for s in family.samples:
                if s.name == name and s.labels == labels:
                    return float(s.value)
        return 0.0

    def rejected(self, system: str, trigger: str, reason: str) -> float:
        return self.sample("ironbus_webhook_rejected_total", system=system, trigger=trigger, reason=reason)

    def hubspot_post(self, body: bytes, *, timestamp_ms: int | None = None, secret: str = HUBSPOT_SECRET,
                     path: str = "/hooks/crm/received", headers: dict[str, str] | None = None,
                     signed_url: str | None = None) -> httpx.Response:
        ts = str(int(time.time() * 1000) if timestamp_ms is None else timestamp_ms)
        url = signed_url or f"{self.server.url}{path}"
        sig = hubspot_v3_signature(secret, "POST", url, body, ts)
        head = {"content-type": "application/json", "x-hubspot-signature-v3": sig,
                "x-hubspot-request-timestamp": ts, **(headers or {})}
        return self.client.post(path, content=body, headers=head)


def start(bus: Bus, metrics: Metrics, http: str = "auto", **kwargs: Any) -> WebhookServer:
    app = WebhookApp(build_endpoints(), bus.ingest, lambda: bus.ready, metrics=metrics, **kwargs)
    server = WebhookServer(app, "127.0.0.1", 0, graceful_timeout=5.0, http=http)
    server.start()
    return server


@pytest.fixture
def make_harness() -> Iterator[Callable[..., Harness]]:
    harnesses: list[Harness] = []

    def make(**kwargs: Any) -> Harness:
        bus, metrics = Bus(), Metrics()
        harness = Harness(start(bus, metrics, **kwargs), bus, metrics)
        harnesses.append(harness)
        return harness

    yield make
    for h in harnesses:
        h.client.close()
        h.server.stop()


@pytest.fixture
def h(make_harness: Callable[..., Harness]) -> Harness:
    return make_harness(max_body=4096)


HUBSPOT_BODY = orjson.dumps([{"objectId": 697680835, "propertyName": "dealstage", "eventId": 1},
                             {"objectId": 42, "propertyName": "amount", "eventId": 2}])


# -- accepted ------------------------------------------------------------------------------------------
def test_valid_hubspot_signature_is_accepted_after_ingest(h: Harness) -> None:
    response = h.hubspot_post(HUBSPOT_BODY)
    assert response.status_code == 202, response.text
    accepted = response.json()["accepted"]
    assert accepted == [e.id for e in h.bus.events]
    assert [(e.type, e.source, e.key, e.data["eventId"]) for e in h.bus.events] == [
        ("crm.received", "ironbus/crm", "697680835", 1), ("crm.received", "ironbus/crm", "42", 2)]
    assert h.sample("ironbus_events_received_total", system="crm", trigger="received") == 2


def test_frappe_vector_over_http(h: Harness) -> None:
    # Frappe sends no Content-Type: the request must still be accepted.
    response = h.client.post("/hooks/erp/received", content=FRAPPE["raw_body"].encode(),
                             headers={"X-Frappe-Webhook-Signature": FRAPPE["header"]["X-Frappe-Webhook-Signature"]})
    assert response.status_code == 202, response.text
    assert [(e.key, e.data["doctype"]) for e in h.bus.events] == [("SAL-ORD-2024-00001", "Sales Order")]


def test_url_token_accepted_and_never_logged(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    with capture_logs() as logs:
        monkeypatch.setattr(app_module, "log", structlog.get_logger("test"))
        ok = h.client.post("/hooks/odoo/received/t0k3n", json={"id": 1})
        bad = h.client.post("/hooks/odoo/received/guessed-token", json={"id": 1})
        missing = h.client.post("/hooks/odoo/received", json={"id": 1})
    assert (ok.status_code, bad.status_code, missing.status_code) == (202, 401, 401)
    assert [e.data for e in h.bus.events] == [{"id": 1}]
    rejections = [entry for entry in logs if entry["event"] == "webhook rejected"]
    assert [r["reason"] for r in rejections] == ["mismatch", "missing"]
    assert all(r["path"] == "/hooks/odoo/received/***" for r in rejections[:1])
    assert "guessed-token" not in repr(logs) and "t0k3n" not in repr(logs)
    assert "guessed-token" not in bad.text


def test_empty_batch_is_accepted_without_ingest(h: Harness) -> None:
    response = h.hubspot_post(b"[]")
    assert (response.status_code, response.json()) == (202, {"accepted": []})
    assert h.bus.ingest_calls == 0


# -- refused -------------------------------------------------------------------------------------------
def assert_refused(h: Harness, response: httpx.Response, status: int, reason: str, system: str = "crm",
                   trigger: str = "received") -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"] == reason
    assert h.bus.ingest_calls == 0
    assert h.rejected(system, trigger, reason) == 1


def test_forged_signature_is_401(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    with capture_logs() as logs:
        monkeypatch.setattr(app_module, "log", structlog.get_logger("test"))
        response = h.hubspot_post(HUBSPOT_BODY, secret="attacker-guess")
    assert_refused(h, response, 401, "mismatch")
    sent_signature = response.request.headers["x-hubspot-signature-v3"]
    entry = next(e for e in logs if e["event"] == "webhook rejected")
    assert entry["remote"].startswith("127.0.0.1:") and entry["path"] == "/hooks/crm/received"
    assert sent_signature not in repr(logs) and HUBSPOT_SECRET not in repr(logs)


@pytest.mark.parametrize("skew_ms", [-600_000, 600_000], ids=["replayed", "future"])
def test_stale_and_future_timestamps_are_401(h: Harness, skew_ms: int) -> None:
    response = h.hubspot_post(HUBSPOT_BODY, timestamp_ms=int(time.time() * 1000) + skew_ms)
    assert_refused(h, response, 401, "stale")


def test_missing_signature_header_is_401(h: Harness) -> None:
    response = h.client.post("/hooks/crm/received", content=HUBSPOT_BODY, headers={"content-type": "application/json"})
    assert_refused(h, response, 401, "missing")


def test_oversized_body_by_content_length_is_413(h: Harness) -> None:
    response = h.hubspot_post(b"[" + b" " * 5000 + b"]")
    assert_refused(h, response, 413, "too_large")


def test_oversized_chunked_body_is_413(h: Harness) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b"x" * 1000

    response = h.client.post("/hooks/crm/received", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in response.request.headers
    assert_refused(h, response, 413, "too_large")


def test_wrong_content_type_is_415(h: Harness) -> None:
    response = h.hubspot_post(HUBSPOT_BODY, headers={"content-type": "text/plain"})
    assert_refused(h, response, 415, "unsupported_media_type")


def test_non_json_body_is_400(h: Harness) -> None:
    response = h.hubspot_post(b"this is not json")
    assert_refused(h, response, 400, "malformed_body")


def test_unknown_path_is_404(h: Harness) -> None:
    for path in ("/hooks/crm/nope", "/hooks/nobody/received", "/hooks/crm", "/elsewhere"):
        assert h.client.post(path, content=b"{}").status_code == 404
    assert h.rejected("-", "-", "not_found") == 4
    assert h.bus.ingest_calls == 0


def test_wrong_method_is_405(h: Harness) -> None:
    response = h.client.get("/hooks/crm/received")
    assert response.headers["allow"] == "POST"
    assert_refused(h, response, 405, "method_not_allowed")
    assert h.client.post("/ping").status_code == 405


def test_ingest_failure_is_503_never_202(h: Harness) -> None:
    h.bus.fail = True
    response = h.hubspot_post(HUBSPOT_BODY)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.json()["error"] == "ingest_failed"
    assert h.bus.ingest_calls == 1
    assert h.sample("ironbus_events_received_total", system="crm", trigger="received") == 0
    assert h.rejected("crm", "received", "ingest_failed") == 1


def test_handler_bugs_are_500_and_server_survives(h: Harness) -> None:
    assert h.client.post("/hooks/bad/raise", content=b"{}").status_code == 500
    assert h.client.post("/hooks/bad/shape", content=b"{}").status_code == 500
    assert h.rejected("bad", "raise", "handler_error") == 1
    assert h.client.get("/ping").text == "pong"


# -- probes and metrics --------------------------------------------------------------------------------
def test_ping_ready_and_metrics(h: Harness) -> None:
    assert (h.client.get("/ping").status_code, h.client.get("/ping").text) == (200, "pong")
    h.bus.ready = (False, "journal not migrated")
    response = h.client.get("/ready")
    assert (response.status_code, response.text) == (503, "journal not migrated")
    h.bus.ready = (True, "ready")
    assert h.client.get("/ready").status_code == 200
    h.hubspot_post(HUBSPOT_BODY)
    h.hubspot_post(HUBSPOT_BODY, secret="wrong")
    metrics = h.client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'ironbus_events_received_total{system="crm",trigger="received"} 2.0' in metrics.text
    assert 'ironbus_webhook_rejected_total{reason="mismatch",system="crm",trigger="received"} 1.0' in metrics.text


def test_failing_readiness_check_is_503(make_harness: Callable[..., Harness]) -> None:
    bus, metrics = Bus(), Metrics()

    def explode() -> tuple[bool, str]:
        raise RuntimeError("db gone")

    app = WebhookApp({}, bus.ingest, explode, metrics=metrics)
    with WebhookServer(app, port=0) as server:
        response = httpx.get(f"{server.url}/ready")
    assert response.status_code == 503 and "db gone" in response.text


# -- URLs behind a proxy -------------------------------------------------------------------------------
def test_forwarded_headers_only_with_trust_proxy(make_harness: Callable[..., Harness]) -> None:
    public = "https://bus.example.com/hooks/crm/received?portal=1%3A2"
    forwarded = {"x-forwarded-proto": "https", "x-forwarded-host": "bus.example.com"}
    trusting = make_harness(trust_proxy=True)
    ok = trusting.hubspot_post(HUBSPOT_BODY, path="/hooks/crm/received?portal=1%3A2", headers=forwarded,
                               signed_url=public)
    assert ok.status_code == 202, ok.text
    wary = make_harness()
    refused = wary.hubspot_post(HUBSPOT_BODY, path="/hooks/crm/received?portal=1%3A2", headers=forwarded,
                                signed_url=public)
    assert refused.status_code == 401


# -- robustness ----------------------------------------------------------------------------------------
def raw_exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        received = b""
        try:
            # The status line and headers are all these checks need; some refusals leave the socket open.
            while b"\r\n\r\n" not in received and (chunk := sock.recv(65536)):
                received += chunk
        except ConnectionResetError:  # the server may drop a garbage connection outright
            pass
    return received


def _parsers() -> list[str]:
    try:
        import httptools  # noqa: F401
    except ImportError:
        return ["h11"]
    return ["h11", "httptools"]


@pytest.mark.parametrize("http", _parsers())
def test_fuzzed_requests_never_crash(make_harness: Callable[..., Harness], http: str) -> None:
    h = make_harness(max_body=4096, http=http)
    rng = random.Random(1234)
    port = h.server.port
    statuses = set()
    for _ in range(40):
        body = rng.randbytes(rng.randint(0, 3000))
        response = h.hubspot_post(body)
        statuses.add(response.status_code)
    assert statuses <= {400, 413}
    # Non-UTF-8 header values, a huge header, a garbage request line, a lying Content-Length.
    head = b"Host: x\r\nConnection: close\r\n"
    assert raw_exchange(port, b"POST /hooks/crm/received HTTP/1.1\r\n" + head + b"X-HubSpot-Signature-v3: \xff\xfe\r\n"
                        b"X-HubSpot-Request-Timestamp: \xe9\r\nContent-Length: 2\r\n\r\n{}")[:12] == b"HTTP/1.1 401"
    # h11 refuses a 200 kB header itself (400); with httptools the app's own limit answers 431.
    assert raw_exchange(port, b"GET /ping HTTP/1.1\r\n" + head + b"X-Big: " + b"a" * 200_000 + b"\r\n\r\n")[:12] in (
        b"HTTP/1.1 400", b"HTTP/1.1 431")
    raw_exchange(port, rng.randbytes(512) + b"\r\n\r\n")
    assert raw_exchange(port, b"POST /hooks/crm/received HTTP/1.1\r\n" + head + b"Content-Length: abc\r\n\r\n")[:12] \
        == b"HTTP/1.1 400"
    assert raw_exchange(port, b"POST /hooks/%ff%fe/received HTTP/1.1\r\n" + head + b"Content-Length: 0\r\n\r\n")[:12] \
        == b"HTTP/1.1 404"
    assert h.bus.ingest_calls == 0
    assert h.client.get("/ping").text == "pong"


def test_invalid_content_length_header_is_400(h: Harness) -> None:
    # h11 refuses a non-numeric Content-Length itself; the app's own check covers servers that pass it through.
    scope = {"type": "http", "method": "POST", "path": "/hooks/crm/received", "headers": [(b"content-length", b"x")]}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    app = WebhookApp(build_endpoints(), h.bus.ingest, lambda: (True, ""), metrics=h.metrics)
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 400


# -- server lifecycle ----------------------------------------------------------------------------------
def test_stop_is_graceful_for_a_request_in_flight() -> None:
    entered, release = threading.Event(), threading.Event()
    events: list[Event] = []

    async def slow_ingest(batch: list[Event]) -> None:
        entered.set()
        await asyncio.to_thread(release.wait, 10)
        events.extend(batch)

    endpoint = Endpoint("s", "t", lambda r: [orjson.loads(r.body)], "s.t")
    server = WebhookServer(WebhookApp({("s", "t"): endpoint}, slow_ingest, lambda: (True, ""), metrics=Metrics()),
                           port=0, graceful_timeout=5.0)
    server.start()
    result: dict[str, httpx.Response] = {}
    client = threading.Thread(target=lambda: result.setdefault(
        "r", httpx.post(f"{server.url}/hooks/s/t", content=b'{"a": 1}', timeout=10)))
    client.start()
    assert entered.wait(5), "ingest was never called"
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    release.set()
    client.join(10)
    stopper.join(15)
    assert result["r"].status_code == 202 and len(events) == 1
    assert not server.running
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{server.port}/ping", timeout=2)


def test_port_in_use_is_a_config_error() -> None:
    with WebhookServer(WebhookApp({}, Bus().ingest, lambda: (True, ""), metrics=Metrics()), port=0) as first:
        second = WebhookServer(WebhookApp({}, Bus().ingest, lambda: (True, ""), metrics=Metrics()), port=first.port)
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{first.port}"):
            second.start()
        assert httpx.get(f"{first.url}/ping").text == "pong"
    second.stop()  # never started: a no-op


def test_oversized_headers_are_431(make_harness: Callable[..., Harness]) -> None:
    h = make_harness(max_header_bytes=2048)
    response = h.hubspot_post(HUBSPOT_BODY, headers={"x-padding": "p" * 4000})
    assert response.status_code == 431 and response.json()["error"] == "headers_too_large"
    assert h.rejected("-", "-", "headers_too_large") == 1
    assert h.bus.ingest_calls == 0
    assert h.client.get("/ping").status_code == 200


def test_protocol_shaped_answers_replace_json_for_acceptance_and_refusal(h: Harness) -> None:
    ok = h.client.post("/hooks/soap/notify", content=b"<n/>", headers={"content-type": "text/xml"})
    assert (ok.status_code, ok.text, ok.headers["content-type"], ok.headers["x-ack"]) == (
        200, "<Ack>1</Ack>", "text/xml", "true")
    assert [e.data for e in h.bus.events] == [{"body": "<n/>"}]
    bad = h.client.post("/hooks/soap/notify", content=b"junk")
    assert (bad.status_code, bad.text) == (400, "<Fault>malformed_body</Fault>")
    h.bus.fail = True
    down = h.client.post("/hooks/soap/notify", content=b"<n/>")
    assert (down.status_code, down.text, down.headers["retry-after"]) == (503, "<Fault>ingest_failed</Fault>", "5")
