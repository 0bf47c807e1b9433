"""HubSpot inbound: the deals search used by polling, and the webhook event array.

Polling asks ``POST /crm/v3/objects/deals/search`` for deals with ``hs_lastmodifieddate >= watermark``,
oldest first, paged by ``after``. ``>=`` rather than ``>``: when a poll stops at its record cap between two
deals modified in the same millisecond, ``>`` would skip the second one for good; with ``>=`` the next poll
sees the boundary deal again and the bus drops it by its dedup key (``id@lastmodified``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import datetime
from typing import Any

import orjson

from bus.errors import WebhookRejected

__all__ = ["EventDeduper", "parse_events", "search_body", "to_epoch_ms"]


def to_epoch_ms(value: Any) -> int | None:
    """Epoch milliseconds from HubSpot's ISO timestamps (``2019-10-30T03:30:17.883Z``) or ms strings."""
    if value is None or value == "":
        return None
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    try:
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return None


def search_body(watermark_ms: int, properties: list[str], limit: int, after: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "filterGroups": [{"filters": [
            {"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": str(watermark_ms)}]}],
        "sorts": [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}],
        "properties": sorted(set(properties) | {"hs_lastmodifieddate"}),
        "limit": limit,
        "after": after or "0",  # the v3 spec lists 'after' as required
    }
    return body


def event_key(event: dict[str, Any]) -> str:
    """HubSpot says ``eventId`` alone is not unique: the dedup key is subscription, event and time."""
    return f"{event.get('subscriptionId')}:{event.get('eventId')}:{event.get('occurredAt')}"


def _is_deal_event(event: dict[str, Any]) -> bool:
    kind = str(event.get("subscriptionType") or "")
    return kind.startswith("deal.") or (kind.startswith("object.") and event.get("objectTypeId") == "0-3")


def parse_events(body: bytes) -> list[dict[str, Any]]:
    """The deal events of one webhook request body (a JSON array); 400 when it is not one."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise WebhookRejected("body is not JSON; HubSpot sends a JSON array of events",
                              reason="malformed_body") from None
    if isinstance(doc, dict):
        doc = [doc]  # a single event replayed by hand
    if not isinstance(doc, list) or not all(isinstance(e, dict) for e in doc):
        raise WebhookRejected("body must be a JSON array of event objects", reason="malformed_body")
    return [e for e in doc if _is_deal_event(e)]


class EventDeduper:
    """Remembers the last ``size`` event keys: HubSpot retries deliveries and may repeat an event."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def first_time(self, key: str) -> bool:
        with self._lock:
            if key in self._seen:
                self._seen.move_to_end(key)
                return False
            self._seen[key] = None
            if len(self._seen) > self.size:
                self._seen.popitem(last=False)
            return True
