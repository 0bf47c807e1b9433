"""The inbound HTTP application (raw ASGI): webhooks, liveness, readiness and metrics.

``POST /hooks/{system}/{trigger}[/{token}]`` runs the endpoint's handler (verify + parse), turns every payload
into an :class:`~bus.envelope.Event`, awaits ``ingest`` and only then answers ``202 {"accepted": [ids]}``.
A vendor that gets a 202 may forget the delivery, so 202 must mean "durably journaled": an ingest failure
answers 503, which makes the vendor retry.

Every refusal is answered with ``{"error": reason, "detail": message}``, logged with the reason, the path
(URL token masked) and the remote address, and counted in ``ironbus_webhook_rejected_total``. No input can
crash the app: an unexpected handler exception answers 500 and is logged with its traceback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from adapters.base import WebhookRequest
from bus import telemetry
from bus.envelope import Event
from bus.errors import DecodeError, PermanentError, TransientError
from bus.inbound import inbound_event_ids
from bus.limits import InputRejected, check_payloads
from bus.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from bus.metrics import Metrics, default
from bus.webhooks.base import Endpoint, Ingest, WebhookRejected, media_type_allowed
from bus.webhooks.http import (
    Receive,
    Scope,
    Send,
    headers_of,
    query_of,
    redact_hook_path,
    request_url,
    respond,
    respond_json,
)

__all__ = ["WebhookApp"]

log = structlog.get_logger(__name__)

_NO_LABEL = "-"  # metric label for requests that match no endpoint: never the raw path (unbounded cardinality)


class _ClientGone(Exception):
    """The client disconnected before its body was read; there is nobody to answer."""


class _Refusal(Exception):
    def __init__(self, status: int, reason: str, detail: str, headers: list[tuple[bytes, bytes]] | None = None):
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail
        self.headers = headers


class WebhookApp:
    """The ASGI application serving webhooks, ``/ping``, ``/ready`` and ``/metrics``.

    ``endpoints`` maps ``(system, trigger)`` to its :class:`Endpoint`; ``ingest`` is awaited with the events
    of one request (it runs on the server's event loop, so it must not block it: hand blocking work to a
    thread); ``ready()`` answers ``(ok, reason)`` for ``GET /ready``; ``max_body`` caps a request body in
    bytes and ``max_header_bytes`` all header names and values together (431 beyond it); ``trust_proxy``
    honours ``X-Forwarded-Proto`` / ``X-Forwarded-Host`` when rebuilding the URL.
    """

    def __init__(self, endpoints: Mapping[tuple[str, str], Endpoint], ingest: Ingest,
                 ready: Callable[[], tuple[bool, str]], max_body: int = 1_048_576, *, trust_proxy: bool = False,
                 metrics: Metrics | None = None, max_header_bytes: int = 65_536) -> None:
        self.endpoints = dict(endpoints)
        self.max_header_bytes = max_header_bytes
        self.ingest = ingest
        self.ready = ready
        self.max_body = max_body
        self.trust_proxy = trust_proxy
        self.metrics = metrics or default()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":
            if kind == "websocket":
                await send({"type": "websocket.close", "code": 1003})
            return
        path = str(scope.get("path") or "/")
        method = str(scope.get("method") or "GET").upper()
        header_bytes = sum(len(name) + len(value) for name, value in scope.get("headers") or ())
        if header_bytes > self.max_header_bytes:
            # uvicorn's httptools parser sets no limit of its own; h11 stops at 16 KiB before we see anything.
            self._rejected(scope, path, _NO_LABEL, _NO_LABEL, "headers_too_large", 431, f"{header_bytes} bytes")
            await respond_json(send, 431, {"error": "headers_too_large",
                                           "detail": f"request headers exceed {self.max_header_bytes} bytes"})
            return
        if path.startswith("/hooks/"):
            await self._hook(scope, receive, send, path, method)
        elif path in ("/ping", "/ready", "/metrics"):
            await self._probe(send, path, method, scope)
        else:
            self._rejected(scope, path, _NO_LABEL, _NO_LABEL, "not_found", 404, "no such endpoint")
            await respond_json(send, 404, {"error": "not_found", "detail": f"no endpoint at {path[:200]}"})

    # -- probes ----------------------------------------------------------------------------------------
    async def _probe(self, send: Send, path: str, method: str, scope: Scope) -> None:
        if method not in ("GET", "HEAD"):
            self._rejected(scope, path, _NO_LABEL, _NO_LABEL, "method_not_allowed", 405, f"{method} not allowed")
            await respond_json(send, 405, {"error": "method_not_allowed", "detail": f"{path} answers GET only"},
                               [(b"allow", b"GET, HEAD")])
            return
        if path == "/ping":
            await respond(send, 200, b"pong", "text/plain; charset=utf-8")
        elif path == "/metrics":
            await respond(send, 200, self.metrics.render(), METRICS_CONTENT_TYPE)
        else:
            try:
                # ready() may look at a database or a broker: keep it off the event loop.
                ok, reason = await asyncio.to_thread(self.ready)
            except Exception as exc:  # a failing readiness check means "not ready", never a crash
                ok, reason = False, f"readiness check failed: {type(exc).__name__}: {exc}"
            status = 200 if ok else 503
            await respond(send, status, (reason or ("ready" if ok else "not ready")).encode(),
                          "text/plain; charset=utf-8")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- webhooks --------------------------------------------------------------------------------------
    async def _hook(self, scope: Scope, receive: Receive, send: Send, path: str, method: str) -> None:
        parts = path.split("/")  # ["", "hooks", system, trigger, token?]
        endpoint = self.endpoints.get((parts[2], parts[3])) if len(parts) in (4, 5) else None
        if endpoint is None:
            self._rejected(scope, path, _NO_LABEL, _NO_LABEL, "not_found", 404, "no such webhook endpoint")
            await respond_json(send, 404, {"error": "not_found",
                                           "detail": f"no webhook endpoint at {redact_hook_path(path)}"})
            return
        seen: list[WebhookRequest] = []  # the request once its body is read, for a protocol-shaped answer
        try:
            accepted = await self._accept(endpoint, scope, receive, method, seen)
        except _ClientGone:
            log.info("webhook client disconnected", system=endpoint.system, trigger=endpoint.trigger,
                     path=redact_hook_path(path), remote=_remote(scope))
            return
        except _Refusal as refusal:
            self._rejected(scope, path, endpoint.system, endpoint.trigger, refusal.reason, refusal.status,
                           refusal.detail)
            if not await self._answer(send, endpoint, seen, refusal.status, refusal.reason, refusal.detail, [],
                                      refusal.headers):
                await respond_json(send, refusal.status, {"error": refusal.reason, "detail": refusal.detail},
                                   refusal.headers)
            return
        if not await self._answer(send, endpoint, seen, 202, "accepted", "", accepted, None):
            await respond_json(send, 202, {"accepted": accepted})

    async def _answer(self, send: Send, endpoint: Endpoint, seen: list[WebhookRequest], status: int, reason: str,
                      detail: str, accepted: list[str], headers: list[tuple[bytes, bytes]] | None) -> bool:
        """Send the adapter's protocol-shaped answer when it gives one; False leaves the JSON answer to the caller."""
        if endpoint.answer is None:
            return False
        try:
            answer = endpoint.answer(seen[0] if seen else None, status, reason, detail, accepted)
        except Exception as exc:  # a broken answer hook must not turn an accepted document into a 500
            log.error("webhook answer hook failed", system=endpoint.system, trigger=endpoint.trigger,
                      error=f"{type(exc).__name__}: {exc}", exc_info=True)
            return False
        if answer is None:
            return False
        extra = list(headers or [])
        extra.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers.items())
        await respond(send, answer.status, answer.body, answer.content_type, extra)
        return True

    async def _accept(self, endpoint: Endpoint, scope: Scope, receive: Receive, method: str,
                      seen: list[WebhookRequest]) -> list[str]:
        if method != "POST":
            raise _Refusal(405, "method_not_allowed", f"{method} not allowed; webhooks are POSTed",
                           [(b"allow", b"POST")])
        headers = headers_of(scope)
        declared = headers.get("content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                raise _Refusal(400, "bad_request", "Content-Length is not a number") from None
            if length > self.max_body:
                raise _Refusal(413, "too_large", f"body of {length} bytes exceeds the limit of {self.max_body}")
        if not media_type_allowed(headers.get("content-type"), endpoint.content_types):
            raise _Refusal(415, "unsupported_media_type",
                           f"Content-Type {headers.get('content-type', '')[:100]!r} not accepted here; "
                           f"expected {', '.join(endpoint.content_types)}")
        body = await self._read_body(receive)
        request = WebhookRequest(method=method, url=request_url(scope, headers, self.trust_proxy), headers=headers,
                                 body=body, query=query_of(scope))
        seen.append(request)
        payloads = await self._run_handler(endpoint, request)
        events = self._events(endpoint, payloads, request.body)
        if telemetry.enabled:
            events = telemetry.with_inbound(events, headers)
        if events:
            try:
                await self.ingest(events)
            except InputRejected as exc:  # checked before joining a group commit: only this request fails
                raise _Refusal(exc.status, exc.reason, str(exc)) from None
            except Exception as exc:  # whatever failed, the vendor must not get a 202: it has to retry
                # an outage (journal or broker away) is expected and frequent then: no traceback for it
                log.error("webhook ingest failed", system=endpoint.system, trigger=endpoint.trigger,
                          event_ids=[e.id for e in events], error=f"{type(exc).__name__}: {exc}",
                          exc_info=not isinstance(exc, TransientError))
                raise _Refusal(503, "ingest_failed", "the bus could not store the events; retry later",
                               [(b"retry-after", b"5")]) from None
            self.metrics.received(endpoint.system, endpoint.trigger, len(events))
        # No per-request log line on success: ingest journals every event (with its id), and a log call per
        # request would cost more than the signature check.
        return [e.id for e in events]

    async def _read_body(self, receive: Receive) -> bytes:
        # Content-Length may be absent (chunked) or lie, so the limit is enforced while reading too.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone()
            chunk = message.get("body") or b""
            size += len(chunk)
            if size > self.max_body:
                raise _Refusal(413, "too_large", f"body exceeds the limit of {self.max_body} bytes")
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    async def _run_handler(self, endpoint: Endpoint, request: WebhookRequest) -> list[Any]:
        try:
            if endpoint.blocking:
                payloads = await asyncio.get_running_loop().run_in_executor(None, _checked, endpoint.handler,
                                                                            request)
            else:
                payloads = _checked(endpoint.handler, request)
        except InputRejected as exc:
            raise _Refusal(exc.status, exc.reason, str(exc)) from None
        except WebhookRejected as exc:
            raise _Refusal(exc.status, exc.reason, str(exc)) from None
        except (PermanentError, DecodeError) as exc:
            raise _Refusal(400, "bad_request", str(exc)) from None
        except TransientError as exc:
            raise _Refusal(503, "unavailable", str(exc), [(b"retry-after", b"5")]) from None
        except (UnicodeError, RecursionError) as exc:  # undecodable or absurdly nested input, not a bus fault
            raise _Refusal(400, "malformed_body", f"body cannot be decoded: {type(exc).__name__}: "
                                                  f"{str(exc)[:200]}") from None
        except Exception as exc:  # a handler bug must cost one 500, not the server
            log.error("webhook handler failed", system=endpoint.system, trigger=endpoint.trigger,
                      error=f"{type(exc).__name__}: {exc}", exc_info=True)
            raise _Refusal(500, "handler_error", "the webhook handler failed; see the bus log") from None
        if not isinstance(payloads, list):
            log.error("webhook handler returned a non-list", system=endpoint.system, trigger=endpoint.trigger,
                      returned=type(payloads).__name__)
            raise _Refusal(500, "handler_error", "the webhook handler returned no list of payloads")
        return payloads

    def _events(self, endpoint: Endpoint, payloads: list[Any], body: bytes = b"") -> list[Event]:
        source = f"ironbus/{endpoint.system}"
        events: list[Event] = []
        ids = inbound_event_ids(endpoint.system, endpoint.trigger, body, len(payloads))
        for payload, event_id in zip(payloads, ids, strict=True):
            key: str | None = None
            if endpoint.key is not None:
                try:
                    found = endpoint.key(payload)
                except Exception as exc:  # the key expression does not fit this payload: the payload is bad
                    raise _Refusal(400, "bad_request", f"cannot compute the business key: {exc}") from None
                key = None if found is None else str(found)
            events.append(Event(type=endpoint.event_type, source=source, data=payload, key=key, id=event_id))
        return events

    def _rejected(self, scope: Scope, path: str, system: str, trigger: str, reason: str, status: int,
                  detail: str) -> None:
        self.metrics.rejected(system, trigger, reason)
        extra: dict[str, Any] = {}
        if self.trust_proxy:
            forwarded = headers_of(scope).get("x-forwarded-for")
            if forwarded:
                extra["forwarded_for"] = forwarded[:200]
        log.warning("webhook rejected", reason=reason, status=status, detail=detail, path=redact_hook_path(path),
                    method=scope.get("method"), remote=_remote(scope), system=system, trigger=trigger, **extra)


def _checked(handler: Callable[[WebhookRequest], list[Any]], request: WebhookRequest) -> Any:
    """The handler's payloads, refused (400) when the bus could not store them, in the handler's thread."""
    payloads = handler(request)
    if isinstance(payloads, list):
        check_payloads(payloads)
    return payloads


def _remote(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "unknown"
