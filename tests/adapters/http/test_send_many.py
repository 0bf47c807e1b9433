"""Several requests at once: ``PooledTransport.send_many``, ``HttpClient.request_many`` and
``HttpAdapter.call_many``, against real local servers. Each gives what sending one by one would give, in order,
while the requests of a wave are in flight together on separate pooled connections."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import orjson
import pytest

from adapters.base import Call, Outcome
from adapters.http import (
    ApiKeyAuth,
    HttpAdapter,
    HttpClient,
    HttpxTransport,
    OAuth2ClientCredentials,
    PooledTransport,
    PoolLimits,
    Request,
    Response,
    Timeouts,
)
from adapters.http.client import Pending
from bus.envelope import Event
from bus.errors import DeliveryError, PermanentError, TransientError
from tests.adapters.http.conftest import Recorded, Reply, Sink
from tests.helpers.wait import wait_until

JSON = {"Content-Type": "application/json"}


class Gauge:
    """The connections a server has open right now, and the most it had open at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0

    def change(self, by: int) -> None:
        with self.lock:
            self.now += by
            self.peak = max(self.peak, self.now)


def gauge_connections(sink: Sink) -> Gauge:
    """Count the sink's open connections: accepted (handler set up) until the handler has finished."""
    gauge = Gauge()
    handler: Any = sink.server.RequestHandlerClass

    class Counted(handler):  # type: ignore[misc, valid-type]
        def setup(self) -> None:
            super().setup()
            gauge.change(+1)

        def finish(self) -> None:
            try:
                super().finish()
            finally:
                gauge.change(-1)

    sink.server.RequestHandlerClass = Counted
    return gauge


def echo(request: Recorded) -> Reply:
    return Reply(200, json={"n": request.json()["n"], "path": request.path})


def numbered(sink: Sink, count: int, path: str = "/echo") -> list[Request]:
    return [Request("POST", f"{sink.url}{path}?i={i}", JSON, orjson.dumps({"n": i})) for i in range(count)]


def responses(results: Sequence[object]) -> list[Response]:
    assert all(isinstance(r, Response) for r in results), results
    return [r for r in results if isinstance(r, Response)]


def nothing_listening() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again below: nothing listens there
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def make_transport() -> Iterator[Callable[..., PooledTransport]]:
    made: list[PooledTransport] = []

    def make(max_connections: int = 20, pool: float = 2.0) -> PooledTransport:
        made.append(PooledTransport(Timeouts(connect=2, read=2, pool=pool), PoolLimits(max_connections)))
        return made[-1]

    yield make
    for transport in made:
        transport.close()


# -- PooledTransport.send_many ---------------------------------------------------------------------------------


def test_one_response_per_request_in_order_and_never_more_connections_than_the_pool(
        sink: Sink, make_transport: Callable[..., PooledTransport]) -> None:
    # Given a server that echoes each request's number, and a pool of three connections
    sink.on("POST", "/echo", echo)
    gauge = gauge_connections(sink)
    transport = make_transport(max_connections=3)
    requests = numbered(sink, 10)

    # When ten requests are sent at once
    results = responses(transport.send_many(requests))

    # Then each got its own answer, in order, and at most three connections were ever open
    assert [(r.status, r.json(), r.url) for r in results] == [
        (200, {"n": i, "path": f"/echo?i={i}"}, requests[i].url) for i in range(10)]
    assert len(sink.requests) == 10
    assert gauge.peak == 3
    assert transport.connections_opened() == 3


def test_requests_wait_for_a_pool_another_thread_holds(sink: Sink,
                                                       make_transport: Callable[..., PooledTransport]) -> None:
    # Given a pool of one connection, held by another thread's request the server has not answered yet
    release = threading.Event()

    def held(request: Recorded) -> Reply:
        release.wait(5)
        return Reply(200, json={"held": True})

    sink.on("POST", "/held", held)
    sink.on("POST", "/echo", echo)
    transport = make_transport(max_connections=1, pool=5.0)
    holder = threading.Thread(target=transport.send, args=(Request("POST", sink.url + "/held", JSON, b"{}"),))
    holder.start()
    wait_until(lambda: sink.requests_to("/held"), what="the held request to arrive")
    got: list[Any] = []
    sender = threading.Thread(target=lambda: got.append(transport.send_many(numbered(sink, 3))))
    sender.start()

    # When the pool's connection comes free
    release.set()
    sender.join(10)
    holder.join(10)

    # Then every request was sent on it, one after another
    assert [r.json() for r in responses(got[0])] == [{"n": i, "path": f"/echo?i={i}"} for i in range(3)]
    assert transport.connections_opened() == 1


