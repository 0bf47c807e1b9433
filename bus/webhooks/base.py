"""What the webhook server is built from: endpoints, the ingest callback, and the typed rejection.

A webhook trigger (an adapter method) turns a :class:`~adapters.base.WebhookRequest` into payloads. When it
refuses a request it raises :class:`WebhookRejected` (or a subclass such as
:class:`adapters.signatures.SignatureError`), which carries the HTTP status and a short ``reason`` code used
in logs and in the ``ironbus_webhook_rejected_total`` metric. Any other
:class:`~bus.errors.PermanentError` or :class:`~bus.errors.DecodeError` becomes 400 ``bad_request``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from adapters.base import WebhookRequest
from bus.envelope import Event
from bus.errors import PermanentError

__all__ = ["MEDIA_TYPES", "Endpoint", "Ingest", "WebhookRejected", "media_type_allowed"]

#: Journals and queues events durably; returns only when they survive a crash, raises on failure.
Ingest = Callable[[list[Event]], Awaitable[None]]

#: Media types accepted for each ``content_type`` setting; ``+json`` / ``+xml`` suffixes match too.
MEDIA_TYPES: dict[str, tuple[str, ...]] = {
    "json": ("application/json", "text/json", "+json"),
    "xml": ("application/xml", "text/xml", "+xml"),
    "form": ("application/x-www-form-urlencoded",),
}


class WebhookRejected(PermanentError):
    """A webhook request refused on purpose.

    ``status`` is the HTTP status to answer (400, 401, 403, 413, 415 …); ``reason`` is a short, fixed code
    (``malformed_body``, ``mismatch`` …) that becomes a metric label, so it must never contain request data.
    The message is returned to the caller: it must never contain a secret or a signature value.
    """

    def __init__(self, message: str, *, status: int = 400, reason: str = "bad_request") -> None:
        self.status = status
        self.reason = reason
        super().__init__(message)


@dataclass(frozen=True)
class Endpoint:
    """One webhook trigger of one configured system, served at ``POST /hooks/{system}/{trigger}``.

    ``handler`` verifies and parses a request into payloads (one event each); it raises
    :class:`WebhookRejected` / :class:`~bus.errors.PermanentError` to refuse it. ``key`` extracts the business
    key from a payload. ``content_types`` limits the accepted ``Content-Type`` (entries as in
    :data:`MEDIA_TYPES`; empty accepts any; a request without the header is let through because some vendors,
    Frappe among them, send none). ``blocking=True`` runs the handler in a thread pool so a slow handler
    cannot stall the server; a pure, fast handler may set it to False to save the thread hop.
    """

    system: str
    trigger: str
    handler: Callable[[WebhookRequest], list[Any]]
    event_type: str
    key: Callable[[Any], str | None] | None = None
    content_types: tuple[str, ...] = ()
    blocking: bool = True


def media_type_allowed(content_type: str | None, allowed: tuple[str, ...]) -> bool:
    """Whether a ``Content-Type`` header value is one of ``allowed`` (``+suffix`` entries match suffixes)."""
    if not allowed or content_type is None or not content_type.strip():
        return True
    media = content_type.split(";", 1)[0].strip().lower()
    for entry in allowed:
        if entry.startswith("+"):
            if media.endswith(entry):
                return True
        elif media == entry:
            return True
    return False
