"""Inbound HTTP: webhook endpoints, ``/ping``, ``/ready`` and ``/metrics`` on one port.

Build a :class:`WebhookApp` from the configured systems' webhook triggers (:func:`endpoints_for` does it for
one adapter instance) and serve it with :class:`WebhookServer`. See ``docs/webhooks.md``.
"""

from __future__ import annotations

from functools import partial

from adapters.base import Adapter
from bus.webhooks.app import WebhookApp
from bus.webhooks.base import MEDIA_TYPES, Endpoint, Ingest, WebhookRejected, media_type_allowed
from bus.webhooks.server import WebhookServer

__all__ = [
    "MEDIA_TYPES",
    "Endpoint",
    "Ingest",
    "WebhookApp",
    "WebhookRejected",
    "WebhookServer",
    "endpoints_for",
    "media_type_allowed",
]


def endpoints_for(system: str, adapter: Adapter) -> dict[tuple[str, str], Endpoint]:
    """One :class:`Endpoint` per webhook trigger of ``adapter`` (a configured system).

    The event type is ``"{system}.{trigger}"``; the key function, accepted media types and protocol-shaped
    answers come from the adapter's ``webhook_key``, ``webhook_content_types`` and ``webhook_answer`` hooks.
    """
    out: dict[tuple[str, str], Endpoint] = {}
    for name, spec in adapter.triggers.items():
        if spec.kind != "webhook":
            continue
        out[(system, name)] = Endpoint(
            system=system, trigger=name, handler=partial(adapter.webhook, name), event_type=f"{system}.{name}",
            key=adapter.webhook_key(name), content_types=adapter.webhook_content_types(name),
            answer=partial(adapter.webhook_answer, name),
            # adapters whose webhook handling is pure CPU (verify + parse) say so: no thread-pool hop per request
            blocking=adapter.webhook_blocking,
        )
    return out
