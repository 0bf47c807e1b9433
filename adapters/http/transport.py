"""Sending one HTTP request: a small plug point with two implementations.

* :class:`~adapters.http.pooled.PooledTransport` (the default) keeps a bounded pool of keep-alive connections
  per origin, shared by every worker thread, speaking HTTP/1.1 through :mod:`adapters.http.wire`. Measured in
  ``bench/http_client.py`` it carries several times the request rate of an ``httpx.Client`` shared by the
  same threads, which could not reach the 2,000 deliveries/s the bus needs (see docs/http-adapter.md).
* :class:`HttpxTransport` wraps ``httpx.Client``: proxies from the environment, and mockable with respx.

A transport raises :class:`~bus.errors.TransientError` for connect failures and timeouts, and returns every
response whatever its status: classifying statuses is the client's job.

This module holds the plug point itself (the request, response and limit values, the :class:`Transport`
protocol) and the httpx implementation; the pooled one is :mod:`adapters.http.pooled`.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol
from urllib.parse import urlsplit

import httpx
import orjson

from adapters.http.wire import NO_HEADERS, StaticHeaders, join_headers
from adapters.tls import client_context
from bus import telemetry
from bus.errors import TransientError

__all__ = ["HttpxTransport", "PoolLimits", "Request", "Response", "Timeouts", "Transport"]


@dataclass(frozen=True)
class Timeouts:
    """Seconds to wait: to connect, for each read of the response, and for a free pooled connection."""

    connect: float = 5.0
    read: float = 30.0
    pool: float = 30.0


@dataclass(frozen=True)
class PoolLimits:
    """At most ``max_connections`` open per origin; idle ones are closed after ``keepalive`` seconds."""

    max_connections: int = 20
    keepalive: float = 30.0


@dataclass(frozen=True)
class Request:
    """One request. ``static_headers`` (a system's settings, checked once) go out with ``headers``, which win
    for a name in both; a transport checks ``headers`` on every send, as they may carry payload values."""

    method: str
    url: str  # absolute
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None
    static_headers: StaticHeaders = NO_HEADERS


@dataclass(frozen=True)
class Response:
    """A complete response. ``headers`` has lower-case names; repeated headers are joined with ``", "``."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str = ""

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def json(self) -> object:
        """The body parsed as JSON; raises ``ValueError`` when it is not JSON."""
        return orjson.loads(self.body)


class Transport(Protocol):
    def send(self, request: Request) -> Response:
        """Send and read the whole response; TransientError on connect failures and timeouts."""

    def close(self) -> None: ...


def traced(request: Request) -> Request:
    """The request with the current span's W3C ``traceparent`` (bus.telemetry), unless it carries one."""
    if any(name.lower() == "traceparent" for name in request.headers):
        return request
    headers = dict(request.headers)
    telemetry.inject(headers)
    return request if len(headers) == len(request.headers) else replace(request, headers=headers)


class HttpxTransport:
    """``httpx.Client`` behind the transport interface (proxies from the environment; respx in tests)."""

    def __init__(self, timeouts: Timeouts | None = None, limits: PoolLimits | None = None,
                 verify: bool | str = True, client: httpx.Client | None = None) -> None:
        timeouts = timeouts or Timeouts()
        limits = limits or PoolLimits()
        self.client = client or httpx.Client(
            timeout=httpx.Timeout(timeouts.read, connect=timeouts.connect, pool=timeouts.pool),
            limits=httpx.Limits(max_connections=limits.max_connections,
                                max_keepalive_connections=limits.max_connections,
                                keepalive_expiry=limits.keepalive),
            # httpx 0.28 deprecates a CA bundle path for verify; an SSL context says the same thing. True and
            # False stay httpx's own: its default trusts certifi's bundle (or SSL_CERT_FILE), not the system's.
            verify=client_context(verify) if isinstance(verify, str) else verify)

    def send(self, request: Request) -> Response:
        if telemetry.enabled:
            request = traced(request)
        where = f"{request.method} {request.url}"
        headers = {**request.static_headers.items, **request.headers}
        try:
            response = self.client.request(request.method, request.url, headers=headers, content=request.body)
        except httpx.TimeoutException as exc:
            raise TransientError(f"{where}: timed out ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise TransientError(f"{where}: {type(exc).__name__}: {exc}") from None
        return Response(response.status_code, join_headers(list(response.headers.multi_items())),
                        response.content, str(response.url))

    def close(self) -> None:
        self.client.close()


def probe(url: str, timeout: float) -> str | None:
    """Open and close a TCP connection to the URL's host; None when that worked, else the reason."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=timeout):
            return None
    except OSError as exc:
        return f"cannot connect to {parts.hostname}:{port}: {exc}"
