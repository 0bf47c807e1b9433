"""Inbound HTTP: webhook endpoints, ``/ping``, ``/ready`` and ``/metrics`` on one port.

Build a :class:`WebhookApp` from the configured systems' webhook triggers (:func:`endpoints_for` does it for
one adapter instance) and serve it with :class:`WebhookServer`. See ``docs/webhooks.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

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

    The event type is ``"{system}.{trigger}"``. An adapter may offer, optionally, ``webhook_key(trigger)``
    returning a business-key function and ``webhook_content_types(trigger)`` returning accepted media types
    (as :class:`adapters.webhook.WebhookAdapter` does); without them the key is None and any type passes.
    """
    out: dict[tuple[str, str], Endpoint] = {}
    key_of: Callable[[str], Callable[[Any], str | None] | None] | None = getattr(adapter, "webhook_key", None)
    types_of: Callable[[str], tuple[str, ...]] | None = getattr(adapter, "webhook_content_types", None)
    for name, spec in adapter.triggers.items():
        if spec.kind != "webhook":
            continue
        out[(system, name)] = Endpoint(
            system=system, trigger=name, handler=partial(adapter.webhook, name), event_type=f"{system}.{name}",
            key=key_of(name) if key_of else None, content_types=types_of(name) if types_of else (),
            # adapters whose webhook handling is pure CPU (verify + parse) say so: no thread-pool hop per request
            blocking=adapter.webhook_blocking,
        )
    return out
