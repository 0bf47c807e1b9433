"""SAP inbound: polling the OData APIs on ``LastChangeDateTime``, and business events pushed by Event Mesh.

**Polling.** Each poll asks for the headers changed at or after the watermark minus an overlap window,
oldest first (``$filter=LastChangeDateTime ge datetimeoffset'…'&$orderby=LastChangeDateTime,<key>``), with
their items expanded, and follows the server's ``__next`` links. ``ge`` rather than ``gt`` and the overlap:
SAP stamps ``LastChangeDateTime`` when a document is saved, not when its transaction commits, so a document
saved just before a poll can become visible just after it with an earlier stamp; and a poll that stops at
its record cap between two documents of the same instant must see the second one next time. The records
seen again are dropped by the bus on their dedup key ``<key>@<LastChangeDateTime>`` (a later change gives a
new key). The watermark is the newest stamp the server returned (never the local clock, never backwards).

**Business events.** SAP S/4HANA raises CloudEvents (``sap.s4.beh.salesorder.v1.SalesOrder.Changed.v1``)
that SAP Event Mesh pushes to a webhook subscription, authenticated with HTTP Basic. They carry the keys
of the changed document (and a few header fields), not the document: a route reads it with
``read_sales_order`` when it needs more.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from adapters.base import PollResult, WebhookRequest
from adapters.sap.client import SapClient
from adapters.sap.odata import filter_datetimeoffset, parse_date, plain
from adapters.signatures import SignatureError
from bus.errors import PermanentError, WebhookRejected

__all__ = ["EVENT_KEYS", "FEEDS", "Feed", "Poller", "parse_events", "parse_watermark", "verify_basic"]


@dataclass(frozen=True)
class Feed:
    """One pollable document type: where it lives, its key, and the navigation with its items."""

    service: str
    entity_set: str
    key: str
    expand: str | None = None
    changed: str = "LastChangeDateTime"


FEEDS: dict[str, Feed] = {
    "sales_orders_changed": Feed("API_SALES_ORDER_SRV", "A_SalesOrder", "SalesOrder", "to_Item"),
    "purchase_orders_changed": Feed("API_PURCHASEORDER_PROCESS_SRV", "A_PurchaseOrder", "PurchaseOrder",
                                    "to_PurchaseOrderItem,to_PurchaseOrderItem/to_ScheduleLine"),
    "purchase_requisitions_changed": Feed("API_PURCHASEREQ_PROCESS_SRV", "A_PurchaseRequisitionHeader",
                                          "PurchaseRequisition", "to_PurchaseReqnItem"),
    "products_changed": Feed("API_PRODUCT_SRV", "A_Product", "Product", "to_Description"),
}


def parse_watermark(watermark: str, what: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(watermark.replace("Z", "+00:00"))
    except ValueError:
        raise PermanentError(f"{what}: watermark {watermark!r} is not an ISO timestamp") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _stamp(row: Mapping[str, Any], field: str) -> dt.datetime | None:
    raw = row.get(field)
    if not isinstance(raw, str) or not raw:
        return None
    try:
        return parse_date(raw) if raw.startswith("/Date(") else parse_watermark(raw, field)
    except (ValueError, PermanentError):
        return None


class Poller:
    """Poll triggers of one SAP system."""

    def __init__(self, client: SapClient, *, overlap: float = 5.0, page_size: int = 200, max_records: int = 5000,
                 start: str | None = None) -> None:
        self.client = client
        self.overlap = dt.timedelta(seconds=overlap)
        self.page_size = page_size
        self.max_records = max_records
        self.start = start

    def poll(self, trigger: str, feed: Feed, watermark: str | None) -> PollResult:
        what = f"{trigger} ({feed.service}/{feed.entity_set})"
        mark = watermark or self.start
        since = parse_watermark(mark, what) if mark else None
        rows = self._read(feed, since - self.overlap if since is not None else None)
        records: list[tuple[str, Any]] = []
        newest = since
        for row in rows:
            stamp = _stamp(row, feed.changed)
            if stamp is not None and (newest is None or stamp > newest):
                newest = stamp
            records.append((f"{row.get(feed.key)}@{_iso(stamp) if stamp else ''}", plain(row)))
        return PollResult(records=records, watermark=_iso(newest) if newest is not None else watermark)

    def _read(self, feed: Feed, since: dt.datetime | None) -> list[dict[str, Any]]:
        """Up to ``max_records`` rows changed at or after ``since``, oldest first.

        Windows of ``page_size`` rows, each following the server's ``__next`` links; the next window starts at
        the newest stamp read so far (keyset paging), not at an offset: a document changed while the poll
        pages moves to the end of the order, and an offset would then skip the one that took its place.
        Rows of the boundary instant come again and are dropped here by key; a window whose rows all share
        one instant moves on by ``$skip`` within it.
        """
        rows: list[dict[str, Any]] = []
        seen: set[tuple[Any, Any]] = set()
        skip = 0
        while len(rows) < self.max_records:
            params = {"$orderby": f"{feed.changed} asc,{feed.key} asc", "$top": str(self.page_size)}
            if feed.expand:
                params["$expand"] = feed.expand
            if since is not None:
                params["$filter"] = f"{feed.changed} ge {filter_datetimeoffset(since)}"
            if skip:
                params["$skip"] = str(skip)
            page = self.client.get_all(feed.service, feed.entity_set, params)
            fresh = [r for r in page if (r.get(feed.key), r.get(feed.changed)) not in seen]
            seen.update((r.get(feed.key), r.get(feed.changed)) for r in fresh)
            rows.extend(fresh)
            if len(page) < self.page_size:
                break
            stamps = [s for s in (_stamp(r, feed.changed) for r in page) if s is not None]
            last = max(stamps) if stamps else None
            if last is None or (since is not None and last <= since):
                skip += len(page)  # the whole window is one instant: step through it
            else:
                since, skip = last, 0
        return rows[: self.max_records]


# -- business events ------------------------------------------------------------------------------------
#: The data field that names the document, per business object of the event type.
EVENT_KEYS: dict[str, str] = {
    "salesorder": "SalesOrder", "purchaseorder": "PurchaseOrder", "purchaserequisition": "PurchaseRequisition",
    "product": "Product", "businesspartner": "BusinessPartner", "outbounddelivery": "DeliveryDocument",
    "billingdocument": "BillingDocument",
}
_REQUIRED = ("id", "source", "type", "specversion")


def verify_basic(request: WebhookRequest, username: str, password: str) -> None:
    """The HTTP Basic credentials Event Mesh sends with each push (constant-time comparison)."""
    header = request.headers.get("authorization", "")
    if not header:
        raise SignatureError("missing", "the request carries no Authorization header (Basic expected)")
    scheme, _, value = header.partition(" ")
    try:
        user, sep, given = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise SignatureError("malformed", "the Authorization header is not HTTP Basic") from None
    if scheme.lower() != "basic" or not sep:
        raise SignatureError("malformed", "the Authorization header is not HTTP Basic")
    good_user = hmac.compare_digest(user.encode(), username.encode())
    good_password = hmac.compare_digest(given.encode(), password.encode())
    if not (good_user and good_password):
        raise SignatureError("mismatch", "wrong user or password for the business event webhook")


def _check_event(event: Any, where: str) -> dict[str, Any]:
    if not isinstance(event, dict):
        raise WebhookRejected(f"{where}: a CloudEvent must be a JSON object", reason="malformed_body")
    for name in _REQUIRED:
        if not isinstance(event.get(name), str) or not event[name]:
            raise WebhookRejected(f"{where}: CloudEvent attribute {name!r} is missing or not a string",
                                  reason="malformed_body")
    if event["specversion"] != "1.0":
        raise WebhookRejected(f"{where}: specversion {event['specversion'][:10]!r} not supported (expected '1.0')",
                              reason="malformed_body")
    return event


def _binary_event(request: WebhookRequest) -> dict[str, Any]:
    """A CloudEvent in binary mode: attributes in ``ce-*`` headers, the data as the body."""
    event: dict[str, Any] = {name[3:]: value for name, value in request.headers.items() if name.startswith("ce-")}
    try:
        event["data"] = orjson.loads(request.body) if request.body else None
    except orjson.JSONDecodeError:
        raise WebhookRejected("the event data (body) is not JSON", reason="malformed_body") from None
    event["datacontenttype"] = request.headers.get("content-type", "application/json")
    return event


def parse_events(request: WebhookRequest, allowed_types: tuple[str, ...]) -> list[dict[str, Any]]:
    """The CloudEvents of one push: structured (one JSON event), batched (a JSON array) or binary (``ce-``
    headers). Events of types outside ``allowed_types`` (prefixes) are refused with 422."""
    if "ce-type" in request.headers:
        events = [_binary_event(request)]
    else:
        try:
            doc = orjson.loads(request.body)
        except orjson.JSONDecodeError as exc:
            raise WebhookRejected(f"body is not JSON: {exc}", reason="malformed_body") from None
        events = doc if isinstance(doc, list) else [doc]
        if not events:
            raise WebhookRejected("the event batch is empty", reason="malformed_body")
    checked = [_check_event(e, f"event {i}") for i, e in enumerate(events)]
    for event in checked:
        if allowed_types and not event["type"].startswith(allowed_types):
            raise WebhookRejected(f"event type {event['type'][:120]!r} is not accepted here (expected one starting "
                                  f"with {', '.join(allowed_types)})", status=422, reason="unknown_event_type")
    return [_shape(e) for e in checked]


def _shape(event: dict[str, Any]) -> dict[str, Any]:
    """The payload of one event: its CloudEvents attributes, its data, and the business object it names."""
    parts = event["type"].split(".")
    # sap.s4.beh.<object>.v1.<Object>.<Operation>.v1
    obj = parts[3] if len(parts) >= 8 and parts[:3] == ["sap", "s4", "beh"] else None
    raw = event.get("data")
    data: dict[str, Any] = raw if isinstance(raw, dict) else {}
    key_field = EVENT_KEYS.get(obj or "")
    return {
        "id": event["id"], "type": event["type"], "source": event["source"], "time": event.get("time"),
        "subject": event.get("subject"), "object": obj, "operation": parts[6] if obj else None,
        "key": str(data.get(key_field)) if key_field and data.get(key_field) is not None else None,
        "data": event.get("data"),
    }
