"""HTTP/1.1 framing of the pooled transport, against a raw socket server that answers exactly the bytes a
test scripts: the shapes real servers send (chunked, interim 1xx, folded headers, close-delimited bodies)
and the broken ones (truncated bodies, bad status lines, conflicting lengths)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from adapters.http.pooled import PooledTransport
from adapters.http.transport import Request, Timeouts
from adapters.http.wire import ConnectionDropped, Http11Connection, ProtocolError, StaticHeaders, encode_request
from bus.errors import TransientError


class RawServer:
    """Accepts connections; for each request read, sends the next scripted answer (bytes), then optionally
    closes the connection. Records every request's raw bytes."""

    def __init__(self, answers: list[tuple[bytes, bool]]) -> None:
        self.answers = list(answers)
        self.requests: list[bytes] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.answers:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                while self.answers:
                    request = self._read_request(conn)
                    if request is None:
                        break
                    self.requests.append(request)
                    answer, close = self.answers.pop(0)
                    conn.sendall(answer)
                    if close:
                        break

    @staticmethod
    def _read_request(conn: socket.socket) -> bytes | None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            body += conn.recv(65536)
        return head + b"\r\n\r\n" + body

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[RawServer] = []

    def start(*answers: bytes | tuple[bytes, bool]) -> RawServer:
        server = RawServer([a if isinstance(a, tuple) else (a, False) for a in answers])
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def _transport() -> PooledTransport:
    return PooledTransport(Timeouts(connect=2, read=2, pool=2))


def post(server: RawServer, transport: PooledTransport | None = None, method: str = "POST",
         body: bytes | None = b'{"a":1}') -> Any:
    transport = transport or _transport()
    return transport.send(Request(method, f"http://127.0.0.1:{server.port}/orders?x=1",
                                  {"Content-Type": "application/json"}, body))


