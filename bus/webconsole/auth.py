"""Who may use the console: tokens or users with scrypt-hashed passwords, two roles, signed sessions, CSRF.

* ``IRONBUS_CONSOLE_TOKEN`` (operator) and ``IRONBUS_CONSOLE_READONLY_TOKEN`` (read-only): a token is typed
  into the login form once (or sent as ``Authorization: Bearer``), never put in a URL.
* A users file (``--console-users users.yaml``): ``users: {alice: {role: operator, password: "scrypt$…"}}``;
  ``ironbus console hash-password`` makes the hash (scrypt, n=2^14, r=8, p=1, 16-byte salt).

A login gets a session cookie (HttpOnly, SameSite=Strict, path /console, Secure over HTTPS) signed with
HMAC-SHA256; it carries the user, the role, an expiry and the session's CSRF token, which every form posts
back and every state-changing request must match. Comparisons are constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bus.errors import ConfigError, Location
from bus.yamlfile import load_yaml

__all__ = ["ROLES", "Auth", "Session", "hash_password", "verify_password"]

ROLES = ("readonly", "operator")
SESSION_SECONDS = 8 * 3600
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """``scrypt$n$r$p$salt$hash`` (base64), for a users file."""
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    return "scrypt${n}${r}${p}${salt}${digest}".format(
        **_SCRYPT, salt=base64.b64encode(salt).decode(), digest=base64.b64encode(digest).decode())


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


@dataclass(frozen=True)
class Session:
    user: str
    role: str
    csrf: str
    expires: float

    @property
    def operator(self) -> bool:
        return self.role == "operator"


@dataclass
class Auth:
    """The console's credentials. Empty is not allowed: a console is never served without authentication."""

    tokens: dict[str, str] = field(default_factory=dict)  # token -> role
    users: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (password hash, role)
    key: bytes = b""

    def __post_init__(self) -> None:
        if not self.tokens and not self.users:
            raise ConfigError("the console needs authentication: set IRONBUS_CONSOLE_TOKEN (operator) and/or "
                              "IRONBUS_CONSOLE_READONLY_TOKEN, or pass --console-users FILE")
        if not self.key:
            # Sessions must verify in every process of `ironbus run --processes`: derive the signing key from
            # the credentials (secret already), unless IRONBUS_CONSOLE_SECRET names one.
            material = orjson.dumps([sorted(self.tokens.items()), sorted(self.users.items())])
            self.key = hashlib.sha256(b"ironbus-console-session\0" + material).digest()

    @classmethod
    def from_env(cls, users_file: Path | None = None, environ: Mapping[str, str] | None = None) -> Auth:
        env = os.environ if environ is None else environ
        tokens: dict[str, str] = {}
        for var, role in (("IRONBUS_CONSOLE_TOKEN", "operator"), ("IRONBUS_CONSOLE_READONLY_TOKEN", "readonly")):
            value = env.get(var, "")
            if value:
                if len(value) < 16:
                    raise ConfigError(f"{var} is too short to guess-proof a console: use 16 characters or more")
                tokens[value] = role
        users = _load_users(users_file) if users_file is not None else {}
        secret = env.get("IRONBUS_CONSOLE_SECRET", "")
        return cls(tokens=tokens, users=users, key=hashlib.sha256(secret.encode()).digest() if secret else b"")

    # -- logging in ----------------------------------------------------------------------------------------
    def login(self, user: str, secret: str) -> Session | None:
        """A session for a user and password, or (empty user) a token; None when they do not match."""
        if user:
            found = self.users.get(user)
            if found is None:
                verify_password(secret, hash_password("x", salt=b"0" * 16))  # same work: no user enumeration
                return None
            if not verify_password(secret, found[0]):
                return None
            return self._session(user, found[1])
        for token, role in self.tokens.items():
            if hmac.compare_digest(token.encode(), secret.encode()):
                return self._session(f"token:{role}", role)
        return None

    def bearer(self, header: str | None) -> Session | None:
        if not header or not header.lower().startswith("bearer "):
            return None
        return self.login("", header[7:].strip())

    def _session(self, user: str, role: str) -> Session:
        return Session(user, role, secrets.token_urlsafe(24), time.time() + SESSION_SECONDS)

    # -- cookies -------------------------------------------------------------------------------------------
    def cookie(self, session: Session) -> str:
        body = base64.urlsafe_b64encode(orjson.dumps([session.user, session.role, session.csrf, session.expires]))
        mac = base64.urlsafe_b64encode(hmac.new(self.key, body, hashlib.sha256).digest())
        return (body + b"." + mac).decode()

    def session(self, cookie: str | None) -> Session | None:
        if not cookie or "." not in cookie:
            return None
        body, _, mac = cookie.encode().partition(b".")
        expected = base64.urlsafe_b64encode(hmac.new(self.key, body, hashlib.sha256).digest())
        if not hmac.compare_digest(mac, expected):
            return None
        try:
            user, role, csrf, expires = orjson.loads(base64.urlsafe_b64decode(body))
        except (ValueError, TypeError):
            return None
        if role not in ROLES or not isinstance(expires, (int, float)) or expires < time.time():
            return None
        return Session(str(user), role, str(csrf), float(expires))


def _load_users(path: Path) -> dict[str, tuple[str, str]]:
    doc: Any = load_yaml(path)
    users = doc.get("users") if isinstance(doc, dict) else None
    if not isinstance(users, dict) or not users:
        raise ConfigError("expected 'users: {name: {role: operator|readonly, password: scrypt$...}}'",
                          Location(str(path)))
    out: dict[str, tuple[str, str]] = {}
    for name, entry in users.items():
        if not isinstance(entry, dict):
            raise ConfigError(f"users.{name}: expected {{role, password}}", Location(str(path)))
        role, password = entry.get("role"), entry.get("password")
        if role not in ROLES:
            raise ConfigError(f"users.{name}.role: expected one of {', '.join(ROLES)}, got {role!r}",
                              Location(str(path)))
        if not isinstance(password, str) or not password.startswith("scrypt$"):
            raise ConfigError(f"users.{name}.password: expected a hash from 'ironbus console hash-password' "
                              "(scrypt$...), never a plain password", Location(str(path)))
        out[str(name)] = (password, role)
    return out
