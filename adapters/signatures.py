"""Webhook signature verification, as the vendors actually sign.

Pure functions compute and check each scheme; :class:`Verifier` picks one from an adapter's ``signature:``
settings. Every check raises :class:`SignatureError` (HTTP 401) with a ``reason`` code:

* ``missing``   — the signature (or timestamp, or token) header is absent;
* ``malformed`` — it is present but cannot be decoded (bad base64/hex, wrong prefix, non-numeric timestamp);
* ``stale``     — the signed timestamp is further than the tolerance from now, in *either* direction
  (a future timestamp is as suspicious as an old one: it would let a captured request be replayed later);
* ``mismatch``  — the signature is well formed but wrong.

Comparisons are constant-time (:func:`hmac.compare_digest`). Messages never contain a secret or a signature.
Clocks are injectable (``clock`` returns epoch seconds) so tests can pin "now".

Schemes:

* **hmac-sha256** — HMAC-SHA256 of the raw body (or of ``timestamp + "." + body`` when a timestamp header
  is configured), hex or base64, in a configurable header with an optional prefix such as ``sha256=``.
* **hubspot-v3** — ``X-HubSpot-Signature-v3 = base64(HMAC_SHA256(client_secret, method + requestUri + body +
  timestamp))`` with ``X-HubSpot-Request-Timestamp`` in epoch ms, ±300 000 ms. ``requestUri`` is the full URL
  as called, with only ``%3A %2F %3F %40 %21 %24 %27 %28 %29 %2A %2C %3B`` decoded. Legacy ``v1``
  (``sha256_hex(secret + body)``) and ``v2`` (``sha256_hex(secret + method + url + body)``) are accepted only
  when asked for: they carry no timestamp, so a captured request could be replayed forever.
* **frappe** — ``X-Frappe-Webhook-Signature = base64(HMAC-SHA256(secret, body))``; no timestamp.
* **token** — a shared token as the last path segment (``/hooks/{system}/{trigger}/{token}``) or in a header,
  for vendors that cannot sign (Odoo, Salesforce outbound messages).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from adapters.base import WebhookRequest
from bus.config import parse_duration
from bus.errors import ConfigError, Location, WebhookRejected

__all__ = [
    "FRAPPE_HEADER",
    "HUBSPOT_LEGACY_HEADER",
    "HUBSPOT_TIMESTAMP_HEADER",
    "HUBSPOT_V3_HEADER",
    "HUBSPOT_VERSION_HEADER",
    "SCHEMES",
    "Clock",
    "SignatureError",
    "Verifier",
    "frappe_signature",
    "hmac_signature",
    "hubspot_request_uri",
    "hubspot_v1_signature",
    "hubspot_v2_signature",
    "hubspot_v3_signature",
    "token_from_url",
    "verify_frappe",
    "verify_hmac",
    "verify_hubspot",
    "verify_token",
]

Clock = Callable[[], float]
Reason = Literal["missing", "mismatch", "stale", "malformed"]

HUBSPOT_V3_HEADER = "x-hubspot-signature-v3"
HUBSPOT_TIMESTAMP_HEADER = "x-hubspot-request-timestamp"
HUBSPOT_LEGACY_HEADER = "x-hubspot-signature"
HUBSPOT_VERSION_HEADER = "x-hubspot-signature-version"
HUBSPOT_TOLERANCE_MS = 300_000
FRAPPE_HEADER = "x-frappe-webhook-signature"

_HUBSPOT_DECODE = re.compile(r"%(3A|2F|3F|40|21|24|27|28|29|2A|2C|3B)", re.IGNORECASE)


class SignatureError(WebhookRejected):
    """A webhook's signature, timestamp or token did not verify; answered with HTTP 401."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message, status=401, reason=reason)


def _bytes(secret: str | bytes) -> bytes:
    return secret.encode() if isinstance(secret, str) else secret


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        lower = name.lower()
        for key, candidate in headers.items():
            if key.lower() == lower:
                return candidate
    return value


