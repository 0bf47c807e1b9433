"""OAuth2 client credentials: caching, expiry, single-flight refresh, token endpoint failures."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator

import pytest

from adapters.http import OAuth2ClientCredentials, PooledTransport, Timeouts
from bus.errors import PermanentError, TransientError
from tests.adapters.http.conftest import Recorded, Reply, Sink

SECRET = "very-secret-value"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def transport() -> Iterator[PooledTransport]:
    t = PooledTransport(Timeouts(connect=2, read=2, pool=2))
    yield t
    t.close()


def counting_token_endpoint(sink: Sink, expires_in: int | None = 3600) -> list[str]:
    issued: list[str] = []

    def token(request: Recorded) -> Reply:
        issued.append(f"tok-{len(issued) + 1}")
        doc: dict[str, object] = {"access_token": issued[-1], "token_type": "Bearer"}
        if expires_in is not None:
            doc["expires_in"] = expires_in
        return Reply(200, json=doc, delay=0.05)

    sink.on("POST", "/token", token)
    return issued


def test_token_reused_until_shortly_before_expiry(sink: Sink, transport: PooledTransport) -> None:
    issued = counting_token_endpoint(sink, expires_in=300)
    clock = Clock()
    auth = OAuth2ClientCredentials(transport, sink.url + "/token", "cid", SECRET, clock=clock)

    first = auth.apply({}, {})
    clock.now += 269  # 300 s lifetime, refreshed 30 s (10%) early
    assert auth.apply({}, {}) == first
    clock.now += 2
    assert auth.apply({}, {}) == "tok-2"
    assert issued == ["tok-1", "tok-2"]


def test_token_without_lifetime_is_kept_until_refused(sink: Sink, transport: PooledTransport) -> None:
    issued = counting_token_endpoint(sink, expires_in=None)
    clock = Clock()
    auth = OAuth2ClientCredentials(transport, sink.url + "/token", "cid", SECRET, clock=clock)

    tag = auth.apply({}, {})
    clock.now += 10**7
    assert auth.apply({}, {}) == tag
    assert auth.refresh(tag) is True
    assert auth.apply({}, {}) == "tok-2"
    assert auth.refresh("tok-1") is True  # a stale tag does not throw away the newer token
    assert auth.apply({}, {}) == "tok-2"
    assert issued == ["tok-1", "tok-2"]


def test_concurrent_threads_make_a_single_token_request(sink: Sink, transport: PooledTransport) -> None:
    issued = counting_token_endpoint(sink)
    auth = OAuth2ClientCredentials(transport, sink.url + "/token", "cid", SECRET)
    gate = threading.Barrier(8)
    seen: list[str] = []

    def work() -> None:
        gate.wait()
        headers: dict[str, str] = {}
        auth.apply(headers, {})
        seen.append(headers["Authorization"])

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)

    assert issued == ["tok-1"]
    assert seen == ["Bearer tok-1"] * 8


def test_client_auth_basic_sends_credentials_in_header(sink: Sink, transport: PooledTransport) -> None:
    counting_token_endpoint(sink)
    auth = OAuth2ClientCredentials(transport, sink.url + "/token", "c id", "p:w", client_auth="basic")

    auth.apply({}, {})

    [request] = sink.requests
    assert request.headers["authorization"] == "Basic " + base64.b64encode(b"c+id:p%3Aw").decode()
    assert "client_secret" not in request.body.decode()


def test_refused_token_request_is_permanent_with_description_and_no_secret(sink: Sink,
                                                                          transport: PooledTransport) -> None:
    sink.on("POST", "/token", Reply(401, json={"error": "invalid_client",
                                               "error_description": f"unknown client, secret {SECRET} rejected"}))
    auth = OAuth2ClientCredentials(transport, sink.url + "/token", "cid", SECRET)

    with pytest.raises(PermanentError, match="invalid_client: unknown client") as info:
        auth.apply({}, {})
    assert SECRET not in str(info.value)
    assert "HTTP 401" in str(info.value)


def test_token_endpoint_outage_is_transient(sink: Sink, transport: PooledTransport) -> None:
    sink.on("POST", "/token", Reply(503, json={"error": "temporarily_unavailable"}, headers={"Retry-After": "12"}))
    auth = OAuth2ClientCredentials(transport, sink.url + "/token", "cid", SECRET)

    with pytest.raises(TransientError, match="HTTP 503") as info:
        auth.apply({}, {})
    assert info.value.retry_after == 12.0


def test_answer_without_access_token_is_permanent(sink: Sink, transport: PooledTransport) -> None:
    sink.on("POST", "/token", Reply(200, body=b"<html>login page</html>", headers={"Content-Type": "text/html"}))
    auth = OAuth2ClientCredentials(transport, sink.url + "/token", "cid", SECRET)

    with pytest.raises(PermanentError, match="no 'access_token'"):
        auth.apply({}, {})