def barrier_replies(parties: int, timeout: float) -> Callable[[Recorded], Reply]:
    """Answer 200 only once ``parties`` requests are in the server at the same time; 503 when they never are."""
    barrier = threading.Barrier(parties)

    def answer(request: Recorded) -> Reply:
        try:
            barrier.wait(timeout)
        except threading.BrokenBarrierError:
            return Reply(503, json={"error": "alone"})
        return Reply(200, json={"n": request.json()["n"]})

    return answer


def test_a_wave_is_in_flight_at_the_same_time(sink: Sink, make_transport: Callable[..., PooledTransport]) -> None:
    # Given a server that answers only when four requests are in flight together
    sink.on("POST", "/together", barrier_replies(4, timeout=5))
    transport = make_transport()

    # When four requests are sent at once
    results = responses(transport.send_many(numbered(sink, 4, "/together")))

    # Then all four were there together
    assert [(r.status, r.json()) for r in results] == [(200, {"n": i}) for i in range(4)]


def test_one_by_one_the_same_requests_never_meet(sink: Sink, make_transport: Callable[..., PooledTransport]) -> None:
    # The control for the test above: send() waits for each answer before the next request goes out.
    sink.on("POST", "/together", barrier_replies(4, timeout=0.2))
    transport = make_transport()

    statuses = [transport.send(request).status for request in numbered(sink, 4, "/together")]

    assert statuses == [503] * 4


def test_pooled_connections_the_server_closed_while_idle_are_replaced(
        sink: Sink, make_transport: Callable[..., PooledTransport]) -> None:
    # Given three pooled keep-alive connections that the server closed after answering, without saying so
    sink.on("POST", "/echo", lambda r: Reply(200, json={"n": r.json()["n"]}, drop_connection=True))
    gauge = gauge_connections(sink)
    transport = make_transport(max_connections=3)
    assert len(responses(transport.send_many(numbered(sink, 3)))) == 3
    wait_until(lambda: gauge.now == 0, what="the server to close its connections")

    # When the next wave goes out on them
    results = responses(transport.send_many(numbered(sink, 3)))

    # Then every request was delivered once, on a new connection
    assert [(r.status, r.json()) for r in results] == [(200, {"n": i}) for i in range(3)]
    assert len(sink.requests) == 6
    assert transport.connections_opened() == 6


def test_refused_connections_fail_alone_and_results_stay_aligned(
        sink: Sink, make_transport: Callable[..., PooledTransport]) -> None:
    # Given requests to a server and to a port where nothing listens, mixed
    sink.on("POST", "/echo", echo)
    down = nothing_listening()
    good = numbered(sink, 2)
    requests = [Request("POST", f"{down}/orders/1?token=s3cret", JSON, b"{}"), good[0],
                Request("PUT", f"{down}/orders/2", JSON, b"{}"), good[1]]

    # When they are sent at once
    results = make_transport().send_many(requests)

    # Then each refused one is a TransientError naming it (but not its query), and the others are answered
    first, second, third, fourth = results
    assert isinstance(first, TransientError) and isinstance(third, TransientError)
    assert f"POST {down}/orders/1:" in str(first) and "s3cret" not in str(first)
    assert f"PUT {down}/orders/2:" in str(third)
    assert "refused" in str(first).lower()
    assert [r.json() for r in responses([second, fourth])] == [{"n": i, "path": f"/echo?i={i}"} for i in range(2)]


def test_a_connection_reset_while_the_request_is_written_is_a_send_failure(
        make_transport: Callable[..., PooledTransport]) -> None:
    # Given a server that resets each connection once the request has begun to arrive (not sooner: a reset
    # racing the handshake fails the connect, which send() rightly reports as such)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def reset() -> None:
        for _ in range(2):
            conn, _ = listener.accept()
            conn.recv(1)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    thread = threading.Thread(target=reset, daemon=True)
    thread.start()
    # larger than both ends' socket buffers: the write is still going on when the reset arrives
    request = Request("POST", f"http://127.0.0.1:{port}/big", JSON, b"x" * (32 * 1024 * 1024))
    try:
        # When the request is sent alone, and in a wave
        with pytest.raises(TransientError) as alone:
            make_transport().send(request)
        [in_wave] = make_transport().send_many([request])
    finally:
        thread.join(5)
        listener.close()

    # Then both say the connection was lost while sending, not that connecting failed
    assert "lost during send" in str(alone.value)
    assert isinstance(in_wave, TransientError) and "lost during send" in str(in_wave)


