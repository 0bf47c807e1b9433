"""Credentials for outbound requests: bearer, basic, API key, and OAuth2 client credentials.

An :class:`Auth` adds its credential to a request and returns a *tag* naming the credential it used. When
the server answers 401 the client calls :meth:`Auth.refresh` with that tag; a True answer means "a fresh
credential is available, send once more". Only OAuth2 can refresh: a static token that is refused stays
refused, and the 401 becomes a permanent error.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus, urlencode

import structlog

from adapters.http.errors import ErrorPolicy, body_excerpt, parse_retry_after
from adapters.http.transport import Request, Transport
from bus.errors import PermanentError, TransientError
from bus.interpolate import redact
from bus.secrets import register

__all__ = ["ApiKeyAuth", "Auth", "BasicAuth", "BearerAuth", "NoAuth", "OAuth2ClientCredentials", "auth_from_settings"]

log = structlog.get_logger(__name__)


class Auth:
    """No credentials. Subclasses add theirs to ``headers`` / ``params`` in :meth:`apply`."""

    def apply(self, headers: dict[str, str], params: dict[str, str]) -> object:
        """Add the credential; return a tag identifying it (handed back to :meth:`refresh`)."""
        return None

    def refresh(self, rejected: object) -> bool:
        """The server refused the credential tagged ``rejected``; True when sending again may help."""
        return False


NoAuth = Auth


class BearerAuth(Auth):
    def __init__(self, token: str) -> None:
        self.token = token
        register(token)

    def apply(self, headers: dict[str, str], params: dict[str, str]) -> object:
        headers["Authorization"] = f"Bearer {self.token}"
        return None


class BasicAuth(Auth):
    def __init__(self, username: str, password: str) -> None:
        raw = f"{username}:{password}".encode()
        register(password, f"{username}:{password}")  # masked in any form an echo may carry, base64 included
        self.value = "Basic " + base64.b64encode(raw).decode("ascii")

    def apply(self, headers: dict[str, str], params: dict[str, str]) -> object:
        headers["Authorization"] = self.value
        return None


class ApiKeyAuth(Auth):
    """A key sent as a header (``X-API-Key: …``) or as a query parameter (``?api_key=…``)."""

    def __init__(self, name: str, value: str, where: str = "header") -> None:
        self.name, self.value, self.where = name, value, where
        register(value)

    def apply(self, headers: dict[str, str], params: dict[str, str]) -> object:
        (params if self.where == "query" else headers)[self.name] = self.value
        return None


@dataclass(frozen=True)
class _Token:
    value: str
    refresh_at: float  # monotonic seconds; +inf when the server gave no lifetime


class OAuth2ClientCredentials(Auth):
    """OAuth 2.0 client-credentials grant (RFC 6749 §4.4), with a token cache shared by all threads.

    The token is reused until shortly before ``expires_in`` runs out (10% of its lifetime, at most
    ``margin`` seconds early). Only one thread fetches a new token; the others wait for it (single flight),
    so a pool of workers hitting an expired token makes one token request, not one each.
    """

    def __init__(self, transport: Transport, token_url: str, client_id: str, client_secret: str, *,
                 scope: str | None = None, audience: str | None = None, client_auth: str = "body",
                 extra: Mapping[str, str] | None = None, margin: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.transport, self.token_url = transport, token_url
        self.client_id, self._secret = client_id, client_secret
        register(client_secret)
        self.scope, self.audience, self.client_auth = scope, audience, client_auth
        self.extra = dict(extra or {})
        self.margin, self.clock = margin, clock
        self._token: _Token | None = None
        self._lock = threading.Lock()
        self.fetches = 0  # token requests made: for tests and metrics

    def apply(self, headers: dict[str, str], params: dict[str, str]) -> object:
        token = self._current()
        headers["Authorization"] = f"Bearer {token}"
        return token

    def refresh(self, rejected: object) -> bool:
        with self._lock:
            if self._token is not None and self._token.value == rejected:
                self._token = None  # the next apply() fetches; a token another thread already renewed is kept
        return True

    def _current(self) -> str:
        token = self._token
        if token is not None and self.clock() < token.refresh_at:
            return token.value
        with self._lock:
            token = self._token
            if token is None or self.clock() >= token.refresh_at:
                token = self._token = self._fetch()
            return token.value

    def _clean(self, text: str) -> str:
        return redact(text.replace(self._secret, "***") if self._secret else text)

    def _fetch(self) -> _Token:
        form: dict[str, str] = {"grant_type": "client_credentials", **self.extra}
        if self.scope:
            form["scope"] = self.scope
        if self.audience:
            form["audience"] = self.audience
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
        if self.client_auth == "basic":
            # RFC 6749 §2.3.1: id and secret are form-encoded before they are joined and base64-encoded.
            raw = f"{quote_plus(self.client_id)}:{quote_plus(self._secret)}".encode()
            register(raw.decode())
            headers["Authorization"] = "Basic " + base64.b64encode(raw).decode("ascii")
        else:
            form["client_id"] = self.client_id
            form["client_secret"] = self._secret
        self.fetches += 1
        started = self.clock()
        try:
            response = self.transport.send(Request("POST", self.token_url, headers, urlencode(form).encode()))
        except TransientError as exc:
            raise TransientError(self._clean(f"OAuth2 token request failed: {exc}"), exc.retry_after) from None
        what = f"OAuth2 token request to {self.token_url}"
        if response.status != 200:
            if ErrorPolicy().is_transient(response.status):
                raise TransientError(self._clean(f"{what}: HTTP {response.status}: {body_excerpt(response)}"),
                                     parse_retry_after(response.header("retry-after")))
            raise PermanentError(self._clean(f"{what} was refused (HTTP {response.status}): "
                                             f"{self._describe_error(response.body)}"))
        try:
            doc: Any = response.json()
        except ValueError:
            doc = None
        if not isinstance(doc, dict) or not isinstance(doc.get("access_token"), str):
            raise PermanentError(f"{what}: the answer has no 'access_token' (is token_url right?)")
        lifetime = doc.get("expires_in")
        try:
            seconds = float(lifetime) if lifetime is not None else None
        except (TypeError, ValueError):
            seconds = None
        refresh_at = float("inf") if seconds is None else started + seconds - min(self.margin, seconds * 0.1)
        register(doc["access_token"])
        log.info("oauth2_token_fetched", token_url=self.token_url, expires_in=seconds)
        return _Token(doc["access_token"], refresh_at)

    @staticmethod
    def _describe_error(body: bytes) -> str:
        try:
            import orjson

            doc = orjson.loads(body)
        except ValueError:
            doc = None
        if isinstance(doc, dict) and "error" in doc:
            description = doc.get("error_description")
            return f"{doc['error']}" + (f": {description}" if description else "")
        text = redact(" ".join(body[:1200].decode("utf-8", errors="replace").split()))[:300]  # mask, then cut
        return text or "no error description"


def auth_from_settings(doc: Mapping[str, Any] | None, transport: Transport) -> Auth:
    """Build the :class:`Auth` a validated ``auth:`` settings block describes (None: no credentials)."""
    if not doc:
        return Auth()
    kind = doc["type"]
    if kind == "bearer":
        return BearerAuth(doc["token"])
    if kind == "basic":
        return BasicAuth(doc["username"], doc["password"])
    if kind == "api_key":
        return ApiKeyAuth(doc["name"], doc["value"], doc.get("in", "header"))
    if kind == "oauth2_client_credentials":
        return OAuth2ClientCredentials(
            transport, doc["token_url"], doc["client_id"], doc["client_secret"], scope=doc.get("scope"),
            audience=doc.get("audience"), client_auth=doc.get("client_auth", "body"),
            extra=doc.get("extra_params"))
    raise ValueError(f"unknown auth type {kind!r}")  # the settings schema rules this out
