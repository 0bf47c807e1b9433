"""Secrets masked in every form they can take in text the bus writes (logs, errors, dead letters, journal).

A target that echoes its request back puts the credentials the bus sent into the answer, and that answer ends
up in error messages, attempt logs and dead letters: literally (``Bearer tok``), URL-encoded
(``api_key=qk%2B…``), form-encoded (``client_secret=cs+…``) or base64-encoded inside ``Basic`` auth. So every
registered secret is masked in each of these forms, and values of well-known credential headers and
parameters are masked whatever they hold (a token the bus never saw, such as an OAuth refresh token in an
answer). Masking happens on the whole text, before any cut to a length limit, so no prefix of a secret
survives.

Secrets come from ``${ENV}`` values in integrators' files (:mod:`bus.interpolate`), from settings whose name
says they are one (``password``, ``secret``, ``token``, ``api_key`` …: :func:`register_settings`), and from
adapters at run time (an OAuth access token, a Basic credential: :func:`register`).
"""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

__all__ = [
    "CREDENTIAL_NAMES",
    "MASK",
    "is_credential_name",
    "mask",
    "mask_value",
    "register",
    "register_settings",
    "strip_credentials",
]

MASK = "***"
#: Shortest secret masked: shorter values would mask ordinary words.
MIN_LENGTH = 4
#: Shortest base64 fragment of a secret that is masked (a secret's base64 core inside a longer encoding).
_MIN_B64 = 6

#: Header, parameter and field names whose value is a credential, compared without case, '-' or '_'.
CREDENTIAL_NAMES = frozenset(n.replace("-", "").replace("_", "") for n in (
    "authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "api-key", "apikey",
    "x-auth-token", "auth-token", "access_token", "refresh_token", "id_token", "client_secret", "password",
    "passwd", "secret", "token", "private_key", "x-hubspot-signature", "x-hubspot-signature-v3",
    "x-frappe-webhook-signature", "shared_secret", "signing_secret", "session_token", "sessionid",
))
# Settings keys that hold a secret (used to register literal values written in routes.yaml).
_SECRET_SETTING = re.compile(r"(pass(word|wd|phrase)?|secret|token|api_?key|private_?key|credential)s?$", re.I)

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None

# `Name: value` (a header line) for a credential header, or `name=value` / `"name": "value"` (a parameter or a
# JSON member) for a credential parameter; the value runs to the end of the line, the next '&', quote, comma or
# closing bracket. Prose such as "settings.password: minLength check failed" is left alone.
def _alternation(names: Iterable[str]) -> str:
    return "|".join(sorted({re.escape(n) for n in names}, key=len, reverse=True))


_HEADERS_RE = _alternation(("authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "api-key",
                            "x-auth-token"))
_PARAMS_RE = _alternation(("authorization", "api_key", "api-key", "apikey", "x-api-key", "access_token",
                           "refresh_token", "id_token", "client_secret", "password", "passwd", "private_key",
                           "signing_secret", "shared_secret", "session_token", "token", "secret"))
_VALUE = r"""(?P<value>(?:(?:basic|bearer|token|digest)\s+)?[^\s&"',;}\]<]+)"""
_CREDENTIAL_FIELD = re.compile(
    rf"""(?ix)
    (?:(?P<name>(?<![\w-])(?:{_HEADERS_RE}))(?P<sep>[ \t]*:[ \t]*)
     |(?P<pname>(?<![\w-])(?:{_PARAMS_RE}))(?P<psep>=|%3D|["']\s*:\s*["']?|\s*=\s*))
    {_VALUE}
    """)


def _mask_field(match: re.Match[str]) -> str:
    if match.group("name") is not None:
        return f"{match.group('name')}{match.group('sep')}{MASK}"
    return f"{match.group('pname')}{match.group('psep')}{MASK}"


def _base64_cores(secret: bytes) -> set[str]:
    """The parts of base64 text that encode ``secret`` whatever its offset inside the encoded data.

    Base64 works on 3-byte groups, so the same secret encodes differently at offsets 0, 1 and 2; the
    characters that depend only on the secret's own bits are the same at any offset with that remainder.
    """
    cores: set[str] = set()
    n = len(secret)
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + secret).decode("ascii")
        start = -(-8 * offset // 6)  # first character made only of the secret's bits
        end = (8 * (offset + n)) // 6  # one past the last such character
        core = encoded[start:end]
        if len(core) >= _MIN_B64:
            cores.add(core)
            cores.add(core.replace("+", "-").replace("/", "_"))  # the URL-safe alphabet
    return cores


def _variants(secret: str) -> tuple[set[str], set[str]]:
    """(exact forms, forms compared without case): literal, JSON-escaped, base64; percent-encodings."""
    exact = {secret, secret.replace("\\", "\\\\").replace('"', '\\"'), secret.replace("/", "\\/")}
    exact |= _base64_cores(secret.encode("utf-8"))
    nocase = {v for v in (quote(secret, safe=""), quote(secret), quote_plus(secret), quote_plus(secret, safe=""))
              if v != secret}
    return exact, nocase


def _build(secrets: Iterable[str]) -> re.Pattern[str] | None:
    exact: set[str] = set()
    nocase: set[str] = set()
    for secret in secrets:
        e, n = _variants(secret)
        exact |= e
        nocase |= n
    parts = [re.escape(v) for v in sorted(exact, key=len, reverse=True)]
    parts += [f"(?i:{re.escape(v)})" for v in sorted(nocase, key=len, reverse=True)]
    return re.compile("|".join(parts)) if parts else None


def register(*values: str | None) -> None:
    """Remember values as secrets (empty and very short ones are ignored: they would mask ordinary text)."""
    global _pattern
    fresh = {v for v in values if isinstance(v, str) and len(v) >= MIN_LENGTH}
    with _lock:
        if fresh <= _secrets:
            return
        _secrets.update(fresh)
        _pattern = _build(_secrets)


def register_settings(settings: Any) -> None:
    """Register every string in ``settings`` held under a name that says it is a secret (any depth)."""
    stack: list[Any] = [settings]
    found: list[str] = []
    while stack:
        node = stack.pop()
        if isinstance(node, Mapping):
            for key, value in node.items():
                if isinstance(value, str) and _SECRET_SETTING.search(str(key)):
                    found.append(value)
                elif isinstance(value, Mapping | list):
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)
    register(*found)


def is_credential_name(name: str) -> bool:
    """True for a header, parameter or field name whose value is a credential (``Authorization``, ``api_key``)."""
    return name.lower().replace("-", "").replace("_", "") in CREDENTIAL_NAMES


def mask(text: str) -> str:
    """``text`` with every registered secret (in any encoding) and every credential field's value masked."""
    if not text:
        return text
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
    if _CREDENTIAL_FIELD.search(text):
        text = _CREDENTIAL_FIELD.sub(_mask_field, text)
    return text


def mask_value(value: Any) -> Any:
    """A copy of a JSON-like value with secrets masked in every string and credential members dropped."""
    return strip_credentials(value)


def strip_credentials(value: Any, _depth: int = 0) -> Any:
    """A copy of ``value`` (a stored response, a result) without members named like credentials, and with
    secrets masked in the strings that remain."""
    if isinstance(value, str):
        return mask(value)
    if _depth > 200:
        return value
    if isinstance(value, Mapping):
        return {k: strip_credentials(v, _depth + 1) for k, v in value.items()
                if not (isinstance(k, str) and is_credential_name(k))}
    if isinstance(value, list):
        return [strip_credentials(v, _depth + 1) for v in value]
    return value
