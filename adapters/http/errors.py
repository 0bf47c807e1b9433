"""Vendor-agnostic classification of HTTP failures into the bus's delivery errors.

    connect refused / reset, DNS failure, timeouts        -> TransientError
    408, 425, 429, 500, 502, 503, 504                      -> TransientError (Retry-After honoured)
    any other status that is not a success                 -> PermanentError

A system can move codes either way with ``errors: {transient: [...], permanent: [...]}``: some APIs answer
409 for "record locked, try again" (transient), others 503 for "this tenant is disabled" (permanent).
Vendor adapters layered on the generic client pass their own ``classify`` hook for what a status code cannot
tell (HubSpot's 429 ``policyName``), and fall back on this module for the rest.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from adapters.http.transport import Response
from bus.errors import DeliveryError, PermanentError, TransientError
from bus.interpolate import redact

__all__ = [
    "DEFAULT_TRANSIENT",
    "ErrorPolicy",
    "body_excerpt",
    "error_for_response",
    "parse_retry_after",
]

DEFAULT_TRANSIENT: frozenset[int] = frozenset({408, 425, 429, 500, 502, 503, 504})
_EXCERPT = 300


@dataclass(frozen=True)
class ErrorPolicy:
    """Which non-success status codes are worth retrying, with a system's overrides applied."""

    transient: frozenset[int] = DEFAULT_TRANSIENT
    permanent: frozenset[int] = field(default_factory=frozenset)

    @classmethod
    def with_overrides(cls, transient: Iterable[int] = (), permanent: Iterable[int] = ()) -> ErrorPolicy:
        moved_out = frozenset(permanent)
        return cls(transient=(DEFAULT_TRANSIENT | frozenset(transient)) - moved_out, permanent=moved_out)

    def is_transient(self, status: int) -> bool:
        return status in self.transient and status not in self.permanent


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds or an HTTP-date (RFC 9110 §10.2.3).

    Returns None when the header is absent or unreadable, and never a negative number.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # HTTP-dates are GMT by definition
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def body_excerpt(response: Response) -> str:
    """The start of a response body on one line, for error messages and logs (secrets redacted)."""
    # Mask before cutting: a cut through a secret would leave its first characters unmasked.
    text = redact(" ".join(response.body[: _EXCERPT * 8].decode("utf-8", errors="replace").split()))
    if len(text) > _EXCERPT:
        text = text[:_EXCERPT] + "…"
    return text


def error_for_response(response: Response, policy: ErrorPolicy, what: str) -> DeliveryError:
    """The delivery error for a response that is not a success. ``what`` names the request for the message."""
    excerpt = body_excerpt(response)
    message = f"{what}: HTTP {response.status}" + (f": {excerpt}" if excerpt else "")
    if policy.is_transient(response.status):
        return TransientError(message, retry_after=parse_retry_after(response.header("retry-after")))
    return PermanentError(message)