def test_a_request_that_cannot_be_written_fails_alone_and_keeps_no_connection(
        sink: Sink, make_transport: Callable[..., PooledTransport]) -> None:
    # Given a pool of one and a request whose header would break the message
    sink.on("POST", "/echo", echo)
    transport = make_transport(max_connections=1, pool=0.5)
    good = numbered(sink, 1)[0]
    bad = Request("POST", sink.url + "/echo", {"X-Note": "a\r\nX-Injected: 1"}, b'{"n": 9}')

    # When it goes in a wave, it alone is refused, with the ValueError send() raises; the other is answered
    answered, refused = transport.send_many([good, bad])
    assert isinstance(answered, Response) and answered.status == 200
    assert isinstance(refused, ValueError) and "line break" in str(refused)
    with pytest.raises(ValueError, match="line break"):
        transport.send(bad)

    # Then the pool's one connection is free again
    assert transport.send(good).status == 200
    assert responses(transport.send_many([good, good]))[1].json() == {"n": 0, "path": "/echo?i=0"}
    # and a URL it cannot send to fails alone too
    elsewhere = Request("POST", "ftp://127.0.0.1/echo", {}, b"{}")
    mixed = transport.send_many([elsewhere, good])
    assert isinstance(mixed[0], ValueError) and isinstance(mixed[1], Response) and mixed[1].status == 200


# -- HttpClient.request_many -----------------------------------------------------------------------------------


def summary(result: Response | DeliveryError) -> tuple[Any, ...]:
    if isinstance(result, Response):
        return "response", result.status, result.body
    return type(result).__name__, str(result), result.retry_after if isinstance(result, TransientError) else None


def one_by_one(client: HttpClient, pending: Sequence[Pending]) -> list[Response | DeliveryError]:
    out: list[Response | DeliveryError] = []
    for p in pending:
        try:
            out.append(client.request(p.method, p.path, params=p.params, headers=p.headers, body=p.body,
                                      success=p.success, what=p.what))
        except DeliveryError as exc:
            out.append(exc)
    return out


def status_routes(sink: Sink) -> list[Pending]:
    sink.on("GET", "/ok", Reply(200, json={"ok": True}))
    sink.on("GET", "/busy", Reply(503, json={"error": "busy"}))
    sink.on("GET", "/slow-down", Reply(429, json={"error": "slow down"}, headers={"Retry-After": "7"}))
    sink.on("GET", "/bad", Reply(400, json={"message": "quantity must be positive"}))
    sink.on("POST", "/created", Reply(200, json={}))
    return [Pending("GET", "/ok"), Pending("GET", "/busy"), Pending("GET", "/slow-down"), Pending("GET", "/bad"),
            Pending("POST", "/created", success=[201]), Pending("GET", "/ok", params={"page": "2"})]


def test_statuses_are_classified_as_request_does_in_order(sink: Sink,
                                                          make_transport: Callable[..., PooledTransport]) -> None:
    pending = status_routes(sink)
    client = HttpClient(sink.url, make_transport())

    many = client.request_many(pending)

    assert [type(r) for r in many] == [Response, TransientError, TransientError, PermanentError, PermanentError,
                                       Response]
    assert [summary(r) for r in many] == [summary(r) for r in one_by_one(client, pending)]
    assert sink.requests[-1].path == "/ok?page=2"


def test_without_send_many_the_requests_go_one_by_one(sink: Sink) -> None:
    pending = status_routes(sink)
    client = HttpClient(sink.url, HttpxTransport(Timeouts(connect=2, read=2, pool=2)))
    try:
        assert not hasattr(client.transport, "send_many")

        many = client.request_many(pending)

        assert [summary(r) for r in many] == [summary(r) for r in one_by_one(client, pending)]
        assert len(sink.requests) == 2 * len(pending)
    finally:
        client.close()


