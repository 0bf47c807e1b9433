"""Salesforce's error answers and API budget, read for the bus.

Salesforce says what went wrong in ``errorCode``, not in the HTTP status (a 403 is a spent API budget as often
as a missing permission), so errors are classified by code:

* transient — ``REQUEST_LIMIT_EXCEEDED`` (the daily budget, or too many long requests at once),
  ``UNABLE_TO_LOCK_ROW`` (another transaction holds the record), ``SERVER_UNAVAILABLE``, ``QUERY_TIMEOUT``,
  ``PROCESSING_HALTED`` (a composite sibling failed under all-or-none: this one was never applied);
* permanent — everything else (``FIELD_CUSTOM_VALIDATION_EXCEPTION``, ``INVALID_FIELD``, ``REQUIRED_FIELD_MISSING``,
  ``MALFORMED_ID``, ``NOT_FOUND`` …), unless the status alone is transient (5xx, a proxy's 503).

Every answer carries ``Sforce-Limit-Info: api-usage=<used>/<allocation>``; :class:`ApiBudget` keeps the latest
figures so the adapter can stop spending before Salesforce refuses (see ``api_reserve``).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from typing import Any

import orjson

from adapters.http import Request, Response, Transport
from adapters.http.errors import ErrorPolicy, body_excerpt
from bus.errors import DeliveryError, PermanentError, TransientError

__all__ = ["ApiBudget", "BudgetTransport", "SalesforceErrors", "describe_errors", "error_for_items", "error_items"]

TRANSIENT_CODES = frozenset({"REQUEST_LIMIT_EXCEEDED", "UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE", "QUERY_TIMEOUT",
                             "PROCESSING_HALTED", "ALL_OR_NONE_OPERATION_ROLLED_BACK"})
#: The 24-hour allocation is a rolling window: a spent budget frees up gradually, so wait a while, not a day.
DAILY_LIMIT_WAIT = 900.0
#: "ConcurrentRequests" / "ConcurrentPerOrgLongTxn": long requests of others must finish first.
CONCURRENCY_WAIT = 10.0
_USAGE = re.compile(r"(?:^|[,;\s])api-usage=(\d+)/(\d+)")


def error_items(body: Any) -> list[dict[str, Any]]:
    """Salesforce's error list (``[{message, errorCode, fields}]``) from a parsed body; [] when it is not one."""
    if isinstance(body, dict):
        body = [body]
    if not isinstance(body, list):
        return []
    return [item for item in body if isinstance(item, dict) and ("errorCode" in item or "statusCode" in item)]


def describe_errors(items: Sequence[dict[str, Any]]) -> str:
    parts = []
    for item in items[:5]:
        code = item.get("errorCode") or item.get("statusCode") or "UNKNOWN"
        fields = item.get("fields") or []
        parts.append(f"{code}: {item.get('message') or 'no message'}" + (f" (fields: {', '.join(map(str, fields))})"
                                                                            if fields else ""))
    return "; ".join(parts)


def _wait_for(items: Sequence[dict[str, Any]]) -> float | None:
    for item in items:
        if (item.get("errorCode") or item.get("statusCode")) == "REQUEST_LIMIT_EXCEEDED":
            message = str(item.get("message") or "")
            return CONCURRENCY_WAIT if "Concurrent" in message else DAILY_LIMIT_WAIT
    return None


def error_for_items(status: int, items: Sequence[dict[str, Any]], what: str,
                    policy: ErrorPolicy | None = None) -> DeliveryError:
    """The delivery error for Salesforce's error list ``items`` answered with ``status``."""
    message = f"{what}: HTTP {status}: {describe_errors(items) or 'no error details'}"
    codes = {str(i.get("errorCode") or i.get("statusCode")) for i in items}
    if codes & TRANSIENT_CODES:
        return TransientError(message, retry_after=_wait_for(items))
    if not items and (policy or ErrorPolicy()).is_transient(status):
        return TransientError(message)
    if status >= 500 and not items:
        return TransientError(message)
    return PermanentError(message)


class SalesforceErrors:
    """The ``classify`` hook of the Salesforce HttpClient."""

    def __init__(self, policy: ErrorPolicy) -> None:
        self.policy = policy

    def __call__(self, response: Response) -> DeliveryError | None:
        try:
            items = error_items(orjson.loads(response.body))
        except ValueError:
            items = []
        if not items:
            if self.policy.is_transient(response.status):
                return None  # generic handling keeps Retry-After
            return PermanentError(f"Salesforce HTTP {response.status}: {body_excerpt(response) or 'no body'}")
        return error_for_items(response.status, items, f"Salesforce {response.url or 'request'}", self.policy)


class ApiBudget:
    """The org's API usage as the last answer's ``Sforce-Limit-Info`` told it. Thread-safe."""

    def __init__(self, reserve: float) -> None:
        self.reserve = reserve  # fraction of the allocation kept free for others (0.0 to spend it all)
        self.used: int | None = None
        self.limit: int | None = None
        self._lock = threading.Lock()

    def observe(self, header: str | None) -> None:
        if not header:
            return
        match = _USAGE.search(header)
        if match:
            with self._lock:
                self.used, self.limit = int(match.group(1)), int(match.group(2))

    def exhausted_for(self) -> float | None:
        """Seconds to hold off when the budget down to its reserve is spent, else None.

        The allocation is a rolling 24 h window: calls age out about as fast as they were made, so the wait is
        the overshoot at the average pace of the allocation (at least a minute, at most the daily wait).
        """
        with self._lock:
            used, limit = self.used, self.limit
        if used is None or not limit:
            return None
        ceiling = limit * (1.0 - self.reserve)
        if used < ceiling:
            return None
        overshoot = used - ceiling + 1
        return max(60.0, min(DAILY_LIMIT_WAIT * 4, overshoot * 86400.0 / limit))

    def snapshot(self) -> dict[str, int | None]:
        with self._lock:
            return {"used": self.used, "limit": self.limit}


class BudgetTransport:
    """Wraps a transport to read ``Sforce-Limit-Info`` off every answer (also answers the client rejects)."""

    def __init__(self, inner: Transport, budget: ApiBudget) -> None:
        self.inner = inner
        self.budget = budget

    def send(self, request: Request) -> Response:
        response = self.inner.send(request)
        self.budget.observe(response.header("sforce-limit-info"))
        return response

    def close(self) -> None:
        self.inner.close()
