"""Polling Odoo for changed records: ``search_read`` on ``write_date``, paged, with a look-back window.

A poll reads ``[("write_date", ">=", watermark - overlap)]`` ordered by ``write_date, id`` in pages of
``page_size`` (``offset``/``limit``). It stops after ``max_records``, but never inside one ``write_date``
second: the next poll starts at that second again, so a page boundary can neither skip records (a gap) nor,
thanks to the dedup key ``id@write_date``, emit one twice. The watermark is the newest ``write_date`` read.
Order documents come with their lines (one extra ``search_read`` per page).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from adapters.base import AdapterStore, PollResult
from adapters.erptime import look_back, parse_stamp
from adapters.odoo.client import OdooClient
from adapters.odoo.orders import requested_key
from bus.errors import PermanentError

__all__ = ["MODELS", "ModelSpec", "Poller"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    model: str
    fields: tuple[str, ...]
    line_model: str | None = None
    line_field: str | None = None  # the order's one2many, e.g. order_line
    line_parent: str | None = None  # the line's many2one back to the order
    line_fields: tuple[str, ...] = ()


MODELS: dict[str, ModelSpec] = {
    "sale.order": ModelSpec(
        "sale.order",
        ("name", "state", "partner_id", "client_order_ref", "origin", "date_order", "commitment_date",
         "validity_date", "currency_id", "amount_untaxed", "amount_total", "note", "create_date", "write_date"),
        "sale.order.line", "order_line", "order_id",
        ("sequence", "product_id", "name", "product_uom_qty", "product_uom", "price_unit", "price_subtotal",
         "qty_delivered", "write_date")),
    "purchase.order": ModelSpec(
        "purchase.order",
        ("name", "state", "partner_id", "partner_ref", "origin", "date_order", "date_approve", "date_planned",
         "currency_id", "amount_untaxed", "amount_total", "notes", "create_date", "write_date"),
        "purchase.order.line", "order_line", "order_id",
        ("sequence", "product_id", "name", "product_qty", "product_uom", "price_unit", "price_subtotal",
         "date_planned", "qty_received", "write_date")),
    "res.partner": ModelSpec(
        "res.partner",
        ("name", "ref", "is_company", "email", "phone", "vat", "street", "zip", "city", "country_id",
         "customer_rank", "supplier_rank", "active", "create_date", "write_date")),
    "product.product": ModelSpec(
        "product.product",
        ("name", "default_code", "barcode", "type", "uom_id", "list_price", "standard_price", "active",
         "create_date", "write_date")),
}


class Poller:
    """Reads changed records of one model per call; see the module docstring."""

    def __init__(self, client: OdooClient, settings: Mapping[str, Any],
                 store: Callable[[], AdapterStore] | None = None) -> None:
        self.client = client
        self.store = store
        self.page_size = int(settings.get("page_size", 200))
        self.max_records = int(settings.get("max_records", 2000))
        self.overlap = float(settings.get("overlap", 2))
        self.start = settings.get("start")
        self.extra_fields: Mapping[str, Sequence[str]] = settings.get("fields") or {}

    def poll(self, model: str, watermark: str | None, domain: Sequence[Any] = ()) -> PollResult:
        spec = MODELS[model]
        since = watermark or (str(self.start) if self.start else None)
        where: list[Any] = list(domain)
        if since:
            try:
                where.append(["write_date", ">=", look_back(since, self.overlap, micro=False)])
            except PermanentError:
                raise PermanentError(f"{self.client.system}: watermark {since!r} of {model} is not an Odoo "
                                     "write_date (expected 'YYYY-MM-DD HH:MM:SS')") from None
        fields = list(dict.fromkeys([*spec.fields, *(self.extra_fields.get(model) or [])]))
        rows: list[dict[str, Any]] = []
        offset = 0
        while True:
            page = self.client.call(model, "search_read", domain=where, fields=fields, offset=offset,
                                    limit=self.page_size, order="write_date asc, id asc")
            if not isinstance(page, list):
                raise PermanentError(f"{self.client.system}: {model}.search_read answered {type(page).__name__}, "
                                     "not a list of records")
            rows.extend(r for r in page if isinstance(r, dict))
            offset += len(page)
            if len(page) < self.page_size:
                break
            if len(rows) >= self.max_records:
                # Stop at the cap, but between two write_date seconds (the last second may go on in the next
                # page, so it is left for the next poll), and only past the watermark's own second, which
                # every poll reads again: stopping inside it would read the same records forever.
                last = rows[-1].get("write_date")
                kept = [r for r in rows if r.get("write_date") != last]
                if kept and (since is None or _after(kept[-1].get("write_date"), since)):
                    rows = kept
                    break
        if spec.line_model and rows:
            self._attach_lines(spec, rows)
        records = [(f"{r['id']}@{r.get('write_date')}", {**r, "_model": model}) for r in rows]
        stamps = [str(r["write_date"]) for r in rows if r.get("write_date")]
        newest = max(stamps, key=lambda s: parse_stamp(s)) if stamps else None
        log.info("odoo_poll", system=self.client.system, model=model, records=len(records), watermark=newest)
        return PollResult(records=records, watermark=newest or watermark)

    def _attach_lines(self, spec: ModelSpec, rows: list[dict[str, Any]]) -> None:
        assert spec.line_model and spec.line_parent and spec.line_field
        ids = [r["id"] for r in rows]
        lines: list[dict[str, Any]] = []
        offset = 0
        while True:
            page = self.client.call(spec.line_model, "search_read", domain=[[spec.line_parent, "in", ids]],
                                    fields=[*spec.line_fields, spec.line_parent], offset=offset,
                                    limit=self.page_size, order="id asc")
            lines.extend(p for p in page if isinstance(p, dict))
            offset += len(page)
            if len(page) < self.page_size:
                break
        by_order: dict[int, list[dict[str, Any]]] = {}
        for line in lines:
            parent = line.get(spec.line_parent)
            parent_id = parent[0] if isinstance(parent, list) and parent else parent
            if isinstance(parent_id, int):
                by_order.setdefault(parent_id, []).append(line)
        for row in rows:
            row["lines"] = sorted(by_order.get(row["id"], []), key=lambda x: (x.get("sequence") or 0, x["id"]))
            self._requested(spec.model, row)

    def _requested(self, model: str, row: dict[str, Any]) -> None:
        """Add ``requested_quantity``/``requested_date`` (None when the bus did not write the order) and
        ``delay_days`` (how much later than asked the line is now planned) to an order's lines."""
        raw = self.store().get(requested_key(model, row["id"])) if self.store else None
        asked: dict[str, Any] = json.loads(raw) if raw else {}
        for line in row["lines"]:
            product = line.get("product_id")
            pid = product[0] if isinstance(product, list) and product else product
            mine = asked.get(str(pid)) or {}
            line["requested_quantity"] = mine.get("quantity")
            line["requested_date"] = mine.get("date")
            planned = line.get("date_planned")
            line["delay_days"] = ((parse_stamp(planned).date() - parse_stamp(mine["date"]).date()).days
                                  if mine.get("date") and isinstance(planned, str) else 0)


def _after(stamp: Any, watermark: str) -> bool:
    return isinstance(stamp, str) and parse_stamp(stamp) > parse_stamp(watermark)
