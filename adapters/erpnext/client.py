"""Frappe's REST API (``/api/resource`` and ``/api/method``) with token auth, and its error bodies.

Frappe answers a failure with an HTTP status and ``{"exc_type": "ValidationError", "exception": "...",
"exc": "[traceback]", "_server_messages": "[\"{\\\"message\\\": ...}\"]"}`` (the messages are JSON inside
JSON inside a string). The exception type decides before the status does: ``TimestampMismatchError`` (someone
saved the document between our read and write) is a 417 like every ``ValidationError``, but a retry
re-reads the document and succeeds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from adapters.http import Auth, ErrorPolicy, HttpClient, Response, parse_retry_after
from adapters.http.settings import make_transport, parse_client_settings
from bus.errors import DeliveryError, PermanentError, TransientError

__all__ = ["FrappeClient", "FrappeErrors", "server_messages"]

#: Frappe exception types a retry can cure.
TRANSIENT_TYPES = frozenset({"TimestampMismatchError", "QueryDeadlockError", "QueryTimeoutError",
                             "DocumentLockedError", "RateLimitExceededError", "TooManyRequestsError",
                             "OperationalError", "InterfaceError"})


class _Token(Auth):
    def __init__(self, key: str, secret: str) -> None:
        self._value = f"token {key}:{secret}"

    def apply(self, headers: dict[str, str], params: dict[str, str]) -> object:
        headers["Authorization"] = self._value
        return None


def server_messages(doc: Mapping[str, Any]) -> list[str]:
    """The human messages in ``_server_messages`` (a JSON list of JSON objects, as a string)."""
    raw = doc.get("_server_messages")
    out: list[str] = []
    try:
        items = json.loads(raw) if isinstance(raw, str) else []
    except ValueError:
        return out
    for item in items if isinstance(items, list) else []:
        try:
            message = json.loads(item).get("message") if isinstance(item, str) else None
        except (ValueError, AttributeError):
            message = item
        if message:
            out.append(" ".join(str(message).split()))
    return out


class FrappeErrors:
    """The ``classify`` hook of the Frappe HttpClient."""

    def __init__(self, policy: ErrorPolicy) -> None:
        self.policy = policy

    def __call__(self, response: Response) -> DeliveryError | None:
        try:
            doc = response.json()
        except ValueError:
            return None
        if not isinstance(doc, dict) or not ({"exc_type", "exception", "_server_messages"} & doc.keys()):
            return None
        exc_type = str(doc.get("exc_type") or "").rsplit(".", 1)[-1]
        detail = "; ".join(server_messages(doc)) or str(doc.get("exception") or doc.get("message") or "")
        message = f"Frappe HTTP {response.status} {exc_type or 'error'}: {detail or 'no message'}"
        if exc_type in TRANSIENT_TYPES:
            return TransientError(message, retry_after=parse_retry_after(response.header("retry-after")))
        if not exc_type and self.policy.is_transient(response.status):
            return TransientError(message, retry_after=parse_retry_after(response.header("retry-after")))
        if exc_type and response.status in (429, 502, 503, 504):
            return TransientError(message, retry_after=parse_retry_after(response.header("retry-after")))
        return PermanentError(message)


def _path(doctype: str, name: str | None = None) -> str:
    base = f"/api/resource/{quote(doctype, safe='')}"
    return base if name is None else f"{base}/{quote(name, safe='')}"


class FrappeClient:
    """One Frappe site. Thread-safe (the HTTP client is)."""

    def __init__(self, system: str, settings: Mapping[str, Any]) -> None:
        self.system = system
        cs = parse_client_settings(settings)
        self.http = HttpClient(str(settings["url"]), make_transport(cs),
                               _Token(str(settings["api_key"]), str(settings["api_secret"])), cs.policy,
                               {"Accept": "application/json"}, classify=FrappeErrors(cs.policy))

    @staticmethod
    def _data(response: Response, key: str, what: str) -> Any:
        try:
            doc = response.json()
        except ValueError:
            raise TransientError(f"{what}: Frappe answered HTTP {response.status} without JSON") from None
        if not isinstance(doc, dict):
            raise PermanentError(f"{what}: Frappe's answer is not an object")
        return doc.get(key)

    def get_list(self, doctype: str, *, fields: Sequence[str], filters: Sequence[Any] = (), order_by: str = "",
                 limit_start: int = 0, limit_page_length: int = 20) -> list[dict[str, Any]]:
        params = {"fields": json.dumps(list(fields)), "filters": json.dumps(list(filters)),
                  "limit_start": str(limit_start), "limit_page_length": str(limit_page_length)}
        if order_by:
            params["order_by"] = order_by
        what = f"{self.system}: list {doctype}"
        rows = self._data(self.http.request("GET", _path(doctype), params=params, what=what), "data", what)
        if not isinstance(rows, list):
            raise PermanentError(f"{what}: 'data' is not a list")
        return [r for r in rows if isinstance(r, dict)]

    def get_doc(self, doctype: str, name: str) -> dict[str, Any]:
        what = f"{self.system}: get {doctype} {name}"
        doc = self._data(self.http.request("GET", _path(doctype, name), what=what), "data", what)
        if not isinstance(doc, dict):
            raise PermanentError(f"{what}: 'data' is not a document")
        return doc

    def insert(self, doctype: str, doc: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> dict[str, Any]:
        what = f"{self.system}: insert {doctype}"
        made = self._data(self.http.request("POST", _path(doctype), json=dict(doc), headers=headers, what=what),
                          "data", what)
        if not isinstance(made, dict) or not made.get("name"):
            raise PermanentError(f"{what}: the answer names no document")
        return made

    def update(self, doctype: str, name: str, values: Mapping[str, Any],
               headers: Mapping[str, str] | None = None) -> dict[str, Any]:
        what = f"{self.system}: update {doctype} {name}"
        doc = self._data(self.http.request("PUT", _path(doctype, name), json=dict(values), headers=headers,
                                           what=what), "data", what)
        return doc if isinstance(doc, dict) else {}

    def method(self, path: str, data: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> Any:
        what = f"{self.system}: {path}"
        return self._data(self.http.request("POST", f"/api/method/{path}", json=dict(data), headers=headers,
                                            what=what), "message", what)

    def close(self) -> None:
        self.http.close()
