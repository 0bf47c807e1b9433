"""The generic http adapter against a real local HTTP server."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.base import Call
from adapters.http import HttpAdapter
from bus.envelope import Event
from bus.errors import ConfigError, PermanentError, TransientError, UnknownNameError
from tests.adapters.http.conftest import Recorded, Reply, Sink

ORDER = {"order_id": "SO-1", "status": "confirmed", "lines": [{"sku": "A", "qty": 2}]}


def make_call(payload: Any = None, key: str = "evt-1:route:orders.update_order") -> Call:
    event = Event(type="order.changed", source="crm", data=payload if payload is not None else ORDER,
                  correlationid="corr-123")
    return Call(event=event, payload=event.data, idempotency_key=key)


def settings(sink: Sink, transport: str = "pooled", **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "base_url": sink.url + "/api",
        "transport": transport,
        "timeout": {"connect": 2, "read": 2, "pool": 2},
        "operations": {
            "update_order": {"method": "PATCH", "path": "/orders/{{ order_id }}", "result": "@", "reference": "id"},
            "get_order": {"method": "GET", "path": "/orders/{{ order_id }}", "query": {"expand": "lines"}},
            "post_lines": {"method": "POST", "path": "/orders/{{ order_id }}/lines", "body": "lines",
                           "headers": {"X-Order": "{{ order_id }}"}, "success": [201]},
        },
    }
    doc.update(extra)
    return doc


@pytest.fixture(params=["pooled", "httpx"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_adapter() -> Iterator[Any]:
    made: list[HttpAdapter] = []

    def make(doc: dict[str, Any]) -> HttpAdapter:
        adapter = HttpAdapter("orders", doc)
        adapter.open()
        made.append(adapter)
        return adapter

    yield make
    for adapter in made:
        adapter.close()


def test_success_sends_payload_with_idempotency_and_correlation_headers(sink: Sink, make_adapter: Any,
                                                                        transport: str) -> None:
    sink.on("PATCH", "/api/orders/SO-1", Reply(200, json={"id": "ORD-9", "status": "ok"}))
    adapter = make_adapter(settings(sink, transport, auth={"type": "bearer", "token": "tok-1"}))

    outcome = adapter.call("update_order", make_call())

    [request] = sink.requests
    assert request.json() == ORDER
    assert request.headers["idempotency-key"] == "evt-1:route:orders.update_order"
    assert request.headers["x-correlation-id"] == "corr-123"
    assert request.headers["authorization"] == "Bearer tok-1"
    assert request.headers["content-type"] == "application/json"
    assert outcome.result == {"id": "ORD-9", "status": "ok"}
    assert outcome.reference == "ORD-9"


def test_path_values_are_encoded_as_one_segment(sink: Sink, make_adapter: Any) -> None:
    sink.on("PATCH", "/api/orders/A%2FB%201", Reply(204))
    adapter = make_adapter(settings(sink))

    outcome = adapter.call("update_order", make_call({"order_id": "A/B 1"}))

    assert [r.path for r in sink.requests] == ["/api/orders/A%2FB%201"]
    assert outcome.result is None and outcome.reference is None


def test_get_sends_no_body_and_templated_query(sink: Sink, make_adapter: Any) -> None:
    sink.on("GET", "/api/orders/SO-1", Reply(200, json={"n": 1}, headers={"Location": "/api/orders/SO-1"}))
    adapter = make_adapter(settings(sink))

    outcome = adapter.call("get_order", make_call())

    [request] = sink.requests
    assert request.method == "GET" and request.body == b""
    assert request.path == "/api/orders/SO-1?expand=lines"
    assert outcome.reference == "/api/orders/SO-1"  # no reference expression: the Location header


def test_body_expression_header_template_and_custom_success(sink: Sink, make_adapter: Any) -> None:
    sink.on("POST", "/api/orders/SO-1/lines", Reply(201, json={"created": 1}))
    adapter = make_adapter(settings(sink))

    outcome = adapter.call("post_lines", make_call())

    [request] = sink.requests
    assert request.json() == [{"sku": "A", "qty": 2}]
    assert request.headers["x-order"] == "SO-1"
    assert outcome.result == {"created": 1}


def test_status_outside_declared_success_is_permanent(sink: Sink, make_adapter: Any) -> None:
    sink.on("POST", "/api/orders/SO-1/lines", Reply(200, json={}))
    adapter = make_adapter(settings(sink))

    with pytest.raises(PermanentError, match="HTTP 200"):
        adapter.call("post_lines", make_call())


def test_missing_placeholder_value_is_permanent_and_sends_nothing(sink: Sink, make_adapter: Any) -> None:
    adapter = make_adapter(settings(sink))

    with pytest.raises(PermanentError, match=r"\{\{ order_id \}\} is null or missing"):
        adapter.call("update_order", make_call({"status": "x"}))
    assert sink.requests == []


@pytest.mark.parametrize("status", [408, 425, 500, 502, 503, 504])
def test_retryable_statuses_are_transient(sink: Sink, make_adapter: Any, status: int) -> None:
    sink.on("PATCH", "/api/orders/SO-1", Reply(status, json={"error": "busy"}))
    adapter = make_adapter(settings(sink))

    with pytest.raises(TransientError, match=f"HTTP {status}") as info:
        adapter.call("update_order", make_call())
    assert info.value.retry_after is None


def test_429_retry_after_seconds(sink: Sink, make_adapter: Any, transport: str) -> None:
    sink.on("PATCH", "/api/orders/SO-1", Reply(429, json={"error": "slow down"}, headers={"Retry-After": "7"}))
    adapter = make_adapter(settings(sink, transport))

    with pytest.raises(TransientError) as info:
        adapter.call("update_order", make_call())
    assert info.value.retry_after == 7.0


def test_429_retry_after_http_date(sink: Sink, make_adapter: Any) -> None:
    from datetime import UTC, datetime, timedelta
    from email.utils import format_datetime

    when = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    sink.on("PATCH", "/api/orders/SO-1", Reply(429, headers={"Retry-After": when}))
    adapter = make_adapter(settings(sink))

    with pytest.raises(TransientError) as info:
        adapter.call("update_order", make_call())
    assert info.value.retry_after is not None and 100 < info.value.retry_after <= 120


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422, 501])
def test_other_failures_are_permanent_with_the_body(sink: Sink, make_adapter: Any, status: int) -> None:
    sink.on("PATCH", "/api/orders/SO-1", Reply(status, json={"message": "quantity must be positive"}))
    adapter = make_adapter(settings(sink))

    with pytest.raises(PermanentError, match="quantity must be positive") as info:
        adapter.call("update_order", make_call())
    assert f"HTTP {status}" in str(info.value) and "orders.update_order" in str(info.value)


def test_overrides_move_codes_between_transient_and_permanent(sink: Sink, make_adapter: Any) -> None:
    sink.on("PATCH", "/api/orders/SO-1", Reply(409, json={"message": "locked"}), Reply(503))
    adapter = make_adapter(settings(sink, errors={"transient": [409], "permanent": [503]}))

    with pytest.raises(TransientError, match="locked"):
        adapter.call("update_order", make_call())
    with pytest.raises(PermanentError, match="HTTP 503"):
        adapter.call("update_order", make_call())


def test_read_timeout_is_transient(sink: Sink, make_adapter: Any, transport: str) -> None:
    sink.on("PATCH", "/api/orders/SO-1", Reply(200, delay=5))
    adapter = make_adapter(settings(sink, transport, timeout={"connect": 1, "read": 0.3, "pool": 1}))

    with pytest.raises(TransientError, match="timed out"):
        adapter.call("update_order", make_call())


def test_connection_refused_is_transient(make_adapter: Any, transport: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again below: nothing listens there
    doc = {"base_url": f"http://127.0.0.1:{port}", "transport": transport, "timeout": 2,
           "operations": {"update_order": {"method": "PATCH", "path": "/orders/{{ order_id }}"}}}
    adapter = make_adapter(doc)

    with pytest.raises(TransientError):
        adapter.call("update_order", make_call())
    assert adapter.health().ok is False


def test_keep_alive_reuses_one_connection(sink: Sink, make_adapter: Any) -> None:
    sink.on("PATCH", "/api/orders/SO-1", Reply(200, json={"id": "1"}))
    adapter = make_adapter(settings(sink))

    for _ in range(20):
        adapter.call("update_order", make_call())

    assert len(sink.requests) == 20
    assert sink.connections == 1


def test_threads_share_a_bounded_pool(sink: Sink, make_adapter: Any) -> None:
    sink.on("PATCH", "/api/orders/SO-1", Reply(200, json={"id": "1"}, delay=0.01))
    adapter = make_adapter(settings(sink, pool={"max_connections": 3}))
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(10):
                adapter.call("update_order", make_call())
        except BaseException as exc:  # pragma: no cover - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)

    assert errors == []
    assert len(sink.requests) == 80
    assert 1 <= sink.connections <= 3


def test_connection_dropped_by_server_is_replaced_transparently(sink: Sink, make_adapter: Any) -> None:
    sink.on("PATCH", "/api/orders/SO-1", Reply(200, json={"id": "1"}, drop_connection=True))
    adapter = make_adapter(settings(sink))

    for _ in range(3):
        assert adapter.call("update_order", make_call()).reference == "1"

    assert len(sink.requests) == 3
    assert len({r.connection for r in sink.requests}) == 3


@pytest.mark.parametrize(("auth", "where", "expected"), [
    ({"type": "basic", "username": "svc", "password": "pw"}, "authorization", "Basic c3ZjOnB3"),
    ({"type": "api_key", "name": "X-Api-Key", "value": "k-123"}, "x-api-key", "k-123"),
])
def test_header_auth_types(sink: Sink, make_adapter: Any, auth: dict[str, str], where: str, expected: str) -> None:
    sink.on("PATCH", "/api/orders/SO-1", Reply(200))
    adapter = make_adapter(settings(sink, auth=auth))

    adapter.call("update_order", make_call())

    assert sink.requests[0].headers[where] == expected


def test_api_key_in_query(sink: Sink, make_adapter: Any) -> None:
    sink.on("GET", "/api/orders/SO-1", Reply(200))
    adapter = make_adapter(settings(sink, auth={"type": "api_key", "name": "key", "value": "k 1", "in": "query"}))

    adapter.call("get_order", make_call())

    assert sink.requests[0].path == "/api/orders/SO-1?expand=lines&key=k+1"


def test_static_token_refused_is_permanent_without_retry(sink: Sink, make_adapter: Any) -> None:
    sink.on("PATCH", "/api/orders/SO-1", Reply(401, json={"error": "invalid token"}))
    adapter = make_adapter(settings(sink, auth={"type": "bearer", "token": "old"}))

    with pytest.raises(PermanentError, match="HTTP 401"):
        adapter.call("update_order", make_call())
    assert len(sink.requests) == 1


def test_oauth2_token_cached_and_refreshed_once_on_401(sink: Sink, make_adapter: Any) -> None:
    issued: list[str] = []

    def token(request: Recorded) -> Reply:
        issued.append(f"tok-{len(issued) + 1}")
        return Reply(200, json={"access_token": issued[-1], "token_type": "Bearer", "expires_in": 3600})

    def api(request: Recorded) -> Reply:
        # The server revokes tok-1 after its first use; the client must fetch tok-2 and resend once.
        if request.headers.get("authorization") == "Bearer tok-1" and len(sink.requests_to("/api/orders/SO-1")) > 2:
            return Reply(401, json={"error": "expired"})
        return Reply(200, json={"id": "1"})

    sink.on("POST", "/oauth/token", token)
    sink.on("PATCH", "/api/orders/SO-1", api)
    auth = {"type": "oauth2_client_credentials", "token_url": sink.url + "/oauth/token", "client_id": "cid",
            "client_secret": "s3cret-value", "scope": "orders.write", "audience": "https://api"}
    adapter = make_adapter(settings(sink, auth=auth))

    adapter.call("update_order", make_call())
    adapter.call("update_order", make_call())
    assert issued == ["tok-1"]  # cached between calls
    form = sink.requests_to("/oauth/token")[0].body.decode()
    assert "grant_type=client_credentials" in form and "scope=orders.write" in form
    assert "client_id=cid" in form and "audience=https%3A%2F%2Fapi" in form

    outcome = adapter.call("update_order", make_call())

    assert outcome.reference == "1"
    assert issued == ["tok-1", "tok-2"]
    api_calls = sink.requests_to("/api/orders/SO-1")
    assert [r.headers["authorization"] for r in api_calls[-2:]] == ["Bearer tok-1", "Bearer tok-2"]
    assert api_calls[-1].headers["idempotency-key"] == api_calls[-2].headers["idempotency-key"]


def test_oauth2_still_refused_after_refresh_is_permanent(sink: Sink, make_adapter: Any) -> None:
    sink.on("POST", "/oauth/token", Reply(200, json={"access_token": "t", "expires_in": 3600}))
    sink.on("PATCH", "/api/orders/SO-1", Reply(401, json={"error": "no access"}))
    auth = {"type": "oauth2_client_credentials", "token_url": sink.url + "/oauth/token", "client_id": "cid",
            "client_secret": "s3cret-value"}
    adapter = make_adapter(settings(sink, auth=auth))

    with pytest.raises(PermanentError, match="HTTP 401"):
        adapter.call("update_order", make_call())
    assert len(sink.requests_to("/api/orders/SO-1")) == 2
    assert len(sink.requests_to("/oauth/token")) == 2


def test_declared_operations_and_accepts(sink: Sink, make_adapter: Any) -> None:
    doc = settings(sink)
    adapter = make_adapter(doc)

    assert HttpAdapter.declared_operations(doc) == ["get_order", "post_lines", "update_order"]
    assert HttpAdapter.declared_operations({}) == []
    assert adapter.accepts("update_order") and not adapter.accepts("delete_order")
    with pytest.raises(UnknownNameError, match="did you mean 'update_order'"):
        adapter.call("updat_order", make_call())


@pytest.mark.parametrize(("change", "message"), [
    ({"base_url": "ftp://x"}, "settings/base_url: 'ftp://x' does not match"),
    ({"operations": {"op": {"method": "FETCH", "path": "/x"}}}, "settings/operations/op/method"),
    ({"operations": {"op": {"method": "GET", "path": "/x/{{ id"}}}, "settings/operations/op/path: unclosed"),
    ({"operations": {"op": {"method": "GET", "path": "/x", "result": "a[["}}}, "operations/op/result: bad JMESPath"),
    ({"auth": {"type": "bearer"}}, "settings/auth"),
    ({"timeot": 3}, "'timeot' was unexpected"),
])
def test_bad_settings_name_system_and_field(sink: Sink, change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match="system 'orders'") as info:
        HttpAdapter("orders", {**settings(sink), **change})
    assert message in str(info.value)


def test_health_with_and_without_health_path(sink: Sink, make_adapter: Any) -> None:
    sink.on("GET", "/api/ping", Reply(200, json={"ok": True}))

    assert make_adapter(settings(sink)).health().ok
    assert make_adapter(settings(sink, health="/ping")).health().ok
    assert not make_adapter(settings(sink, health="/missing")).health().ok


def test_every_idle_connection_dropped_by_the_server_costs_no_failure(sink: Sink, make_adapter: Any) -> None:
    # Three connections in flight at once, each silently closed by the server after its answer.
    sink.on("PATCH", "/api/orders/SO-1", Reply(200, json={"id": "1"}, delay=0.3, drop_connection=True))
    adapter = make_adapter(settings(sink, pool={"max_connections": 3}))
    gate = threading.Barrier(3)

    def work() -> None:
        gate.wait()
        adapter.call("update_order", make_call())

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert len(sink.requests) == 3 and sink.connections >= 2  # several stale connections now sit idle
    sink.on("PATCH", "/api/orders/SO-1", Reply(200, json={"id": "2"}))

    assert adapter.call("update_order", make_call()).reference == "2"
    assert len(sink.requests) == 4


def test_expression_failures_are_permanent(sink: Sink, make_adapter: Any) -> None:
    sink.on("PATCH", "/api/orders/SO-1", Reply(200, json={"id": "x"}))
    doc = settings(sink)
    doc["operations"]["bad_result"] = {"method": "PATCH", "path": "/orders/{{ order_id }}", "result": "abs(id)"}
    doc["operations"]["bad_path"] = {"method": "PATCH", "path": "/orders/{{ abs(order_id) }}"}
    adapter = make_adapter(doc)

    with pytest.raises(PermanentError, match="HTTP 200 received, but the result/reference expression failed"):
        adapter.call("bad_result", make_call())
    with pytest.raises(PermanentError, match="failed on the payload"):
        adapter.call("bad_path", make_call())
    assert len(sink.requests) == 1


@pytest.mark.parametrize("transport", ["pooled", "httpx"])
def test_tls_verification(tls_sink: Sink, tls_cert: tuple[Path, Path], make_adapter: Any, transport: str) -> None:
    tls_sink.on("PATCH", "/api/orders/SO-1", Reply(200, json={"id": "tls-1"}))
    untrusted = make_adapter(settings(tls_sink, transport))
    own_ca = make_adapter(settings(tls_sink, transport, verify_tls=str(tls_cert[0])))
    unchecked = make_adapter(settings(tls_sink, transport, verify_tls=False))

    with pytest.raises(TransientError, match="(?i)certificate"):
        untrusted.call("update_order", make_call())
    assert own_ca.call("update_order", make_call()).reference == "tls-1"
    assert unchecked.call("update_order", make_call()).reference == "tls-1"
    assert len(tls_sink.requests) == 2


def test_settings_headers_go_with_every_request_and_an_operation_header_replaces_one(
        sink: Sink, make_adapter: Any, transport: str) -> None:
    sink.on("PATCH", "/api/orders/SO-1", Reply(200, json={}))
    sink.on("POST", "/api/orders/SO-1/lines", Reply(201, json={}))
    adapter = make_adapter(settings(sink, transport, headers={"X-Tenant": "acme", "X-Order": "from-settings"}))

    adapter.call("update_order", make_call())
    adapter.call("post_lines", make_call())

    plain, templated = sink.requests
    assert (plain.headers["x-tenant"], plain.headers["x-order"]) == ("acme", "from-settings")
    assert (templated.headers["x-tenant"], templated.headers["x-order"]) == ("acme", "SO-1")


@pytest.mark.parametrize("headers", [{"X-Note": "a\r\nX-Injected: 1"}, {"Bad Name": "x"}])
def test_a_settings_header_that_would_break_every_request_is_a_config_error(sink: Sink, headers: dict[str, str],
                                                                            transport: str) -> None:
    with pytest.raises(ConfigError, match="system 'orders': settings/headers: invalid"):
        HttpAdapter("orders", settings(sink, transport, headers=headers))


def test_a_header_rendered_from_the_payload_is_still_checked(sink: Sink, make_adapter: Any) -> None:
    sink.on("POST", "/api/orders/x/lines", Reply(201, json={}))
    adapter = make_adapter(settings(sink, headers={"X-Tenant": "acme"}))

    with pytest.raises(ValueError, match="line break"):
        adapter.call("post_lines", make_call({"order_id": "x\r\nX-Injected: 1", "lines": []}))

    assert sink.requests == []