def test_content_length_body_and_keep_alive(serve: Any) -> None:
    server = serve(b"HTTP/1.1 201 Created\r\nContent-Length: 7\r\nX-Id: 9\r\n\r\n{\"n\":1}",
                   b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    transport = _transport()
    first, second = post(server, transport), post(server, transport)
    assert (first.status, first.body, first.headers["x-id"]) == (201, b'{"n":1}', "9")
    assert (second.status, second.body) == (200, b"ok")
    assert transport.connections_opened() == 1
    head = server.requests[0].split(b"\r\n\r\n")[0].split(b"\r\n")
    assert head[0] == b"POST /orders?x=1 HTTP/1.1"
    assert f"Host: 127.0.0.1:{server.port}".encode() in head and b"Content-Length: 7" in head
    assert server.requests[0].endswith(b'{"a":1}')


def test_chunked_body_with_extensions_and_trailers(serve: Any) -> None:
    server = serve(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
                   b"HTTP/1.1 204 No Content\r\n\r\n")
    transport = _transport()
    assert post(server, transport).body == b"hello world"
    assert post(server, transport).status == 204  # the same connection, read exactly to the end
    assert transport.connections_opened() == 1


def test_interim_responses_are_skipped_and_headers_joined_and_unfolded(serve: Any) -> None:
    server = serve(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                   b"HTTP/1.1 200 OK\r\nSet-Thing: a\r\nSet-Thing: b\r\nX-Long: one\r\n two\r\n"
                   b"Content-Length: 0\r\n\r\n")
    response = post(server)
    assert response.status == 200
    assert response.headers["set-thing"] == "a, b" and response.headers["x-long"] == "one two"


def test_body_delimited_by_close_and_http10(serve: Any) -> None:
    server = serve((b"HTTP/1.0 200 OK\r\n\r\nall of it", True), b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n!")
    transport = _transport()
    assert post(server, transport).body == b"all of it"
    assert post(server, transport).body == b"!"
    assert transport.connections_opened() == 2  # a close-delimited body ends the connection


def test_connection_close_header_ends_reuse(serve: Any) -> None:
    # the server keeps the socket open: only the header can tell the client not to reuse it
    server = serve((b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\na", False),
                   b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb")
    transport = _transport()
    assert [post(server, transport).body for _ in range(2)] == [b"a", b"b"]
    assert transport.connections_opened() == 2


def test_head_response_has_no_body(serve: Any) -> None:
    server = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz")
    transport = _transport()
    head = post(server, transport, method="HEAD", body=None)
    assert (head.status, head.body, head.headers["content-length"]) == (200, b"", "1234")
    assert post(server, transport).body == b"z"


def test_post_without_body_says_length_zero_and_get_sends_none(serve: Any) -> None:
    server = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    transport = _transport()
    post(server, transport, body=None)
    post(server, transport, method="GET", body=None)
    assert b"Content-Length: 0" in server.requests[0]
    assert b"content-length" not in server.requests[1].lower()


@pytest.mark.parametrize(("answer", "reason"), [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "closed after 5 of 10 body bytes"),
    (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP/1.x status line"),
    (b"HTTP/1.1 2000 OK\r\n\r\n", "not an HTTP/1.x status line"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\nx", "conflicting Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "bad Content-Length"),
    (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed response header line"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
    (b"HTTP/1.1 200 OK\r\nContent-Le", "in the middle of the response head"),
])
def test_broken_responses_are_transient_and_say_what_is_wrong(serve: Any, answer: bytes, reason: str) -> None:
    server = serve((answer, True))
    with pytest.raises(TransientError, match=reason):
        post(server)


def test_server_closing_before_answering_is_a_dropped_connection(serve: Any) -> None:
    server = serve((b"", True))
    conn = Http11Connection("127.0.0.1", server.port, connect_timeout=2, read_timeout=2)
    conn.connect()
    conn.send_request("POST", "/", {}, b"{}")
    with pytest.raises(ConnectionDropped):
        conn.read_response("POST")
    conn.close()


@pytest.mark.parametrize(("headers", "message"), [
    ({"X-Note": "a\r\nX-Injected: 1"}, "contains a line break"),
    ({"X-Note": "a\nb"}, "contains a line break"),
    ({"Bad Name": "x"}, "invalid HTTP header name"),
    ({"X:y": "x"}, "invalid HTTP header name"),
])
def test_header_injection_is_refused_before_sending(headers: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_request("POST", "/", "example.com", headers, b"{}")


@pytest.mark.parametrize(("headers", "message"), [
    ({"X-Note": "a\r\nX-Injected: 1"}, "contains a line break"),
    ({"Bad Name": "x"}, "invalid HTTP header name"),
])
def test_static_headers_are_checked_when_built(headers: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StaticHeaders(headers)


def test_static_headers_go_first_and_a_request_header_replaces_one() -> None:
    static = StaticHeaders({"Accept": "application/json", "X-Tenant": "acme"})

    plain = encode_request("GET", "/", "example.com", {"X-Id": "1"}, None, static)
    replaced = encode_request("GET", "/", "example.com", {"X-Tenant": "other"}, None, static)

    assert plain == (b"GET / HTTP/1.1\r\nHost: example.com\r\nAccept: application/json\r\nX-Tenant: acme\r\n"
                     b"X-Id: 1\r\n\r\n")
    assert replaced == encode_request("GET", "/", "example.com", {"Accept": "application/json", "X-Tenant": "other"},
                                      None)
    with pytest.raises(ValueError, match="contains a line break"):  # the request's own headers are still checked
        encode_request("GET", "/", "example.com", {"X-Id": "1\r\nX-Injected: 1"}, None, static)
    with pytest.raises(ValueError, match="contains a line break"):
        encode_request("GET", "/", "example.com", {"X-Tenant": "1\nX-Injected: 1"}, None, static)
    virtual = encode_request("POST", "/", "example.com", {}, None, StaticHeaders({"Host": "v.example"}))
    assert b"Host: example.com" not in virtual and b"Host: v.example" in virtual and b"Content-Length: 0" in virtual


def test_host_header_forms() -> None:
    assert b"\r\nHost: example.com\r\n" in encode_request("GET", "/", "example.com", {}, None)
    conn = Http11Connection("::1", 8443, connect_timeout=1, read_timeout=1, default_port=443)
    assert conn.host_header == "[::1]:8443"
    explicit = encode_request("GET", "/", "example.com", {"Host": "other.example"}, None)
    assert b"Host: example.com" not in explicit and b"Host: other.example" in explicit


def test_oversized_response_head_is_refused(serve: Any) -> None:
    server = serve((b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"a" * 70_000 + b"\r\n\r\n", True))
    with pytest.raises(TransientError, match="response head larger than"):
        post(server)


def test_protocol_error_is_an_os_error() -> None:
    # The transport maps OSErrors to TransientError; a ProtocolError must take that path, not escape.
    assert issubclass(ProtocolError, OSError)


def test_bytes_after_a_response_end_the_connection(serve: Any) -> None:
    # A server that sends more than one response's worth (a stray byte after the body) cannot be trusted with
    # the next request on that connection: it would be read as the start of the next response.
    server = serve((b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naX", True),
                   b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb")
    transport = _transport()
    assert [post(server, transport).body for _ in range(2)] == [b"a", b"b"]
    assert transport.connections_opened() == 2