def test_a_credential_in_the_query_stays_out_of_error_messages(sink: Sink,
                                                               make_transport: Callable[..., PooledTransport]) -> None:
    pending = status_routes(sink)[:4]
    client = HttpClient(sink.url, make_transport(), ApiKeyAuth("api_key", "k-s3cret", where="query"))

    many = client.request_many(pending)

    assert "/ok?api_key=k-s3cret" in {r.path for r in sink.requests}
    assert [summary(r) for r in many] == [summary(r) for r in one_by_one(client, pending)]
    assert not any("k-s3cret" in str(r) for r in many if isinstance(r, DeliveryError))


def token_endpoint(sink: Sink) -> list[str]:
    issued: list[str] = []

    def token(request: Recorded) -> Reply:
        issued.append(f"tok-{len(issued) + 1}")
        return Reply(200, json={"access_token": issued[-1], "token_type": "Bearer", "expires_in": 3600})

    sink.on("POST", "/oauth/token", token)
    return issued


def test_a_refused_oauth2_token_is_refreshed_and_each_request_sent_once_more(
        sink: Sink, make_transport: Callable[..., PooledTransport]) -> None:
    # Given a server that has revoked the token the client holds
    issued = token_endpoint(sink)
    sink.on("POST", "/api", lambda r: Reply(401 if r.headers["authorization"] == "Bearer tok-1" else 200,
                                            json={"n": r.json()["n"]}))
    transport = make_transport()
    client = HttpClient(sink.url, transport, OAuth2ClientCredentials(transport, sink.url + "/oauth/token", "cid", "s"))
    pending = [Pending("POST", "/api", headers=JSON, body=orjson.dumps({"n": i})) for i in range(3)]

    # When three requests are sent at once
    many = client.request_many(pending)

    # Then one new token was fetched and each request went once more with it
    assert [r.json() for r in responses(many)] == [{"n": i} for i in range(3)]
    assert issued == ["tok-1", "tok-2"]
    assert sorted(r.headers["authorization"] for r in sink.requests_to("/api")) == ["Bearer tok-1"] * 3 + [
        "Bearer tok-2"] * 3


def test_a_token_still_refused_after_the_refresh_is_sent_no_more_than_request_sends_it(
        sink: Sink, make_transport: Callable[..., PooledTransport]) -> None:
    # Given a server that refuses every token
    token_endpoint(sink)
    sink.on("POST", "/api", Reply(401, json={"error": "no access"}))
    transport = make_transport()
    client = HttpClient(sink.url, transport, OAuth2ClientCredentials(transport, sink.url + "/oauth/token", "cid", "s"))
    pending = [Pending("POST", "/api", body=b"{}"), Pending("POST", "/api", body=b"{}")]
    with pytest.raises(PermanentError, match="HTTP 401"):
        client.request("POST", "/api", body=b"{}")
    sent_by_request = len(sink.requests_to("/api"))

    # When two requests are sent at once
    many = client.request_many(pending)

    # Then each is refused, having been sent as often as request() sends one: once, and once more
    assert [type(r) for r in many] == [PermanentError, PermanentError]
    assert sent_by_request == 2
    assert len(sink.requests_to("/api")) == sent_by_request + 2 * sent_by_request


# -- HttpAdapter.call_many -------------------------------------------------------------------------------------


def make_call(payload: Any, key: str) -> Call:
    event = Event(type="order.changed", source="crm", data=payload, correlationid=f"corr-{key}")
    return Call(event=event, payload=event.data, idempotency_key=key)


def adapter_settings(sink: Sink, **extra: Any) -> dict[str, Any]:
    return {
        "base_url": sink.url + "/api",
        "timeout": {"connect": 2, "read": 2, "pool": 2},
        "operations": {
            "update_order": {"method": "PATCH", "path": "/orders/{{ order_id }}", "result": "status",
                             "reference": "id"},
            "post_lines": {"method": "POST", "path": "/orders/{{ order_id }}/lines", "body": "lines",
                           "headers": {"X-Order": "{{ order_id }}"}, "success": [201]},
            "bad_result": {"method": "PATCH", "path": "/orders/{{ order_id }}", "result": "abs(id)"},
        },
        **extra,
    }


@pytest.fixture
def make_adapter() -> Iterator[Callable[[dict[str, Any]], HttpAdapter]]:
    made: list[HttpAdapter] = []

    def make(doc: dict[str, Any]) -> HttpAdapter:
        made.append(HttpAdapter("orders", doc))
        made[-1].open()
        return made[-1]

    yield make
    for adapter in made:
        adapter.close()


