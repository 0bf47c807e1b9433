"""Dataverse Web API errors, classified for the bus.

The body is ``{"error": {"code": "0x…", "message": "…"}}``. Service protection limits answer **429** with
``Retry-After`` (seconds) and one of three codes — ``0x80072322`` (-2147015902, too many requests in the 5-minute
window), ``0x80072321`` (-2147015903, combined execution time), ``0x80072326`` (-2147015898, concurrent
requests) — and are transient with the wait Dataverse asks for. 5xx, 408 and the connection failures are
transient; 412 (an ETag that no longer matches, or If-None-Match on an existing record), 404 (no such record),
400 (a bad column or value) and duplicate keys (``0x80040237``) are permanent.
"""

from __future__ import annotations

from typing import Any

import orjson

from adapters.http import ErrorPolicy, Response, parse_retry_after
from adapters.http.errors import body_excerpt
from bus.errors import DeliveryError, PermanentError, TransientError

__all__ = ["SERVICE_PROTECTION", "DynamicsErrors", "error_for"]

SERVICE_PROTECTION = {
    "0x80072322": "number of requests exceeded the limit",
    "0x80072321": "combined execution time exceeded the limit",
    "0x80072326": "number of concurrent requests exceeded the limit",
}
_PERMANENT_HINTS = {
    "0x80040237": "a record with these key values already exists",
    "0x80040217": "the record does not exist",
}
#: Without Retry-After (it is always sent, but a proxy may drop it) wait out a good part of the window.
DEFAULT_THROTTLE_WAIT = 30.0


def _error(body: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(body)
    except ValueError:
        return {}
    error = doc.get("error") if isinstance(doc, dict) else None
    return error if isinstance(error, dict) else {}


def error_for(status: int, headers: dict[str, str], body: bytes, what: str,
              policy: ErrorPolicy | None = None) -> DeliveryError:
    """The delivery error for one Dataverse answer (a response or a $batch part)."""
    error = _error(body)
    code = str(error.get("code") or "").lower()
    text = str(error.get("message") or "") or " ".join(body[:300].decode("utf-8", "replace").split())
    message = f"{what}: HTTP {status}" + (f" [{code}]" if code else "") + (f": {text}" if text else "")
    if status == 429 or code in SERVICE_PROTECTION:
        wait = parse_retry_after(headers.get("retry-after"))
        return TransientError(f"{message} (service protection: {SERVICE_PROTECTION.get(code, 'throttled')})",
                              retry_after=wait if wait is not None else DEFAULT_THROTTLE_WAIT)
    if code in _PERMANENT_HINTS:
        return PermanentError(f"{message} ({_PERMANENT_HINTS[code]})")
    if status == 412:
        return PermanentError(f"{message} (precondition failed: the record changed since its ETag was read, or "
                              "If-None-Match found it already there)")
    if (policy or ErrorPolicy()).is_transient(status):
        return TransientError(message, retry_after=parse_retry_after(headers.get("retry-after")))
    return PermanentError(message)


class DynamicsErrors:
    """The ``classify`` hook of the Dataverse HttpClient."""

    def __init__(self, policy: ErrorPolicy) -> None:
        self.policy = policy

    def __call__(self, response: Response) -> DeliveryError | None:
        if not _error(response.body) and response.status not in (412, 429):
            return None if self.policy.is_transient(response.status) else PermanentError(
                f"Dataverse HTTP {response.status}: {body_excerpt(response) or 'no body'}")
        return error_for(response.status, dict(response.headers), response.body,
                         f"Dataverse {response.url or 'request'}", self.policy)
