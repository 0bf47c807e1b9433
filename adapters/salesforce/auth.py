"""Salesforce OAuth 2.0 for a server-to-server integration: the JWT bearer flow and client credentials.

Both answer with ``access_token``, ``instance_url`` (the org's REST host: every API call goes there) and ``id``
(``…/id/<org id>/<user id>``) but no ``expires_in``: a session lives as long as the connected app's or the
org's session timeout says. The token is therefore renewed ``session_lifetime`` minus a margin after it was
issued, and at once when Salesforce refuses it (401 ``INVALID_SESSION_ID``); only one thread fetches.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import jwt
import orjson
import structlog

from adapters.http import Auth, Request, Transport
from adapters.http.errors import ErrorPolicy, body_excerpt, parse_retry_after
from bus.errors import ConfigError, PermanentError, TransientError

__all__ = ["JWT_GRANT", "Session", "SalesforceAuth", "org_id_from_identity"]

log = structlog.get_logger(__name__)

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: Salesforce accepts a JWT assertion for at most three minutes after it was made.
ASSERTION_LIFETIME = 180


@dataclass(frozen=True)
class Session:
    """One access token with the instance it belongs to."""

    token: str
    instance_url: str
    org_id: str | None
    refresh_at: float  # monotonic seconds


def org_id_from_identity(identity: object) -> str | None:
    """The org id out of the token answer's ``id`` URL (``https://login…/id/00D…/005…``)."""
    if not isinstance(identity, str):
        return None
    parts = [p for p in urlsplit(identity).path.split("/") if p]
    return parts[-2] if len(parts) >= 3 and parts[-3] == "id" else None


class SalesforceAuth(Auth):
    """Fetches and caches the session for one system; thread-safe, single flight."""

    def __init__(self, transport: Transport, settings: Mapping[str, Any], *, lifetime: float,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.transport = transport
        self.login_url = str(settings["login_url"]).rstrip("/")
        self.doc = dict(settings["auth"])
        self.lifetime = lifetime
        self.clock, self.wall = clock, wall
        self._session: Session | None = None
        self._lock = threading.Lock()
        self._key: str | None = None
        self.fetches = 0

    # -- Auth ------------------------------------------------------------------------------------------
    def apply(self, headers: dict[str, str], params: dict[str, str]) -> object:
        session = self.session()
        headers["Authorization"] = f"Bearer {session.token}"
        return session.token

    def refresh(self, rejected: object) -> bool:
        with self._lock:
            if self._session is not None and self._session.token == rejected:
                self._session = None
        return True

    # -- the session -----------------------------------------------------------------------------------
    def session(self) -> Session:
        current = self._session
        if current is not None and self.clock() < current.refresh_at:
            return current
        with self._lock:
            current = self._session
            if current is None or self.clock() >= current.refresh_at:
                current = self._session = self._fetch()
            return current

    def invalidate(self, token: str) -> None:
        """Forget ``token`` (Salesforce refused it elsewhere, e.g. on the Pub/Sub API)."""
        self.refresh(token)

    def _secrets(self) -> list[str]:
        return [s for s in (self.doc.get("client_secret"), self._key) if s]

    def _clean(self, text: str) -> str:
        for secret in self._secrets():
            text = text.replace(secret, "***")
        return text

    def _private_key(self) -> str:
        if self._key is None:
            if self.doc.get("private_key"):
                self._key = str(self.doc["private_key"])
            else:
                path = Path(str(self.doc.get("private_key_file", "")))
                try:
                    self._key = path.read_text()
                except OSError as exc:
                    raise ConfigError(f"settings/auth/private_key_file: cannot read {path}: {exc.strerror}") from None
        return self._key

    def _form(self) -> dict[str, str]:
        if self.doc["type"] == "client_credentials":
            return {"grant_type": "client_credentials", "client_id": self.doc["client_id"],
                    "client_secret": self.doc["client_secret"]}
        now = int(self.wall())
        claims = {"iss": self.doc["client_id"], "sub": self.doc["username"],
                  "aud": self.doc.get("audience") or self.login_url, "exp": now + ASSERTION_LIFETIME,
                  "iat": now, "jti": uuid.uuid4().hex}
        try:
            assertion = jwt.encode(claims, self._private_key(), algorithm="RS256")
        except (ValueError, TypeError, jwt.PyJWTError) as exc:
            raise PermanentError(f"Salesforce JWT bearer flow: the private key cannot sign RS256 "
                                 f"({type(exc).__name__}); expected an RSA private key in PEM") from None
        return {"grant_type": JWT_GRANT, "assertion": assertion}

    def _fetch(self) -> Session:
        url = f"{self.login_url}/services/oauth2/token"
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
        body = urlencode(self._form()).encode()
        self.fetches += 1
        started = self.clock()
        try:
            response = self.transport.send(Request("POST", url, headers, body))
        except TransientError as exc:
            raise TransientError(self._clean(f"Salesforce token request failed: {exc}"), exc.retry_after) from None
        what = f"Salesforce token request ({self.doc['type']}) to {url}"
        if response.status != 200:
            if ErrorPolicy().is_transient(response.status):
                raise TransientError(self._clean(f"{what}: HTTP {response.status}: {body_excerpt(response)}"),
                                     parse_retry_after(response.header("retry-after")))
            raise PermanentError(self._clean(f"{what} was refused (HTTP {response.status}): "
                                             f"{_oauth_error(response.body)}"))
        try:
            doc: Any = orjson.loads(response.body)
        except ValueError:
            doc = None
        if not isinstance(doc, dict) or not isinstance(doc.get("access_token"), str) \
                or not isinstance(doc.get("instance_url"), str):
            raise PermanentError(f"{what}: the answer lacks access_token or instance_url (is login_url right?)")
        margin = min(300.0, self.lifetime * 0.1)
        session = Session(doc["access_token"], doc["instance_url"].rstrip("/"), org_id_from_identity(doc.get("id")),
                          started + self.lifetime - margin)
        log.info("salesforce_session_opened", instance_url=session.instance_url, org_id=session.org_id,
                 flow=self.doc["type"])
        return session


def _oauth_error(body: bytes) -> str:
    try:
        doc = orjson.loads(body)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and "error" in doc:
        return f"{doc['error']}: {doc.get('error_description') or 'no description'}"
    return " ".join(body[:200].decode("utf-8", errors="replace").split()) or "no error description"
