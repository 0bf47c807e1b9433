"""The HTTP client adapters build on: base URL, credentials, one retry on 401, error classification.

One :class:`HttpClient` per configured system, shared by every worker thread. It never retries anything
but a refused OAuth2 token: retries with backoff are the route's delivery policy, decided in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import orjson
import structlog

from adapters.http.auth import Auth
from adapters.http.errors import ErrorPolicy, error_for_response
from adapters.http.transport import Request, Response, Transport
from adapters.http.wire import StaticHeaders
from bus.errors import DeliveryError

__all__ = ["Classifier", "HttpClient", "Pending", "join_url"]

log = structlog.get_logger(__name__)

#: A vendor's own reading of a failed response; None falls back to the generic :class:`ErrorPolicy`.
Classifier = Callable[[Response], DeliveryError | None]

_NO_JSON = object()


@dataclass(slots=True)
class Pending:
    """One request for :meth:`HttpClient.request_many` (the arguments of :meth:`HttpClient.request`)."""

    method: str
    path: str
    params: Mapping[str, str] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None
    success: Collection[int] | None = None
    what: str | None = None


def join_url(base_url: str, path: str) -> str:
    """``path`` under ``base_url`` (keeping the base's own path prefix); an absolute ``path`` wins."""
    if path.startswith(("http://", "https://")):
        return path
    if not path:
        return base_url
    return base_url.rstrip("/") + "/" + path.lstrip("/")


class HttpClient:
    """Sends requests for one system and turns failures into Transient/PermanentError.

    ``headers`` go with every request; they are checked once, here (ValueError for a name that is not an HTTP
    token or a value with a line break), while the headers given to :meth:`request` are checked on each send.
    """

    def __init__(self, base_url: str, transport: Transport, auth: Auth | None = None,
                 policy: ErrorPolicy | None = None, headers: Mapping[str, str] | None = None,
                 classify: Classifier | None = None) -> None:
        self.base_url = base_url
        self.transport = transport
        self.auth = auth or Auth()
        self.policy = policy or ErrorPolicy()
        self.static_headers = StaticHeaders(headers)
        self.classify = classify

    def request(self, method: str, path: str, *, params: Mapping[str, str] | None = None,
                headers: Mapping[str, str] | None = None, json: Any = _NO_JSON, body: bytes | None = None,
                success: Collection[int] | None = None, what: str | None = None) -> Response:
        """Send one request and return the response when its status is a success.

        ``success`` lists the accepted statuses (default: any 2xx). ``json`` is serialised as the body;
        ``body`` sends raw bytes. Raises :class:`~bus.errors.TransientError` or
        :class:`~bus.errors.PermanentError`; a 401 with a refreshable credential is sent once more.
        """
        own = dict(headers or {})
        if json is not _NO_JSON:
            body = orjson.dumps(json)
            if "Content-Type" not in own and "Content-Type" not in self.static_headers.items:
                own["Content-Type"] = "application/json"
        return self.send(Pending(method, path, params, own, body, success, what))

    def send(self, p: Pending, first: Response | None = None, tag: Any = None) -> Response:
        """:meth:`request` for a prepared request. ``first`` is its answer when it was sent already (with
        ``tag``, the credential it went with): then it is only sent again after a refreshed 401."""
        url = join_url(self.base_url, p.path)
        sent = first
        for attempt in (1, 2):
            if sent is None:
                request, tag = self._prepare(p.method, url, p.headers, p.params, p.body)
                sent = self.transport.send(request)
            if sent.status == 401 and attempt == 1 and self.auth.refresh(tag):
                log.info("http_credential_refused_retrying", url=url)
                sent = None
                continue
            return self._accept(sent, p.success, p.what or f"{p.method} {url}")
        raise AssertionError("unreachable: the second attempt always returns or raises")

    def request_many(self, requests: Sequence[Pending]) -> list[Response | DeliveryError | ValueError]:
        """Send several independent requests at once (a transport with ``send_many``; one by one otherwise):
        one accepted response or delivery error per request, in order (ValueError for one the transport
        refused to write, as :meth:`request` raises it). A 401 with a refreshable credential is sent once more
        on its own, as :meth:`request` does."""
        send_many = getattr(self.transport, "send_many", None)
        if send_many is None or len(requests) < 2:
            return [self._answer(p) for p in requests]
        prepared = [self._prepare(p.method, join_url(self.base_url, p.path), p.headers, p.params, p.body)
                    for p in requests]
        return [sent if isinstance(sent, DeliveryError | ValueError) else self._answer(p, sent, tag)
                for p, (_, tag), sent in zip(requests, prepared, send_many([r for r, _ in prepared]), strict=True)]

    def _answer(self, p: Pending, first: Response | None = None, tag: Any = None,
                ) -> Response | DeliveryError | ValueError:
        """:meth:`send`, with its error as the result (one request's failure is not the others')."""
        try:
            return self.send(p, first, tag)
        except (DeliveryError, ValueError) as exc:
            return exc

    def _prepare(self, method: str, url: str, headers: Mapping[str, str], params: Mapping[str, str] | None,
                 body: bytes | None) -> tuple[Request, Any]:
        """The request to send with the current credential applied, and the credential's tag (for refresh)."""
        send_headers = dict(headers)
        send_params = dict(params or {})
        tag = self.auth.apply(send_headers, send_params)
        full = url + (("&" if "?" in url else "?") + urlencode(send_params) if send_params else "")
        return Request(method, full, send_headers, body, self.static_headers), tag

    def _accept(self, response: Response, success: Collection[int] | None, what: str) -> Response:
        if (response.status in success) if success is not None else 200 <= response.status < 300:
            return response
        error = self.classify(response) if self.classify else None
        raise error or error_for_response(response, self.policy, what)

    def close(self) -> None:
        self.transport.close()
