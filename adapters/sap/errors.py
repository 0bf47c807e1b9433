"""SAP's error answers, classified: retry what clears by itself, dead-letter what needs a person.

SAP Gateway answers ``{"error": {"code": "<message class>/<number>", "message": {"value": …},
"innererror": {"errordetails": [{"code", "message", "severity", "target"}, …]}}}``. The status code alone
misleads: a business lock ("Sales document 4711 is currently being processed by user JDOE") comes as a 400
like a validation message, and only the message class tells them apart. So:

* lock messages (known message classes, or the texts SAP uses for them) → transient: the user or job
  holding the lock finishes, and the retry goes through;
* 412 (the record changed since its ETag was read) → transient: the retry reads the current ETag;
* 408/425/429/5xx → transient (``Retry-After`` honoured), as for any HTTP API;
* every other status (400 validation messages, 401/403 authorisation, 404, 428) → permanent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import orjson

from adapters.http.errors import ErrorPolicy, body_excerpt, parse_retry_after
from adapters.http.transport import Response
from bus.errors import DeliveryError, PermanentError, TransientError
from bus.interpolate import redact

__all__ = ["LOCK_MESSAGES", "SapError", "classify", "parse_error"]

#: Message classes/numbers SAP raises for a record locked by another user or process.
LOCK_MESSAGES: frozenset[str] = frozenset({
    "V1/042",   # sales document is currently being processed (by user …)
    "V1/041",   # sales document is locked
    "ME/006",   # user … is already processing purchasing document …
    "ME/007",   # purchasing document is locked
    "MEPO/044",  # purchase order is being processed by another user
    "M3/897",   # material is being processed by user …
    "MM/897",
    "F5/152",
    "R11/301",  # business partner is locked by user …
    "BUPA_DIALOG/062",
    "/IWBEP/CM_MGW_RT/020",  # resource locked (Gateway runtime)
})
_LOCK_TEXT = re.compile(r"\b(locked|is (currently )?being processed|already processing|currently processing|"
                        r"blocked by user|enqueue)\b", re.IGNORECASE)


class SapError:
    """The parts of an SAP error body the classification and the messages need."""

    def __init__(self, code: str, message: str, details: list[tuple[str, str, str]]) -> None:
        self.code = code
        self.message = message
        self.details = details  # (code, message, severity)

    def codes(self) -> Iterable[str]:
        yield self.code
        yield from (code for code, _, _ in self.details)

    def texts(self) -> Iterable[str]:
        yield self.message
        yield from (text for _, text, _ in self.details)

    def describe(self) -> str:
        """The message and the distinct detail messages (error severity first), on one line."""
        parts = [f"{self.code}: {self.message}" if self.code else self.message]
        for code, text, severity in sorted(self.details, key=lambda d: d[2] != "error"):
            line = f"{code}: {text}" if code else text
            if text and line not in parts and text != self.message:
                parts.append(f"{line} ({severity})" if severity and severity != "error" else line)
        return redact("; ".join(p for p in parts if p)[:600])


def _text(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("value")
    return str(value) if value is not None else ""


def parse_error(body: bytes) -> SapError | None:
    """The SAP error in a response body (the ``{"error": …}`` object or that object itself), or None."""
    try:
        doc = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None
    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
        doc = doc["error"]
    if not isinstance(doc, dict) or "message" not in doc:
        return None
    details: list[tuple[str, str, str]] = []
    inner = doc.get("innererror")
    for item in (inner.get("errordetails") or []) if isinstance(inner, dict) else []:
        if isinstance(item, dict):
            details.append((str(item.get("code") or ""), _text(item.get("message")), str(item.get("severity") or "")))
    return SapError(str(doc.get("code") or ""), _text(doc.get("message")), details)


def is_lock(error: SapError, extra: frozenset[str] = frozenset()) -> bool:
    codes = set(error.codes())
    if codes & (LOCK_MESSAGES | extra):
        return True
    return any(_LOCK_TEXT.search(text) for text in error.texts())


def classify(status: int, body: bytes, retry_after: str | None, what: str, policy: ErrorPolicy,
             lock_messages: frozenset[str] = frozenset()) -> DeliveryError:
    """The delivery error for a failed SAP answer (``status`` not a success)."""
    error = parse_error(body)
    detail = error.describe() if error else body_excerpt(Response(status, {}, body))
    message = f"{what}: HTTP {status}" + (f": {detail}" if detail else "")
    wait = parse_retry_after(retry_after)
    if error is not None and is_lock(error, lock_messages):
        return TransientError(f"{message} (record locked; retrying)", retry_after=wait)
    if status == 412:
        return TransientError(f"{message} (changed since read; retrying with the current ETag)", retry_after=wait)
    if policy.is_transient(status):
        return TransientError(message, retry_after=wait)
    return PermanentError(message)
