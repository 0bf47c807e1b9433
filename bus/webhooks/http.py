"""Small ASGI helpers: reading headers, rebuilding the URL a caller used, answering."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

import orjson

__all__ = [
    "Receive", "Scope", "Send", "headers_of", "query_of", "redact_hook_path", "request_url", "respond", "respond_json",
]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def headers_of(scope: Scope) -> dict[str, str]:
    """Lower-case header names to values; a repeated header is joined with ``", "`` as RFC 9110 allows.

    Values are decoded as latin-1, which never fails: a non-ASCII header byte must not crash the server.
    """
    out: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers") or ():
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


def query_of(scope: Scope) -> dict[str, str]:
    """Query parameters (first value of each name); undecodable escapes become U+FFFD."""
    raw = scope.get("query_string") or b""
    out: dict[str, str] = {}
    for name, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
        out.setdefault(name, value)
    return out


def _first(value: str) -> str:
    return value.split(",", 1)[0].strip()


def request_url(scope: Scope, headers: dict[str, str], trust_proxy: bool) -> str:
    """The full URL as the caller called it: scheme, host, path (still percent-encoded) and query.

    Signature schemes such as HubSpot v3 sign this exact string, so the path is taken from ``raw_path``
    (as sent, escapes intact). Behind a TLS-terminating proxy the server sees ``http`` and an internal host;
    ``X-Forwarded-Proto`` / ``X-Forwarded-Host`` restore the public ones, but only with ``trust_proxy``,
    because any client can send those headers.
    """
    scheme = str(scope.get("scheme") or "http")
    host = headers.get("host")
    if trust_proxy:
        scheme = _first(headers.get("x-forwarded-proto", "")) or scheme
        host = _first(headers.get("x-forwarded-host", "")) or host
    if not host:
        server = scope.get("server")
        host = f"{server[0]}:{server[1]}" if server else "localhost"
    raw_path = scope.get("raw_path")
    path = raw_path.decode("latin-1") if raw_path else str(scope.get("path") or "/")
    query = (scope.get("query_string") or b"").decode("latin-1")
    return f"{scheme}://{host}{path}" + (f"?{query}" if query else "")


def redact_hook_path(path: str) -> str:
    """A hook path safe to log: a URL token (``/hooks/s/t/<token>``) is a secret, so it is masked."""
    parts = path.split("/")
    if len(parts) >= 5 and parts[1] == "hooks" and parts[4]:
        return "/".join([*parts[:4], "***"])
    return path[:200]


async def respond(send: Send, status: int, body: bytes, content_type: str = "application/json",
                  headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """Send a complete response."""
    head = [(b"content-type", content_type.encode("latin-1")), (b"content-length", str(len(body)).encode())]
    if headers:
        head.extend(headers)
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


async def respond_json(send: Send, status: int, doc: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """Send ``doc`` as a JSON response."""
    await respond(send, status, orjson.dumps(doc), "application/json", headers)