def _require(headers: Mapping[str, str], name: str, what: str = "signature") -> str:
    value = _header(headers, name)
    if value is None or not value.strip():
        raise SignatureError("missing", f"{what} header {name!r} is missing")
    return value.strip()


def _decode(value: str, encoding: Literal["hex", "base64"], header: str) -> bytes:
    try:
        if encoding == "hex":
            return bytes.fromhex(value)
        # A proxy that URL-decodes headers turns base64's '+' into a space; a space is never valid base64.
        return base64.b64decode(value.replace(" ", "+"), validate=True)
    except (ValueError, binascii.Error):
        raise SignatureError("malformed", f"signature header {header!r} is not valid {encoding}") from None


def _check_fresh(timestamp_ms: int, now_ms: float, tolerance_ms: float, header: str) -> None:
    if abs(now_ms - timestamp_ms) > tolerance_ms:
        raise SignatureError("stale", f"timestamp in {header!r} is {abs(now_ms - timestamp_ms) / 1000:.0f}s away "
                                      f"from now; at most {tolerance_ms / 1000:.0f}s allowed")


def _int_header(value: str, header: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise SignatureError("malformed", f"timestamp header {header!r} is not an integer") from None


# -- generic HMAC --------------------------------------------------------------------------------------
def hmac_signature(secret: str | bytes, body: bytes, *, encoding: Literal["hex", "base64"] = "hex",
                   timestamp: str | None = None) -> str:
    """HMAC-SHA256 of ``body`` (or of ``timestamp + "." + body``), hex or base64 encoded."""
    message = body if timestamp is None else timestamp.encode() + b"." + body
    digest = hmac.new(_bytes(secret), message, hashlib.sha256).digest()
    return digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()


def verify_hmac(headers: Mapping[str, str], body: bytes, secret: str | bytes, *, header: str,
                encoding: Literal["hex", "base64"] = "hex", prefix: str = "", timestamp_header: str | None = None,
                tolerance: float = 300.0, clock: Clock = time.time) -> None:
    """Check a generic HMAC-SHA256 signature; raises :class:`SignatureError`.

    With ``timestamp_header`` the signed string is ``timestamp + "." + body`` and the timestamp (epoch
    seconds, or milliseconds when it has 13+ digits) must be within ``tolerance`` seconds of now.
    """
    value = _require(headers, header)
    if prefix:
        if not value.startswith(prefix):
            raise SignatureError("malformed", f"signature header {header!r} does not start with {prefix!r}")
        value = value[len(prefix):]
    given = _decode(value.strip(), encoding, header)
    timestamp: str | None = None
    if timestamp_header:
        timestamp = _require(headers, timestamp_header, "timestamp")
        stamp = _int_header(timestamp, timestamp_header)
        stamp_ms = stamp if len(timestamp.lstrip("-")) >= 13 else stamp * 1000
        _check_fresh(stamp_ms, clock() * 1000, tolerance * 1000, timestamp_header)
    message = body if timestamp is None else timestamp.encode() + b"." + body
    expected = hmac.new(_bytes(secret), message, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, given):
        raise SignatureError("mismatch", f"signature in {header!r} does not match the body")


# -- HubSpot -------------------------------------------------------------------------------------------
def hubspot_request_uri(url: str) -> str:
    """The ``requestUri`` HubSpot v3 signs: ``url`` with only the twelve listed escapes decoded."""
    return _HUBSPOT_DECODE.sub(lambda m: chr(int(m.group(1), 16)), url)


def hubspot_v3_signature(secret: str | bytes, method: str, url: str, body: bytes, timestamp: str) -> str:
    """``base64(HMAC_SHA256(secret, method + requestUri + body + timestamp))``."""
    message = method.upper().encode() + hubspot_request_uri(url).encode() + body + timestamp.encode()
    return base64.b64encode(hmac.new(_bytes(secret), message, hashlib.sha256).digest()).decode()


def hubspot_v1_signature(secret: str | bytes, body: bytes) -> str:
    """Legacy v1: ``sha256_hex(secret + body)``."""
    return hashlib.sha256(_bytes(secret) + body).hexdigest()


def hubspot_v2_signature(secret: str | bytes, method: str, url: str, body: bytes) -> str:
    """Legacy v2: ``sha256_hex(secret + method + url + body)``."""
    return hashlib.sha256(_bytes(secret) + method.upper().encode() + url.encode() + body).hexdigest()


def verify_hubspot(headers: Mapping[str, str], method: str, url: str, body: bytes, secret: str | bytes, *,
                   allow_legacy: bool = False, tolerance_ms: int = HUBSPOT_TOLERANCE_MS,
                   clock: Clock = time.time) -> None:
    """Verify a HubSpot request (v3; v1/v2 only with ``allow_legacy``); raises :class:`SignatureError`.

    ``url`` is the full URL as HubSpot called it (see :func:`bus.webhooks.http.request_url`).
    """
    if _header(headers, HUBSPOT_V3_HEADER) is None and allow_legacy and _header(headers, HUBSPOT_LEGACY_HEADER):
        _verify_hubspot_legacy(headers, method, url, body, secret)
        return
    signature = _require(headers, HUBSPOT_V3_HEADER)
    timestamp = _require(headers, HUBSPOT_TIMESTAMP_HEADER, "timestamp")
    _check_fresh(_int_header(timestamp, HUBSPOT_TIMESTAMP_HEADER), clock() * 1000, tolerance_ms,
                 HUBSPOT_TIMESTAMP_HEADER)
    given = _decode(signature, "base64", HUBSPOT_V3_HEADER)
    expected = base64.b64decode(hubspot_v3_signature(secret, method, url, body, timestamp))
    if not hmac.compare_digest(expected, given):
        raise SignatureError("mismatch", f"signature in {HUBSPOT_V3_HEADER!r} does not match the request")


def _verify_hubspot_legacy(headers: Mapping[str, str], method: str, url: str, body: bytes,
                           secret: str | bytes) -> None:
    signature = _require(headers, HUBSPOT_LEGACY_HEADER)
    version = (_header(headers, HUBSPOT_VERSION_HEADER) or "v1").strip().lower()
    if version == "v1":
        expected = hubspot_v1_signature(secret, body)
    elif version == "v2":
        expected = hubspot_v2_signature(secret, method, url, body)
    else:
        raise SignatureError("malformed", f"unknown {HUBSPOT_VERSION_HEADER!r}; expected v1 or v2")
    given = _decode(signature, "hex", HUBSPOT_LEGACY_HEADER)
    if not hmac.compare_digest(bytes.fromhex(expected), given):
        raise SignatureError("mismatch", f"signature in {HUBSPOT_LEGACY_HEADER!r} ({version}) does not match")


# -- Frappe / ERPNext ----------------------------------------------------------------------------------
def frappe_signature(secret: str | bytes, body: bytes) -> str:
    """``base64(HMAC-SHA256(secret, body))`` as Frappe sends in ``X-Frappe-Webhook-Signature``."""
    return hmac_signature(secret, body, encoding="base64")


def verify_frappe(headers: Mapping[str, str], body: bytes, secret: str | bytes) -> None:
    """Verify a Frappe/ERPNext webhook; raises :class:`SignatureError`. Frappe signs no timestamp."""
    verify_hmac(headers, body, secret, header=FRAPPE_HEADER, encoding="base64")


# -- shared token --------------------------------------------------------------------------------------
def token_from_url(url: str) -> str | None:
    """The token of ``…/hooks/{system}/{trigger}/{token}``, or None when the URL has no token segment."""
    parts = urlsplit(url).path.split("/")
    return parts[4] if len(parts) == 5 and parts[1] == "hooks" and parts[4] else None


def verify_token(expected: str, presented: str | None) -> None:
    """Constant-time check of a shared token; raises :class:`SignatureError` (``missing`` / ``mismatch``)."""
    if not presented:
        raise SignatureError("missing", "the webhook token is missing")
    if not hmac.compare_digest(expected.encode(), presented.encode()):
        raise SignatureError("mismatch", "the webhook token is wrong")


# -- configured verifier -------------------------------------------------------------------------------
Scheme = Literal["hmac-sha256", "hubspot-v3", "frappe", "token", "none"]
SCHEMES: tuple[str, ...] = ("hmac-sha256", "hubspot-v3", "frappe", "token", "none")


@dataclass(frozen=True)
class Verifier:
    """A signature scheme with its settings; :meth:`verify` checks one request.

    Build it from an adapter's ``signature:`` block with :meth:`from_settings`.
    """

    scheme: Scheme = "none"
    secret: str = ""
    header: str | None = None
    encoding: Literal["hex", "base64"] = "hex"
    prefix: str = ""
    timestamp_header: str | None = None
    tolerance: float = 300.0
    allow_legacy: bool = False
    clock: Clock = time.time

    @classmethod
    def from_settings(cls, doc: Mapping[str, Any] | None, *, where: str = "signature",
                      location: Location | None = None, clock: Clock = time.time) -> Verifier:
        """Validate a ``signature:`` settings block; raises :class:`~bus.errors.ConfigError` naming the field."""
        doc = dict(doc or {})
        scheme = doc.get("scheme", "none")
        if scheme not in SCHEMES:
            raise ConfigError(f"{where}.scheme: {scheme!r} is not a signature scheme; expected one of "
                              f"{', '.join(SCHEMES)}", location)
        secret = doc.get("secret") or ""
        if scheme != "none" and (not isinstance(secret, str) or not secret):
            raise ConfigError(f"{where}.secret: scheme {scheme!r} needs a non-empty secret (use ${{ENV}})", location)
        header = doc.get("header")
        if scheme == "hmac-sha256" and not header:
            raise ConfigError(f"{where}.header: scheme 'hmac-sha256' needs the name of the signature header",
                              location)
        encoding = doc.get("encoding", "hex")
        if encoding not in ("hex", "base64"):
            raise ConfigError(f"{where}.encoding: {encoding!r}; expected 'hex' or 'base64'", location)
        try:
            tolerance = parse_duration(doc.get("tolerance", 300))
        except (ValueError, AttributeError):
            raise ConfigError(f"{where}.tolerance: {doc.get('tolerance')!r} is not a duration "
                              "(expected seconds or e.g. '5m')", location) from None
        return cls(scheme=scheme, secret=secret, header=header.lower() if header else None, encoding=encoding,
                   prefix=str(doc.get("prefix") or ""), timestamp_header=(doc.get("timestamp_header") or None),
                   tolerance=tolerance, allow_legacy=bool(doc.get("allow_legacy", False)), clock=clock)

    def verify(self, request: WebhookRequest) -> None:
        """Raise :class:`SignatureError` unless ``request`` carries a valid signature for this scheme."""
        if self.scheme == "hmac-sha256":
            verify_hmac(request.headers, request.body, self.secret, header=self.header or "",
                        encoding=self.encoding, prefix=self.prefix, timestamp_header=self.timestamp_header,
                        tolerance=self.tolerance, clock=self.clock)
        elif self.scheme == "hubspot-v3":
            verify_hubspot(request.headers, request.method, request.url, request.body, self.secret,
                           allow_legacy=self.allow_legacy, tolerance_ms=int(self.tolerance * 1000), clock=self.clock)
        elif self.scheme == "frappe":
            verify_hmac(request.headers, request.body, self.secret, header=self.header or FRAPPE_HEADER,
                        encoding="base64")
        elif self.scheme == "token":
            presented = _header(request.headers, self.header) if self.header else token_from_url(request.url)
            verify_token(self.secret, presented)
