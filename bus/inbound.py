"""Durable, shared deduplication of inbound webhook requests: a resent request is the same event.

Vendors resend a webhook they think failed: after a 503, a timeout, or a 202 whose answer was lost on the
way. Each resend used to become a new event with a new id, so the same change was delivered twice under two
idempotency keys. Instead, the events of a request get ids derived from what was received — system, trigger,
the SHA-256 of the body and the payload's position — and from the time window it arrived in. A resend within
the window yields the same ids: the journal keeps its first record (inserts are idempotent on the id) and the
worker skips deliveries already made (idempotency keys are ``event id:route:target``). The journal is the
shared store, so this holds across processes and hosts, and survives restarts.

The window (``IRONBUS_DEDUP_WINDOW``, default one hour) bounds the other side: the same body sent again later
(an order changed back to exactly what it was) is a new event. A resend that straddles the boundary of two
windows is not recognised; with resends seconds apart that is a small fraction of one percent of them.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid

from bus.envelope import name_based_id

__all__ = ["DEDUP_WINDOW", "inbound_event_ids"]

#: Seconds during which a byte-identical request to the same endpoint is taken as a resend.
DEDUP_WINDOW = float(os.environ.get("IRONBUS_DEDUP_WINDOW") or 3600.0)
_NAMESPACE = uuid.UUID("6f1c7a52-3c1e-4d8e-9a57-1b2f0e7d4c11")


def inbound_event_ids(system: str, trigger: str, body: bytes, count: int, *, now: float | None = None,
                      window: float | None = None) -> list[str]:
    """The ids of the ``count`` events parsed from one request body (stable for resends within the window)."""
    span = DEDUP_WINDOW if window is None else window
    bucket = int((time.time() if now is None else now) // span) if span > 0 else uuid.uuid4().int
    digest = hashlib.sha256(body).hexdigest()
    return [name_based_id(_NAMESPACE, f"{system}/{trigger}/{digest}/{bucket}/{index}") for index in range(count)]
