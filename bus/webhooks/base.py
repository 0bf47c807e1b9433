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

from adapters.base import WebhookAnswer, WebhookRequest
from bus.envelope import Event
from bus.errors import WebhookRejected
from bus.mediatypes import MEDIA_TYPES, media_type_allowed

__all__ = ["MEDIA_TYPES", "Endpoint", "Ingest", "WebhookRejected", "media_type_allowed"]

#: Journals and queues events durably; returns only when they survive a crash, raises on failure.
Ingest = Callable[[list[Event]], Awaitable[None]]


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
    #: ``(request | None, status, reason, detail, accepted ids) -> WebhookAnswer | None``: the adapter's
    #: protocol-shaped answer (see :meth:`adapters.base.Adapter.webhook_answer`); None answers JSON.
    answer: Callable[[WebhookRequest | None, int, str, str, list[str]], WebhookAnswer | None] | None = None
