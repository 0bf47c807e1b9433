"""HTTP/1.1 on one socket: write a request, read the complete response.

``http.client`` parses every response's headers with the ``email`` package and reads the status line through
a buffered file object: in ``bench/e2e.py`` that was the largest single cost of a delivery, ahead of the
mapping and the journal (a profile is in docs/operating.md). This module does the same job with bytes
operations on a connection-owned buffer: one ``sendall`` per request, usually one ``recv`` per response.

It implements what a delivery client needs of RFC 9112: ``Content-Length`` and chunked bodies (trailers
read and dropped), bodies delimited by the server closing the connection, interim 1xx responses skipped,
no body for ``HEAD``/204/304, keep-alive decided from the version and ``Connection`` header. Anything it
cannot read raises :class:`ProtocolError`; a connection the server closed before answering raises
:class:`ConnectionDropped` (the pool retries those once on a fresh connection).
"""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Mapping

__all__ = ["MAX_BODY", "MAX_HEAD", "ConnectionDropped", "Http11Connection", "ProtocolError", "RawResponse",
           "StaticHeaders", "check_header", "join_headers"]

MAX_HEAD = 64 * 1024  # status line and headers together
MAX_BODY = 64 * 1024 * 1024  # a delivery's response is an acknowledgement, not a download
_RECV = 65536
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


class ProtocolError(OSError):
    """The server's answer is not HTTP/1.x as expected (transient: the server may be mid-deploy)."""


class ConnectionDropped(ConnectionError):
    """The connection closed before any byte of the response: typically an idle keep-alive the server
    dropped. Safe to send again on a new connection; every bus delivery carries an Idempotency-Key."""


def check_header(name: str, value: str) -> None:
    """Raise ValueError for a header that would break the message: a name that is not an HTTP token, or a
    value with a line break (it would start a new header or the body: request smuggling)."""
    if not _TOKEN.fullmatch(name):
        raise ValueError(f"invalid HTTP header name {name!r}")
    if "\r" in value or "\n" in value:
        raise ValueError(f"invalid value for HTTP header {name!r}: it contains a line break")


class StaticHeaders:
    """Headers that are the same on every request (a system's settings), checked and encoded once.

    Raises ValueError, as :func:`check_header`, when built. A request's own header of the same name replaces
    the static one.
    """

    __slots__ = ("items", "lines", "has_host", "has_length")

    def __init__(self, headers: Mapping[str, str] | None = None) -> None:
        self.items: dict[str, str] = dict(headers or {})
        for name, value in self.items.items():
            check_header(name, value)
        self.lines = [f"{name}: {value}" for name, value in self.items.items()]
        lower = {name.lower() for name in self.items}
        self.has_host, self.has_length = "host" in lower, "content-length" in lower


NO_HEADERS = StaticHeaders()


class RawResponse:
    """Status, headers (lower-case names, repeated ones joined with ``", "``), body, and whether the
    connection can carry another request."""

    __slots__ = ("status", "headers", "body", "keep_alive")

    def __init__(self, status: int, headers: dict[str, str], body: bytes, keep_alive: bool) -> None:
        self.status, self.headers, self.body, self.keep_alive = status, headers, body, keep_alive