def called_one_by_one(adapter: HttpAdapter, operation: str, calls: Sequence[Call]) -> list[Outcome | Exception]:
    out: list[Outcome | Exception] = []
    for one in calls:
        try:
            out.append(adapter.call(operation, one))
        except Exception as exc:
            out.append(exc)
    return out


def same(result: Outcome | Exception) -> object:
    return result if isinstance(result, Outcome) else (type(result), str(result))


def test_outcomes_are_those_call_gives_and_an_unbuildable_call_fails_alone(
        sink: Sink, make_adapter: Callable[[dict[str, Any]], HttpAdapter]) -> None:
    # Given orders the server accepts, one it refuses, and one without the id its path needs
    for n in (1, 2, 4):
        sink.on("PATCH", f"/api/orders/SO-{n}", Reply(200, json={"id": f"ORD-{n}", "status": "ok"}))
    sink.on("PATCH", "/api/orders/SO-5", Reply(201, body=b"", headers={"Location": "/orders/ORD-5"}))
    sink.on("PATCH", "/api/orders/SO-3", Reply(400, json={"message": "order locked"}))
    adapter = make_adapter(adapter_settings(sink))
    payloads = [{"order_id": "SO-1"}, {"order_id": "SO-2"}, {"status": "no id"}, {"order_id": "SO-3"},
                {"order_id": "SO-4"}, {"order_id": "SO-5"}]
    calls = [make_call(p, f"evt-{i}") for i, p in enumerate(payloads)]

    # When they are called at once
    many = adapter.call_many("update_order", calls)

    # Then each result is what call() gives for it, in order; the unbuildable one was never sent
    assert [same(r) for r in many] == [same(r) for r in called_one_by_one(adapter, "update_order", calls)]
    assert [r.reference if isinstance(r, Outcome) else type(r) for r in many] == [
        "ORD-1", "ORD-2", PermanentError, PermanentError, "ORD-4", "/orders/ORD-5"]
    assert isinstance(many[0], Outcome) and many[0].result == "ok"
    assert "is null or missing" in str(many[2]) and "order locked" in str(many[3])
    sent = sink.requests[:5]
    assert sorted(r.headers["idempotency-key"] for r in sent) == ["evt-0", "evt-1", "evt-3", "evt-4", "evt-5"]
    assert len(sink.requests) == 10  # five by call_many, five by call()


def test_a_result_expression_failing_on_one_answer_fails_that_call(
        sink: Sink, make_adapter: Callable[[dict[str, Any]], HttpAdapter]) -> None:
    sink.on("PATCH", "/api/orders/SO-1", Reply(200, json={"id": "x"}))
    sink.on("PATCH", "/api/orders/SO-2", Reply(200, json={"id": -2}))
    adapter = make_adapter(adapter_settings(sink))
    calls = [make_call({"order_id": "SO-1"}, "evt-1"), make_call({"order_id": "SO-2"}, "evt-2")]

    many = adapter.call_many("bad_result", calls)

    assert [same(r) for r in many] == [same(r) for r in called_one_by_one(adapter, "bad_result", calls)]
    assert isinstance(many[0], PermanentError) and isinstance(many[1], Outcome) and many[1].result == 2


def test_a_call_whose_header_is_refused_fails_alone(sink: Sink,
                                                    make_adapter: Callable[[dict[str, Any]], HttpAdapter]) -> None:
    # Given a header rendered from the payload, with a line break in one call's payload
    sink.on("POST", "/api/orders/SO-1/lines", Reply(201, json={"id": "L-1"}))
    adapter = make_adapter(adapter_settings(sink, pool={"max_connections": 2},
                                            timeout={"connect": 2, "read": 2, "pool": 0.5}))
    good = {"order_id": "SO-1", "lines": [{"sku": "A"}]}
    calls = [make_call(good, "evt-1"), make_call({"order_id": "x\r\nX-Injected: 1", "lines": []}, "evt-2"),
             make_call(good, "evt-3")]

    # When they are called at once
    many = adapter.call_many("post_lines", calls)

    # Then that call fails as call() fails it, and the others are delivered
    assert [same(r) for r in many] == [same(r) for r in called_one_by_one(adapter, "post_lines", calls)]
    assert isinstance(many[1], ValueError) and "line break" in str(many[1])
    assert [r.result for r in many if isinstance(r, Outcome)] == [{"id": "L-1"}] * 2
    assert sorted(r.headers["idempotency-key"] for r in sink.requests[:2]) == ["evt-1", "evt-3"]
