"""ERPNext inbound: polling on ``modified``, and Frappe webhooks.

A poll lists ``[["modified", ">=", watermark - overlap]]`` ordered by ``modified asc, name asc`` in pages
(``limit_start``/``limit_page_length``), then reads each document whole (child tables included: the list
endpoint returns parent fields only). The dedup key is ``name@modified`` and the watermark the newest
``modified`` read; a poll stops after ``max_records`` only past the watermark's own timestamp, so the next
poll neither skips nor repeats anything. Frappe writes ``modified`` with microseconds, in the site's time
zone; the text is compared as Frappe stores it.

Webhooks: the Webhook doctype posts the fields or the JSON template it was given, signed (when "Enable
Security" is on) with ``X-Frappe-Webhook-Signature = base64(HMAC-SHA256(secret, body))``; Frappe sets no
Content-Type unless one is added as a header, so the body is parsed as JSON whatever it says.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import structlog

from adapters.base import PollResult, WebhookRequest
from adapters.erpnext.client import FrappeClient
from adapters.erptime import look_back, parse_stamp
from bus.errors import PermanentError, WebhookRejected

__all__ = ["Poller", "explode_items", "parse_webhook"]

log = structlog.get_logger(__name__)

MAX_DEPTH = 32


class Poller:
    def __init__(self, client: FrappeClient, settings: Mapping[str, Any]) -> None:
        self.client = client
        self.page_size = int(settings.get("page_size", 100))
        self.max_records = int(settings.get("max_records", 1000))
        self.overlap = float(settings.get("overlap", 2))
        self.start = settings.get("start")
        self.filters: Mapping[str, Sequence[Any]] = settings.get("filters") or {}

    def poll(self, doctype: str, watermark: str | None) -> PollResult:
        since = watermark or (str(self.start) if self.start else None)
        filters: list[Any] = list(self.filters.get(doctype) or [])
        if since:
            try:
                filters.append(["modified", ">=", look_back(since, self.overlap, micro=True)])
            except PermanentError:
                raise PermanentError(f"{self.client.system}: watermark {since!r} of {doctype} is not a Frappe "
                                     "'modified' timestamp") from None
        heads: list[dict[str, Any]] = []
        start = 0
        while True:
            page = self.client.get_list(doctype, fields=["name", "modified"], filters=filters,
                                        order_by="modified asc, name asc", limit_start=start,
                                        limit_page_length=self.page_size)
            heads.extend(page)
            start += len(page)
            if len(page) < self.page_size:
                break
            if len(heads) >= self.max_records:
                last = heads[-1].get("modified")
                kept = [h for h in heads if h.get("modified") != last]
                if kept and (since is None or _after(kept[-1].get("modified"), since)):
                    heads = kept
                    break
        records: list[tuple[str, Any]] = []
        for head in heads:
            doc = self.client.get_doc(doctype, str(head["name"]))
            # The document as read now: a change after the list gives a newer 'modified', read next time too.
            records.append((f"{doc.get('name')}@{doc.get('modified')}", doc))
        stamps = [str(h["modified"]) for h in heads if h.get("modified")]
        newest = max(stamps, key=parse_stamp) if stamps else None
        log.info("erpnext_poll", system=self.client.system, doctype=doctype, records=len(records), watermark=newest)
        return PollResult(records=records, watermark=newest or watermark)


def explode_items(client: FrappeClient, result: PollResult) -> PollResult:
    """One record per item row of the polled documents: the canonical model asks for one material per
    procurement, a Material Request holds several. Each row keeps Frappe's own fields (``parent`` is the
    document's name) and carries the document's header fields under ``document`` (without the items), the
    ``po_no`` of the Sales Order it serves (``sales_order_reference``,
    the customer order's id in the triangle) and its Item's ``default_supplier`` (from the Item's defaults),
    read once per poll."""
    orders: dict[str, str | None] = {}
    suppliers: dict[str, str | None] = {}
    records: list[tuple[str, Any]] = []
    for key, doc in result.records:
        header = {k: v for k, v in doc.items() if k != "items"}
        for row in doc.get("items") or []:
            if not isinstance(row, dict):
                continue
            so = row.get("sales_order")
            if so and so not in orders:
                orders[so] = client.get_doc("Sales Order", str(so)).get("po_no") or None
            code = row.get("item_code")
            if code and code not in suppliers:
                defaults = client.get_doc("Item", str(code)).get("item_defaults") or []
                suppliers[code] = next((d.get("default_supplier") for d in defaults
                                        if isinstance(d, dict) and d.get("default_supplier")), None)
            records.append((f"{key}#{row.get('name') or row.get('idx')}",
                            {**row, "document": header, "sales_order_reference": orders.get(so) if so else None,
                             "default_supplier": suppliers.get(code) if code else None}))
    return PollResult(records=records, watermark=result.watermark)


def _after(stamp: Any, watermark: str) -> bool:
    return isinstance(stamp, str) and parse_stamp(stamp) > parse_stamp(watermark)


def _depth(value: Any, level: int = 0) -> int:
    if level > MAX_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level)
    return level


def parse_webhook(request: WebhookRequest) -> list[Any]:
    """The JSON document(s) of a verified Frappe webhook: an object, or a list of objects."""
    try:
        doc = orjson.loads(request.body)
    except orjson.JSONDecodeError as exc:
        raise WebhookRejected(f"the webhook body is not JSON: {exc}", status=400, reason="malformed_body") from None
    if _depth(doc) > MAX_DEPTH:
        raise WebhookRejected(f"the webhook body nests deeper than {MAX_DEPTH} levels", status=400,
                              reason="too_deep")
    items = doc if isinstance(doc, list) else [doc]
    if not items or not all(isinstance(i, dict) and i for i in items):
        raise WebhookRejected("the webhook body must be a JSON object with the document's fields (or a list of "
                              "them); set the Webhook's 'Request Structure' to Form URL-Encoded fields or JSON",
                              status=400, reason="not_an_object")
    return items
