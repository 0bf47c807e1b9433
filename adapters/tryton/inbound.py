"""Change detection for Tryton (which has no webhooks): polling on create/write dates, and flat payloads.

Each poll asks for the records with ``create_date`` or ``write_date`` after the watermark minus an overlap
window (``write_date`` is NULL until a record's first write, hence the OR). The new watermark is the
largest server date seen, so client clock skew does not matter; the overlap catches transactions that
committed after a poll but carry an earlier timestamp, and the dedup key ``"<id>@<date>"`` lets the bus drop
what it saw already.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

from adapters.base import PollResult
from adapters.tryton.client import TrytonClient
from adapters.tryton.codec import plain
from adapters.tryton.confirmation import ordered_quantity
from adapters.tryton.procurement import parse_note
from bus.errors import PermanentError

__all__ = ["Poller", "parse_watermark"]

_DATES = ["create_date", "write_date"]


def parse_watermark(watermark: str | None) -> dt.datetime | None:
    """A stored watermark (ISO, naive UTC) as a datetime; None means "from the beginning"."""
    if not watermark:
        return None
    try:
        value = dt.datetime.fromisoformat(watermark)
    except ValueError:
        raise PermanentError(f"tryton watermark {watermark!r} is not an ISO datetime") from None
    return value.replace(tzinfo=None) if value.tzinfo is None else value.astimezone(dt.UTC).replace(tzinfo=None)


def _dates_of(row: dict[str, Any], dates: Sequence[str]) -> list[dt.datetime]:
    found = []
    for name in dates:
        head, _, tail = name.partition(".")
        value = (row.get(head + ".") or {}).get(tail) if tail else row.get(name)
        if isinstance(value, dt.datetime):
            found.append(value)
    return found


def _ref(row: dict[str, Any], name: str, *fields: str) -> dict[str, Any] | None:
    """``{id, <fields>}`` of a many2one read with dotted fields (``"party."``), or None."""
    if row.get(name) is None:
        return None
    related = row.get(name + ".") or {}
    return {"id": row[name], **{f: related.get(f) for f in fields}}


def _lines(client: TrytonClient, model: str, parent: str, ids: list[int], extra: Sequence[str],
           shape: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    by_parent: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
    if not ids:
        return by_parent
    rows = client.search_read(model, [[parent, "in", ids], ["type", "=", "line"]],
                              ["id", parent, "product", "product.code", "product.name", "quantity", "unit",
                               "unit.symbol", "unit_price", *extra], order=[("sequence", "ASC"), ("id", "ASC")])
    for row in rows:
        by_parent.setdefault(row[parent], []).append(shape(row))
    return by_parent


def _flag(value: Any) -> bool | None:
    """A Boolean field as a bool: Tryton on SQLite answers 1/0 for some of them over JSON-RPC."""
    return None if value is None else bool(value)


def _line(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "product": _ref(row, "product", "code", "name"), "quantity": row.get("quantity"),
            "unit": _ref(row, "unit", "symbol"), "unit_price": row.get("unit_price")}


class Poller:
    """The poll triggers of one Tryton database."""

    def __init__(self, client: TrytonClient, overlap: float) -> None:
        self.client = client
        self.overlap = dt.timedelta(seconds=overlap)

    def poll(self, model: str, fields: Sequence[str], watermark: str | None,
             shape: Callable[[list[dict[str, Any]]], list[dict[str, Any]]],
             dates: Sequence[str] = _DATES, *, archived: bool = False) -> PollResult:
        """Records of ``model`` changed after ``watermark`` (minus the overlap), shaped into payloads.

        ``dates`` are the datetime fields that signal a change (dotted paths allowed, e.g. a product's
        ``template.write_date``). The first poll (no watermark) returns every record. ``archived`` includes
        deactivated records (Tryton hides them from searches): master data must see a deactivation.
        """
        since = parse_watermark(watermark)
        domain: list[Any] = []
        if since is not None:
            start = since - self.overlap
            domain = ["OR", *([name, ">", start] for name in dates)]
        # Tryton adds "active only" to every level of a domain that does not name ``active`` (both sides of
        # an OR included); the context switch is the one way to see archived records through a date OR.
        rows = self.client.search_read(model, domain, ["id", *dates, *fields], order=[("id", "ASC")],
                                       context={"active_test": False} if archived else None)
        if not rows:
            return PollResult(records=[], watermark=watermark)
        payloads = shape(rows)
        records = []
        for row, payload in zip(rows, payloads, strict=True):
            # Key on the newest change date: a later write gives a new key, a re-read of the same state not.
            records.append((f"{row['id']}@{max(_dates_of(row, dates)).isoformat()}", plain(payload)))
        newest = max(max(_dates_of(r, dates)) for r in rows)
        if since is not None and newest < since:
            newest = since  # only overlap-window records: never move the watermark backwards
        return PollResult(records=records, watermark=newest.isoformat())

    # -- shapes ----------------------------------------------------------------------------------------
    SALE_FIELDS = ("number", "reference", "state", "sale_date", "shipping_date", "party", "party.name",
                   "party.code", "comment", "description", "total_amount", "currency", "currency.code",
                   "shipment_state")

    def sales(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        def line(row: dict[str, Any]) -> dict[str, Any]:
            return {**_line(row), "shipping_date": row.get("shipping_date")}

        lines = _lines(self.client, "sale.line", "sale", [r["id"] for r in rows], ["shipping_date"], line)
        return [{
            "id": r["id"], "number": r.get("number"), "reference": r.get("reference"), "state": r.get("state"),
            "shipment_state": r.get("shipment_state"), "sale_date": r.get("sale_date"),
            "shipping_date": r.get("shipping_date"), "party": _ref(r, "party", "name", "code"),
            "description": r.get("description"), "comment": r.get("comment"),
            "total_amount": r.get("total_amount"), "currency": (r.get("currency.") or {}).get("code"),
            "create_date": r.get("create_date"), "write_date": r.get("write_date"), "lines": lines[r["id"]],
        } for r in rows]

    PURCHASE_FIELDS = ("number", "reference", "state", "purchase_date", "delivery_date", "party", "party.name",
                       "party.code", "comment", "total_amount", "currency", "currency.code", "shipment_state")

    def purchases(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        rows_by_line: dict[int, dict[str, Any]] = {}

        def line(row: dict[str, Any]) -> dict[str, Any]:
            rows_by_line[row["id"]] = row
            served = parse_note(row.get("note"))
            requested = row.get("delivery_date_store") if row.get("delivery_date_edit") else None
            # The date the bus asked for (in the line's note) stays the base of a delay even after a confirmed
            # purchase's moves were moved to a new requested date.
            if served and served["requested_date"]:
                requested = served["requested_date"]
            shaped = _line(row)
            ordered = ordered_quantity(row.get("note"))
            if ordered is not None:  # the supplier confirmed less: the line was amended, the shortfall stays visible
                shaped.update(quantity=ordered, confirmed_quantity=row.get("quantity"))
            return {**shaped, "delivery_date": row.get("delivery_date"), "requested_date": requested,
                    "order_id": served["order"] if served else None,
                    "request_id": served["request"] if served else None}

        lines = _lines(self.client, "purchase.line", "purchase", [r["id"] for r in rows],
                       ["delivery_date", "delivery_date_store", "delivery_date_edit", "moves", "note"], line)
        self._add_move_progress(lines, rows_by_line)
        return [{
            "id": r["id"], "number": r.get("number"), "reference": r.get("reference"), "state": r.get("state"),
            "shipment_state": r.get("shipment_state"), "purchase_date": r.get("purchase_date"),
            "delivery_date": r.get("delivery_date"), "party": _ref(r, "party", "name", "code"),
            "comment": r.get("comment"), "total_amount": r.get("total_amount"),
            "currency": (r.get("currency.") or {}).get("code"),
            "create_date": r.get("create_date"), "write_date": r.get("write_date"), "lines": lines[r["id"]],
        } for r in rows]

    def _add_move_progress(self, lines: dict[int, list[dict[str, Any]]],
                           rows_by_line: dict[int, dict[str, Any]]) -> None:
        """Per purchase line, what its incoming moves still promise: ``expected_quantity`` (non-cancelled
        moves, received or not), ``expected_date`` (the latest of their dates) and ``delay_days`` (that date
        minus the line's ``requested_date``, else its ``delivery_date``).

        A confirmed Tryton purchase is frozen; a supplier's delay or shortfall shows only on these moves (their
        date moved, their quantity lowered, or cancelled), so this is what lets a mapping tell delayed,
        partial and rejected purchases apart.
        """
        move_ids = sorted({m for row in rows_by_line.values() for m in row.get("moves") or []})
        moves = {m["id"]: m for m in self.client.read("stock.move", move_ids,
                                                        ["state", "quantity", "planned_date", "effective_date"])} \
            if move_ids else {}
        for payloads in lines.values():
            for payload in payloads:
                row = rows_by_line.get(payload["id"]) or {}
                live = [moves[m] for m in row.get("moves") or [] if m in moves and moves[m]["state"] != "cancelled"]
                dates = [d for d in (m.get("effective_date") or m.get("planned_date") for m in live)
                         if isinstance(d, dt.date)]
                expected_date = max(dates) if dates else None
                base = payload.get("requested_date") or payload.get("delivery_date")
                payload["expected_quantity"] = sum(float(m.get("quantity") or 0.0) for m in live) \
                    if row.get("moves") else payload.get("quantity")
                payload["expected_date"] = expected_date
                payload["delay_days"] = (expected_date - base).days \
                    if isinstance(expected_date, dt.date) and isinstance(base, dt.date) else None

    REQUEST_FIELDS = ("product", "product.code", "product.name", "quantity", "unit", "unit.symbol", "party",
                      "party.name", "party.code", "supply_date", "origin", "state", "purchase_line",
                      "purchase", "warehouse")

    def requests(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # Requests that come from a sale carry the sale's reference: the customer order they serve.
        sale_ids = sorted({int(r["origin"].split(",")[1]) for r in rows
                           if isinstance(r.get("origin"), str) and r["origin"].startswith("sale.sale,")})
        sales = {s["id"]: s for s in self.client.read("sale.sale", sale_ids, ["number", "reference", "party",
                                                                            "sale_date", "shipping_date"])} \
            if sale_ids else {}
        # The shipping date of the sale line a request supplies follows its moves: a requested date moved on a
        # confirmed sale shows here (the request's own supply date is computed once by Tryton).
        line_dates = {line["purchase_request"]: line.get("shipping_date") for line in self.client.search_read(
            "sale.line", [["purchase_request", "in", [r["id"] for r in rows]]], ["purchase_request",
                                                                               "shipping_date"])}
        out = []
        for r in rows:
            origin = r.get("origin") if isinstance(r.get("origin"), str) else None
            model, _, ident = (origin or "").partition(",")
            sale = sales.get(int(ident)) if model == "sale.sale" and ident.lstrip("-").isdigit() else None
            out.append({
                "id": r["id"], "state": r.get("state"), "product": _ref(r, "product", "code", "name"),
                "quantity": r.get("quantity"), "unit": _ref(r, "unit", "symbol"),
                "party": _ref(r, "party", "name", "code"), "supply_date": r.get("supply_date"),
                "origin": origin, "origin_model": model or None,
                "sale": {"id": sale["id"], "number": sale.get("number"), "reference": sale.get("reference"),
                         "party": sale.get("party"), "sale_date": sale.get("sale_date"),
                         "shipping_date": sale.get("shipping_date")}
                if sale else None,
                "line_shipping_date": line_dates.get(r["id"]),
                "purchase_line": r.get("purchase_line"), "purchase": r.get("purchase"),
                "warehouse": r.get("warehouse"),
                "create_date": r.get("create_date"), "write_date": r.get("write_date"),
            })
        return out

    PARTY_FIELDS = ("code", "name", "active")

    def parties(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        ids = [r["id"] for r in rows]
        addresses: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
        for a in self.client.search_read("party.address", [["party", "in", ids]],
                                         ["party", "party_name", "street", "postal_code", "city", "country",
                                          "country.code"], order=[("sequence", "ASC"), ("id", "ASC")]):
            addresses[a["party"]].append({"id": a["id"], "name": a.get("party_name"), "street": a.get("street"),
                                          "postal_code": a.get("postal_code"), "city": a.get("city"),
                                          "country": (a.get("country.") or {}).get("code")})
        return [{"id": r["id"], "code": r.get("code"), "name": r.get("name"), "active": _flag(r.get("active")),
                 "addresses": addresses[r["id"]], "create_date": r.get("create_date"),
                 "write_date": r.get("write_date")} for r in rows]

    PRODUCT_FIELDS = ("code", "name", "template", "template.list_price", "type", "list_price", "cost_price",
                      "default_uom", "default_uom.symbol", "active")

    def products(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        templates = sorted({r["template"] for r in rows})
        suppliers: dict[int, list[dict[str, Any]]] = {t: [] for t in templates}
        for s in self.client.search_read("purchase.product_supplier", [["template", "in", templates]],
                                         ["template", "party", "party.name", "party.code", "lead_time", "code"]):
            lead = s.get("lead_time")
            suppliers[s["template"]].append({"party": _ref(s, "party", "name", "code"), "code": s.get("code"),
                                             "lead_time_days": lead.days if isinstance(lead, dt.timedelta)
                                             else None})
        return [{"id": r["id"], "code": r.get("code"), "name": r.get("name"), "template": r.get("template"),
                 "type": r.get("type"), "cost_price": r.get("cost_price"),
                 # the variant's list price is computed in a context; the template holds the stored one
                 "list_price": r.get("list_price") if r.get("list_price") is not None
                 else (r.get("template.") or {}).get("list_price"),
                 "unit": _ref(r, "default_uom", "symbol"), "active": _flag(r.get("active")),
                 "suppliers": suppliers.get(r["template"], []), "create_date": r.get("create_date"),
                 "write_date": r.get("write_date")} for r in rows]
