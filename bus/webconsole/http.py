"""The console's small HTTP layer on raw ASGI: requests with parsed forms and cookies, responses with the
security headers every page gets. Kept tiny on purpose: the webhook server is raw ASGI too, and the console
needs no framework for a dozen server-rendered pages."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

__all__ = ["MAX_FORM", "HttpError", "Request", "Response", "redirect"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

MAX_FORM = 2 * 1024 * 1024  # an edited payload is posted as a form field

# 'self' only: no inline script or style, no framing (clickjacking), no third-party anything.
_SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                                 b"frame-ancestors 'none'; form-action 'self'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Request:
    method: str
    path: str  # below the console's prefix, e.g. "/search"
    prefix: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    cookies: dict[str, str]
    scheme: str = "http"
    form: dict[str, list[str]] = field(default_factory=dict)
    remote: str = ""

    def arg(self, name: str, default: str = "") -> str:
        values = self.query.get(name)
        return values[0].strip() if values else default

    def field(self, name: str, default: str = "") -> str:
        values = self.form.get(name)
        return values[0] if values else default

    def fields(self, name: str) -> list[str]:
        return self.form.get(name, [])

    @property
    def htmx(self) -> bool:
        return self.headers.get("hx-request") == "true"

    @classmethod
    async def read(cls, scope: Scope, receive: Receive, prefix: str) -> Request:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or ()}
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # a malformed Cookie header is ignored, as browsers do
            cookie = SimpleCookie()
        query = parse_qs((scope.get("query_string") or b"").decode("latin-1"), keep_blank_values=True)
        path = str(scope.get("path") or "/")[len(prefix):] or "/"
        client = scope.get("client")
        request = cls(str(scope.get("method") or "GET").upper(), path, prefix, query, headers,
                      {k: m.value for k, m in cookie.items()}, str(scope.get("scheme") or "http"),
                      remote=f"{client[0]}" if client else "")
        if request.method == "POST":
            body = await _body(receive)
            kind = headers.get("content-type", "").split(";")[0].strip().lower()
            if body and kind != "application/x-www-form-urlencoded":
                raise HttpError(415, "forms are posted as application/x-www-form-urlencoded")
            try:
                request.form = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=5000)
            except (UnicodeDecodeError, ValueError) as exc:
                raise HttpError(400, f"malformed form: {exc}") from None
        return request


async def _body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise HttpError(400, "client went away")
        chunk = message.get("body") or b""
        size += len(chunk)
        if size > MAX_FORM:
            raise HttpError(413, f"form larger than {MAX_FORM} bytes")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


@dataclass
class Response:
    body: bytes = b""
    status: int = 200
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    async def send(self, send: Send) -> None:
        headers = [(b"content-type", self.content_type.encode()), (b"content-length", str(len(self.body)).encode()),
                   *_SECURITY_HEADERS, *self.headers]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


def redirect(location: str, status: int = 303) -> Response:
    return Response(b"", status, "text/plain", [(b"location", location.encode("latin-1", "replace"))])