class Http11Connection:
    """One keep-alive connection to ``host:port`` (TLS when ``context`` is given). Not thread-safe: the pool
    hands a connection to one thread at a time."""

    def __init__(self, host: str, port: int, *, connect_timeout: float, read_timeout: float,
                 context: ssl.SSLContext | None = None, default_port: int = 80) -> None:
        self.host, self.port = host, port
        self.connect_timeout, self.read_timeout, self.context = connect_timeout, read_timeout, context
        bracketed = f"[{host}]" if ":" in host else host  # IPv6 literal
        self.host_header = bracketed if port == default_port else f"{bracketed}:{port}"
        self.sock: socket.socket | None = None
        self._buffer = bytearray()

    # -- connection ---------------------------------------------------------------------------------------
    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        try:
            # Requests are small and latency-bound: never hold a segment back for Nagle.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.context is not None:
                sock = self.context.wrap_socket(sock, server_hostname=self.host)
            sock.settimeout(self.read_timeout)  # reads get their own, usually longer, timeout
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self._buffer.clear()

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    # -- one exchange -------------------------------------------------------------------------------------
    def send_request(self, method: str, target: str, headers: Mapping[str, str], body: bytes | None,
                     static: StaticHeaders = NO_HEADERS) -> None:
        """Write the request head and body in one call (one packet for small requests)."""
        if self.sock is None:
            raise ConnectionDropped("not connected")
        self.sock.sendall(encode_request(method, target, self.host_header, headers, body, static))

    def read_response(self, method: str) -> RawResponse:
        """Read one complete response to a request made with ``method``."""
        while True:
            status, version, headers = self._read_head()
            if 100 <= status < 200 and status != 101:
                continue  # interim response (100 Continue, 103 Early Hints): the real one follows
            break
        joined = join_headers(headers)
        connection = joined.get("connection", "").lower()
        keep_alive = ("close" not in connection) if version == "HTTP/1.1" else ("keep-alive" in connection)
        encoding = joined.get("transfer-encoding")
        length = joined.get("content-length")
        if status == 101:  # switched to another protocol: nothing more this client can say on it
            body, keep_alive = b"", False
        elif method == "HEAD" or status in (204, 304):
            body = b""
        elif encoding is not None and encoding.lower().rsplit(",", 1)[-1].strip() == "chunked":
            body = self._read_chunked()
        elif encoding is None and length is not None:
            body = self._read_exactly(_content_length(length))
        else:  # no length, or a transfer coding other than chunked last: the body runs to the close
            body, keep_alive = self._read_to_close(), False
        # bytes beyond the response would be read as the start of the next one: do not reuse the connection
        return RawResponse(status, joined, body, keep_alive and not self._buffer)

    # -- reading ------------------------------------------------------------------------------------------
    def _fill(self) -> bool:
        """Receive more bytes into the buffer; False at end of stream."""
        assert self.sock is not None
        data = self.sock.recv(_RECV)
        if not data:
            return False
        self._buffer += data
        return True

    def _read_head(self) -> tuple[int, str, list[tuple[str, str]]]:
        buffer = self._buffer
        start = 0
        while True:
            end = buffer.find(b"\r\n\r\n", start)
            if end >= 0 or len(buffer) > MAX_HEAD:
                break
            start = max(len(buffer) - 3, 0)
            had = len(buffer)
            if not self._fill():
                if had == 0:
                    raise ConnectionDropped("connection closed by the server before a response")
                raise ProtocolError("connection closed in the middle of the response head")
        if end < 0 or end > MAX_HEAD:
            raise ProtocolError(f"response head larger than {MAX_HEAD} bytes")
        head = bytes(buffer[:end])
        del buffer[:end + 4]
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        version = parts[0].decode("latin-1")
        if len(parts) < 2 or not version.startswith("HTTP/1.") or not (parts[1].isdigit() and len(parts[1]) == 3):
            raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            if line[:1] in (b" ", b"\t") and headers:  # obsolete line folding: continues the previous value
                previous, text = headers[-1]
                headers[-1] = (previous, f"{text} {line.strip().decode('latin-1')}")
                continue
            name, colon, value = line.partition(b":")
            if not colon or not name or name != name.strip():
                raise ProtocolError(f"malformed response header line: {line[:80]!r}")
            headers.append((name.decode("latin-1").lower(), value.strip().decode("latin-1")))
        return int(parts[1]), version, headers

    def _read_exactly(self, size: int) -> bytes:
        buffer = self._buffer
        while len(buffer) < size:
            if not self._fill():
                raise ProtocolError(f"connection closed after {len(buffer)} of {size} body bytes")
        body = bytes(buffer[:size])
        del buffer[:size]
        return body

    def _read_line(self) -> bytes:
        buffer = self._buffer
        while True:
            end = buffer.find(b"\r\n")
            if end >= 0:
                line = bytes(buffer[:end])
                del buffer[:end + 2]
                return line
            if len(buffer) > MAX_HEAD:
                raise ProtocolError("chunk header line too long")
            if not self._fill():
                raise ProtocolError("connection closed in the middle of a chunked body")

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            size_text = self._read_line().split(b";", 1)[0].strip()  # chunk extensions are ignored
            try:
                size = int(size_text, 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size {size_text[:20]!r}") from None
            if size == 0:
                while self._read_line():  # trailer fields, then the empty line
                    pass
                return b"".join(chunks)
            total += size
            if total > MAX_BODY:
                raise ProtocolError(f"response body larger than {MAX_BODY} bytes")
            chunks.append(self._read_exactly(size))
            if self._read_exactly(2) != b"\r\n":
                raise ProtocolError("chunk not followed by CRLF")

    def _read_to_close(self) -> bytes:
        while self._fill():
            if len(self._buffer) > MAX_BODY:
                raise ProtocolError(f"response body larger than {MAX_BODY} bytes")
        body = bytes(self._buffer)
        self._buffer.clear()
        return body


def encode_request(method: str, target: str, host: str, headers: Mapping[str, str], body: bytes | None,
                   static: StaticHeaders = NO_HEADERS) -> bytes:
    """The request head and body as one bytes object: ``static`` headers first, then ``headers``.

    Raises ValueError (see :func:`check_header`) for any of ``headers``; ``static`` ones were checked when
    they were built.
    """
    lines = [f"{method} {target} HTTP/1.1"]
    has_host = has_length = False
    if static.items:
        if static.items.keys().isdisjoint(headers):
            lines += static.lines
            has_host, has_length = static.has_host, static.has_length
        else:  # the request replaces a static header: send the merged set, checked as a whole
            headers = {**static.items, **headers}
    for name, value in headers.items():
        check_header(name, value)
        lower = name.lower()
        has_host = has_host or lower == "host"
        has_length = has_length or lower == "content-length"
        lines.append(f"{name}: {value}")
    if not has_host:
        lines.insert(1, f"Host: {host}")
    if not has_length and (body is not None or method in _METHODS_WITH_BODY):
        lines.append(f"Content-Length: {len(body) if body is not None else 0}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + body if body else head


def join_headers(items: list[tuple[str, str]]) -> dict[str, str]:
    """Response headers as one dict: lower-case names, repeated headers joined with ``", "``."""
    out: dict[str, str] = {}
    for name, value in items:
        key = name.lower()
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def _content_length(text: str) -> int:
    # Repeated identical values ("12, 12") are allowed by RFC 9110; differing ones are an error.
    values = {part.strip() for part in text.split(",")}
    if len(values) != 1:
        raise ProtocolError(f"conflicting Content-Length values {text!r}")
    (value,) = values
    if not value.isdigit():
        raise ProtocolError(f"bad Content-Length {text!r}")
    size = int(value)
    if size > MAX_BODY:
        raise ProtocolError(f"response body of {size} bytes is larger than {MAX_BODY}")
    return size
