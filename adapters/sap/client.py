"""The HTTP side of one SAP system: credentials, the CSRF token, OData reads with paging, writes, ``$batch``.

SAP Gateway refuses a write (POST, PATCH, PUT, MERGE, DELETE, ``$batch``) unless it carries a CSRF token
that was fetched in the *same session*: a read with ``x-csrf-token: Fetch`` returns the token and sets the
session cookies, and both must travel with the write. So the client keeps a cookie jar (one
``httpx.Client``) and caches the token per session — keyed by the session cookies it was issued with. When
the server forgets the session (a timeout, a restart, another application server behind the load
balancer) it answers 403 with ``x-csrf-token: Required``; the client then fetches a fresh token once and
sends the write again.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlencode, urljoin

import httpx
import orjson
import structlog

from adapters.http.auth import Auth, BasicAuth, OAuth2ClientCredentials
from adapters.http.errors import ErrorPolicy
from adapters.http.transport import HttpxTransport, Timeouts
from adapters.sap.batch import BatchRequest, BatchResponse, build_batch, parse_batch
from adapters.sap.errors import classify
from adapters.sap.odata import next_link, results
from adapters.tls import client_context
from bus.errors import DeliveryError, PermanentError, TransientError

__all__ = ["SapClient", "auth_for"]

log = structlog.get_logger(__name__)

_WRITES = frozenset({"POST", "PUT", "PATCH", "MERGE", "DELETE"})
#: Pages followed by one read at most: a guard against a server whose __next never ends.
MAX_PAGES = 10_000


def auth_for(doc: Mapping[str, Any], timeouts: Timeouts, verify: bool | str) -> Auth:
    """Basic (a communication user) or OAuth 2.0 client credentials, from the ``auth`` settings."""
    if doc["type"] == "basic":
        return BasicAuth(doc["username"], doc["password"])
    return OAuth2ClientCredentials(HttpxTransport(timeouts, verify=verify), doc["token_url"], doc["client_id"],
                                   doc["client_secret"], scope=doc.get("scope"),
                                   client_auth=doc.get("client_auth", "basic"))


def _query(params: Mapping[str, str]) -> str:
    """A query string as SAP's own clients write it: ``$`` and OData punctuation literal, spaces as ``%20``
    (never ``+``: Gateway reads a ``+`` in ``$filter`` as a plus sign)."""
    return urlencode(params, quote_via=quote, safe="$,'():/@")


class SapClient:
    """Requests to the OData services of one SAP system (thread-safe; one per configured system)."""

    def __init__(self, url: str, auth: Auth, *, service_root: str = "/sap/opu/odata/sap",
                 sap_client: str | None = None, timeouts: Timeouts | None = None, verify: bool | str = True,
                 policy: ErrorPolicy | None = None, lock_messages: frozenset[str] = frozenset(),
                 language: str | None = None) -> None:
        timeouts = timeouts or Timeouts()
        self.root = url.rstrip("/") + "/" + service_root.strip("/")
        self.auth = auth
        self.policy = policy or ErrorPolicy()
        self.lock_messages = lock_messages
        self.params = {"sap-client": sap_client} if sap_client else {}
        headers = {"Accept": "application/json"}
        if language:
            headers["Accept-Language"] = language
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeouts.read, connect=timeouts.connect, pool=timeouts.pool),
            verify=client_context(verify) if isinstance(verify, str) else verify, headers=headers)
        self._tokens: dict[str, str] = {}  # session fingerprint -> CSRF token
        self._csrf_lock = threading.Lock()
        self.csrf_fetches = 0  # for tests and metrics

    # -- URLs ----------------------------------------------------------------------------------------
    def service_url(self, service: str) -> str:
        return f"{self.root}/{service}"

    def url(self, service: str, path: str) -> str:
        return f"{self.service_url(service)}/{path.lstrip('/')}"

    # -- reads ---------------------------------------------------------------------------------------
    def get(self, service: str, path: str, params: Mapping[str, str] | None = None) -> Any:
        """GET one resource as JSON (``$format=json`` is implied by the Accept header)."""
        response = self._send("GET", self.url(service, path), params=params, what=f"GET {service}/{path}")
        return self.json_of(response, f"GET {service}/{path}")

    def get_all(self, service: str, path: str, params: Mapping[str, str] | None = None,
                limit: int | None = None) -> list[dict[str, Any]]:
        """Every entity of a collection, following the server's ``__next`` links (its ``$skiptoken`` paging)."""
        what = f"GET {service}/{path}"
        doc = self.get(service, path, params)
        rows = list(results(doc, what))
        link = next_link(doc)
        pages = 1
        while link and (limit is None or len(rows) < limit):
            pages += 1
            if pages > MAX_PAGES:
                raise PermanentError(f"{what}: more than {MAX_PAGES} pages; is the server's __next looping?")
            absolute = urljoin(self.service_url(service) + "/", link)
            response = self._send("GET", absolute, params=None, what=what, keep_params=False)
            doc = self.json_of(response, what)
            rows.extend(results(doc, what))
            link = next_link(doc)
        return rows

    # -- writes --------------------------------------------------------------------------------------
    def write(self, method: str, service: str, path: str, body: Any = None,
              headers: Mapping[str, str] | None = None) -> httpx.Response:
        """A write with the session's CSRF token (fetched, cached, refetched once on 403 ``Required``)."""
        content = orjson.dumps(body) if body is not None else None
        own = {"Content-Type": "application/json", **(headers or {})} if content is not None else dict(headers or {})
        return self._send(method, self.url(service, path), content=content, headers=own,
                          what=f"{method} {service}/{path}", service=service)

    def batch(self, service: str, groups: Sequence[BatchRequest | Sequence[BatchRequest]],
              headers: Mapping[str, str] | None = None) -> list[BatchResponse | list[BatchResponse]]:
        """Send one ``$batch`` (reads and change sets) and return the answers in request order.

        A server may stop at the first failed change set and leave the rest unanswered (CAP does unless told
        to continue on error): the answers then end early, and the caller treats the unanswered as not done.
        """
        content_type, content = build_batch(groups)
        what = f"POST {service}/$batch"
        response = self._send("POST", self.url(service, "$batch"), content=content,
                              headers={"Content-Type": content_type, **(headers or {})}, what=what,
                              service=service)
        answers = parse_batch(response.headers.get("content-type", ""), response.content, what)
        if len(answers) > len(groups):
            raise PermanentError(f"{what}: {len(groups)} parts sent, {len(answers)} answered")
        return answers

    def fail(self, status: int, body: bytes, retry_after: str | None, what: str) -> DeliveryError:
        """The classified error of a failed answer (also for one part of a ``$batch``)."""
        return classify(status, body, retry_after, what, self.policy, self.lock_messages)

    # -- plumbing ------------------------------------------------------------------------------------
    def _session(self) -> str:
        """A fingerprint of the session cookies: a CSRF token is valid only with the cookies it came with."""
        jar = sorted((c.name, c.value) for c in self._http.cookies.jar)
        return hashlib.sha256(repr(jar).encode()).hexdigest()[:16]

    def _csrf(self, service: str, stale: str | None = None) -> str:
        with self._csrf_lock:
            current = self._tokens.get(self._session())
            if current is not None and current != stale:
                return current  # another thread fetched one meanwhile
            if stale is not None:
                self._tokens.clear()
            # the service document: small, and readable by every user allowed to use the service
            response = self._send("GET", self.service_url(service) + "/", headers={"x-csrf-token": "Fetch"},
                                  what=f"CSRF token fetch from {service}")
            token: str | None = response.headers.get("x-csrf-token")
            if not token or token.lower() == "required":
                raise PermanentError("CSRF token fetch: the server sent no x-csrf-token (is the user allowed to "
                                     "write, and does a proxy strip the header?)")
            self.csrf_fetches += 1
            assert token is not None
            self._tokens[self._session()] = token
            log.info("sap_csrf_token_fetched", session=self._session())
            return token

    def _send(self, method: str, url: str, *, params: Mapping[str, str] | None = None, content: bytes | None = None,
              headers: Mapping[str, str] | None = None, what: str, service: str | None = None,
              keep_params: bool = True) -> httpx.Response:
        needs_token = service is not None and method in _WRITES
        token = self._csrf(service) if service is not None and needs_token else None
        refreshed_auth = refreshed_csrf = False
        while True:
            send_headers = dict(headers or {})
            send_params = {**self.params, **(params or {})} if keep_params else {}
            tag = self.auth.apply(send_headers, send_params)
            if token is not None:
                send_headers["x-csrf-token"] = token
            target = url + (("&" if "?" in url else "?") + _query(send_params) if send_params else "")
            try:
                response = self._http.request(method, target, content=content, headers=send_headers)
            except httpx.TimeoutException as exc:
                raise TransientError(f"{what}: timed out ({type(exc).__name__})") from None
            except httpx.TransportError as exc:
                raise TransientError(f"{what}: {type(exc).__name__}: {exc}") from None
            if response.status_code == 401 and not refreshed_auth and self.auth.refresh(tag):
                refreshed_auth = True
                continue
            if (response.status_code == 403 and needs_token and not refreshed_csrf
                    and response.headers.get("x-csrf-token", "").lower() == "required"):
                refreshed_csrf = True
                log.info("sap_csrf_token_refused_refetching", what=what)
                assert service is not None
                token = self._csrf(service, stale=token)
                continue
            if 200 <= response.status_code < 300:
                return response
            raise self.fail(response.status_code, response.content, response.headers.get("retry-after"), what)

    @staticmethod
    def json_of(response: httpx.Response, what: str) -> Any:
        """The JSON body of an answer; PermanentError naming the request when it is not JSON."""
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise PermanentError(f"{what}: the answer is not JSON "
                                 f"({response.headers.get('content-type', 'no content type')})") from None

    def close(self) -> None:
        self._http.close()
