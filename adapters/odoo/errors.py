"""Reading Odoo's error answers into the bus's delivery errors.

Both protocols carry the same error object (``odoo.http.serialize_exception``): ``{name, message, arguments,
context, debug}`` where ``name`` is the Python exception's qualified name. JSON-2 (Odoo 19+) sends it as the
body of a real 4xx/5xx (``UserError`` and its subclasses carry their own ``http_status``: 422 for a
validation error, 403 for access, 404 for a missing record); ``/jsonrpc`` sends HTTP 200 with
``{"error": {"code", "message", "data": <that object>}}``.

The exception name decides before the status does, because the status cannot tell a lock conflict (a 500 or
a 200 over JSON-RPC) from a bug: serialization failures and lock timeouts are worth retrying, validation
and access errors are not.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.http import ErrorPolicy, Response, parse_retry_after
from bus.errors import DeliveryError, PermanentError, TransientError

__all__ = ["OdooErrors", "error_from_object", "is_transient_name"]

#: Exception names (or their last part) a retry can cure: concurrent updates and database locks.
TRANSIENT_NAMES = frozenset({
    "odoo.exceptions.ConcurrencyError",  # Odoo 18+: the request's retries on serialization failures ran out
    "psycopg2.errors.SerializationFailure", "psycopg2.extensions.TransactionRollbackError",
    "psycopg2.errors.LockNotAvailable", "psycopg2.errors.DeadlockDetected", "psycopg2.OperationalError",
    "psycopg.errors.SerializationFailure", "psycopg.errors.LockNotAvailable", "psycopg.errors.DeadlockDetected",
    "odoo.addons.base.models.ir_cron.CronLocked",
})
#: Odoo's own business errors: the request is wrong and will stay wrong.
PERMANENT_NAMES = frozenset({
    "odoo.exceptions.UserError", "odoo.exceptions.ValidationError", "odoo.exceptions.AccessError",
    "odoo.exceptions.AccessDenied", "odoo.exceptions.MissingError", "odoo.exceptions.RedirectWarning",
    "odoo.exceptions.CacheMiss",
    # A bad field name or argument surfaces as a bare Python error (HTTP 500 over JSON-2): a payload bug.
    "builtins.ValueError", "builtins.TypeError", "builtins.KeyError", "builtins.AttributeError",
})
#: werkzeug's HTTP exceptions keep their meaning when JSON-RPC wraps them in an HTTP 200.
WERKZEUG_STATUS = {"RequestTimeout": 408, "TooManyRequests": 429, "InternalServerError": 500, "BadGateway": 502,
                   "ServiceUnavailable": 503, "GatewayTimeout": 504}
_TRANSIENT_TAILS = frozenset(n.rsplit(".", 1)[-1] for n in TRANSIENT_NAMES)


def is_transient_name(name: str) -> bool | None:
    """True/False when the exception name decides; None when it does not."""
    if name in TRANSIENT_NAMES or name.rsplit(".", 1)[-1] in _TRANSIENT_TAILS:
        return True
    if name in PERMANENT_NAMES:
        return False
    return None


def describe(obj: Mapping[str, Any]) -> str:
    """``<name>: <message>`` without the traceback (``debug`` names server paths, not useful to an operator)."""
    name = str(obj.get("name") or "unknown error")
    message = obj.get("message")
    if not message and isinstance(obj.get("arguments"), list) and obj["arguments"]:
        message = obj["arguments"][0]
    return f"{name}: {str(message or '').strip() or 'no message'}"


def error_from_object(obj: Mapping[str, Any], status: int | None, what: str,
                      policy: ErrorPolicy | None = None, retry_after: float | None = None) -> DeliveryError:
    """The delivery error for one Odoo error object (``status`` None for a JSON-RPC error)."""
    text = f"{what}: Odoo {'HTTP ' + str(status) + ' ' if status else ''}{describe(obj)}"
    name = str(obj.get("name") or "")
    decided = is_transient_name(name)
    if status is None and name.startswith("werkzeug.exceptions."):
        status = WERKZEUG_STATUS.get(name.rsplit(".", 1)[-1])
    if decided is None:
        if status is None:
            # JSON-RPC: code 100 is "session expired" (log in again, then retry); anything else is a server error
            # Odoo did not classify, and retrying a bug only fills the logs: permanent.
            decided = False
        else:
            decided = (policy or ErrorPolicy()).is_transient(status)
    return TransientError(text, retry_after=retry_after) if decided else PermanentError(text)


class OdooErrors:
    """The ``classify`` hook of the JSON-2 HttpClient: Odoo's error body, or None for the generic policy."""

    def __init__(self, policy: ErrorPolicy) -> None:
        self.policy = policy

    def __call__(self, response: Response) -> DeliveryError | None:
        try:
            doc = response.json()
        except ValueError:
            return None  # a proxy's HTML page: the generic status handling
        if not isinstance(doc, dict) or "name" not in doc:
            return None
        return error_from_object(doc, response.status, "JSON-2 call", self.policy,
                                 parse_retry_after(response.header("retry-after")))
