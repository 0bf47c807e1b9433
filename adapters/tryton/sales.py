"""Sale operations: the CRM's orders and the SCM's demand, both kept as ``sale.sale`` keyed by ``reference``.

Tryton only lets a sale's lines change while it is a draft (a quotation is sent back to draft first). Once
confirmed, lines change through sale amendments: the SCM's demand for an order (``update_demand``) lives in
:mod:`adapters.tryton.demand`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import structlog

from adapters.base import Call, Outcome
from adapters.tryton import orders
from adapters.tryton.client import TrytonClient
from adapters.tryton.codec import plain
from adapters.tryton.payload import Payload
from bus.errors import PermanentError

__all__ = ["add_sale_note", "append_comment", "update_promised_date", "upsert_sale"]

log = structlog.get_logger(__name__)

_OPEN = ("draft", "quotation")
_LIVE_DOMAIN = ["state", "!=", "cancelled"]


def marker(call: Call) -> str:
    """The tag that makes a comment written for this call recognisable on a redelivery."""
    return f"[ironbus {call.idempotency_key}]"


def append_comment(client: TrytonClient, model: str, record: int, call: Call, text: str) -> bool:
    """Append ``text`` to a record's comment once per idempotency key; False when it was already there."""
    current = client.read(model, [record], ["comment"])[0].get("comment") or ""
    tag = marker(call)
    if tag in current:
        return False
    client.write(model, [record], {"comment": (current + "\n" if current else "") + f"{tag} {text}"})
    return True


def first_address(client: TrytonClient, party: int, op: str) -> int:
    ids = client.search("party.address", [["party", "=", party]], limit=1, order=[("sequence", "ASC")])
    if not ids:
        raise PermanentError(f"tryton.{op}: party {party} has no address (sales and purchases need one)")
    return ids[0]


def product_info(client: TrytonClient, products: list[int], op: str) -> dict[int, dict[str, Any]]:
    rows = client.read("product.product", sorted(set(products)),
                       ["template.sale_uom", "template.purchase_uom", "template.default_uom",
                        "template.list_price", "cost_price", "code"]) if products else []
    info = {r["id"]: {"sale_uom": r["template."]["sale_uom"] or r["template."]["default_uom"],
                      "purchase_uom": r["template."]["purchase_uom"] or r["template."]["default_uom"],
                      "list_price": r["template."]["list_price"], "cost_price": r.get("cost_price")}
            for r in rows}
    missing = set(products) - set(info)
    if missing:
        raise PermanentError(f"tryton.{op}: unknown product id(s) {sorted(missing)}")
    return info


def _wanted_lines(client: TrytonClient, p: Payload) -> list[dict[str, Any]]:
    lines = p.items("lines", required=True)
    info = product_info(client, [line.req_ref("product") for line in lines], p.op)
    out = []
    for line in lines:
        product = line.req_ref("product")
        price = line.decimal("unit_price")
        if price is None:
            price = info[product]["list_price"]
        if price is None:
            raise PermanentError(f"tryton.{p.op}: field {line.path}'unit_price' is required: product {product} "
                                 "has no list price")
        out.append({"type": "line", "product": product, "quantity": line.number("quantity", required=True),
                    "unit": line.ref("unit") or info[product]["sale_uom"], "unit_price": Decimal(price)})
    return out


def _totals(lines: Sequence[Mapping[str, Any]]) -> dict[int, float]:
    totals: dict[int, float] = {}
    for line in lines:
        totals[line["product"]] = totals.get(line["product"], 0.0) + float(line["quantity"] or 0.0)
    return totals


def _sale_lines(client: TrytonClient, sale_ids: list[int]) -> list[dict[str, Any]]:
    return client.search_read("sale.line", [["sale", "in", sale_ids], ["type", "=", "line"]],
                              ["product", "quantity"]) if sale_ids else []


def _header(client: TrytonClient, p: Payload) -> dict[str, Any]:
    party = p.req_ref("party")
    address = p.ref("address") or first_address(client, party, p.op)
    values: dict[str, Any] = {"party": party, "invoice_address": address, "shipment_address": address}
    for name in ("sale_date", "shipping_date"):
        if p.has(name):
            values[name] = p.date(name)
    for name in ("description", "comment"):
        if p.has(name):
            values[name] = p.text(name)
    return values


def _confirm(client: TrytonClient, sale: int, op: str) -> str:
    client.model("sale.sale", "quote", [sale])
    client.model("sale.sale", "confirm", [sale])
    state: str = client.read("sale.sale", [sale], ["state"])[0]["state"]
    # confirm() succeeds even when the queued processing fails (e.g. a product without accounts): the sale then
    # stays 'confirmed' and only an ir.error record tells why. Downstream (shipments, purchase requests) needs
    # 'processing'.
    if state != "processing":
        errors = client.search_read("ir.error", [], ["description", "message"], limit=1,
                                    order=[("id", "DESC")])
        why = f": {errors[0].get('message') or errors[0].get('description')}" if errors else ""
        raise PermanentError(f"tryton.{op}: sale {sale} is {state!r} after confirm, not 'processing'{why}")
    return state


def _result(client: TrytonClient, sale: int, **extra: Any) -> Outcome:
    row = client.read("sale.sale", [sale], ["number", "reference", "state", "party", "party.email",
                                            "party.lang", "total_amount", "currency.code"])[0]
    party = row.get("party.") or {}
    lang = party.get("lang")
    language = client.read("ir.lang", [lang], ["code"])[0]["code"] if lang else None
    # The order as the customer sees it now (name, quantity, unit per product; total), with the products added after
    # confirmation (its supplementary sales, adapters/tryton/orders.py): what a message to them says.
    members = orders.family(client, orders.root_of(client, sale))
    lines: list[dict[str, Any]] = []
    for r in client.search_read("sale.line", [["sale", "in", members], ["type", "=", "line"]],
                                ["product", "product.name", "quantity", "unit.symbol", "unit.name"],
                                order=[("sale", "ASC"), ("sequence", "ASC"), ("id", "ASC")]):
        unit = r.get("unit.") or {}
        same = next((x for x in lines if x["id"] == (r.get("product"), unit.get("symbol"))), None)
        if same is not None:
            same["quantity"] = float(same["quantity"] or 0) + float(r.get("quantity") or 0)
            continue
        lines.append({"id": (r.get("product"), unit.get("symbol")), "product": (r.get("product.") or {}).get("name"),
                      "quantity": r.get("quantity"), "unit": unit.get("symbol"), "unit_name": unit.get("name")})
    for line in lines:
        del line["id"]
    total = row.get("total_amount")
    if len(members) > 1:
        total = sum((Decimal(str(r.get("total_amount") or 0)) for r in client.read("sale.sale", members[1:],
                                                                                 ["total_amount"])),
                    Decimal(str(total or 0)))
    # party: the customer's id in this database, so an emit_map can resolve it (xref) for a notification; its
    # e-mail and language (the CRM knows how to reach the customer and in which words).
    result = {"id": sale, "number": row.get("number"), "reference": row.get("reference"), "state": row["state"],
              "party": row.get("party"), "party_email": party.get("email") or None,
              "party_language": language, "lines": [x for x in lines if x["quantity"]],
              "total_amount": total, "currency": (row.get("currency.") or {}).get("code"),
              **extra}
    return Outcome(result=plain(result), reference=row.get("number") or str(sale))


def _find(client: TrytonClient, reference: str) -> dict[str, Any] | None:
    rows = client.search_read("sale.sale", [["reference", "=", reference], _LIVE_DOMAIN], ["state"],
                              order=[("id", "ASC")], limit=1)
    return rows[0] if rows else None


def _rewrite_open(client: TrytonClient, sale: dict[str, Any], values: dict[str, Any],
                  lines: list[dict[str, Any]]) -> None:
    if sale["state"] == "quotation":
        client.model("sale.sale", "draft", [sale["id"]])
    old = [r["id"] for r in client.search_read("sale.line", [["sale", "=", sale["id"]]], ["id"])]
    commands: list[Any] = [["create", lines]]
    if old:
        commands.insert(0, ["delete", old])
    client.write("sale.sale", [sale["id"]], {**values, "lines": commands})


def upsert_sale(client: TrytonClient, call: Call) -> Outcome:
    """Create or update the sale whose ``reference`` is given; optionally quote and confirm it."""
    p = Payload("upsert_sale", call.payload)
    reference = p.req_text("reference")
    values = {**_header(client, p), "reference": reference}
    lines = _wanted_lines(client, p)
    confirm = p.flag("confirm", False)
    sale = _find(client, reference)
    if sale is None:
        sale_id = client.create("sale.sale", [{**values, "lines": [["create", lines]]}])[0]
        if confirm:
            _confirm(client, sale_id, p.op)
        return _result(client, sale_id, created=True)
    if sale["state"] in _OPEN:
        _rewrite_open(client, sale, values, lines)
        if confirm:
            _confirm(client, sale["id"], p.op)
        return _result(client, sale["id"], created=False)
    if _totals(_sale_lines(client, [sale["id"]])) != _totals(lines):
        raise PermanentError(f"tryton.upsert_sale: sale {reference!r} is {sale['state']!r}; Tryton does not allow "
                             "changing the lines of a confirmed sale")
    if p.has("comment"):
        client.write("sale.sale", [sale["id"]], {"comment": p.text("comment")})
    return _result(client, sale["id"], created=False)


def _locate(client: TrytonClient, p: Payload) -> int:
    sale_id = p.ref("sale")
    if sale_id is not None:
        return sale_id
    reference = p.text("reference")
    number = p.text("number")
    if reference is None and number is None:
        raise PermanentError(f"tryton.{p.op}: give 'sale' (id), 'reference' or 'number' to find the sale")
    domain = [["reference", "=", reference]] if reference is not None else [["number", "=", number]]
    ids = client.search("sale.sale", domain, limit=1, order=[("id", "ASC")])
    if not ids:
        raise PermanentError(f"tryton.{p.op}: no sale with {domain[0][0]} {domain[0][2]!r}")
    return ids[0]


def add_sale_note(client: TrytonClient, call: Call) -> Outcome:
    """Append a note to a sale's comment (once per idempotency key)."""
    p = Payload("add_sale_note", call.payload)
    sale = _locate(client, p)
    written = append_comment(client, "sale.sale", sale, call, p.req_text("note"))
    return _result(client, sale, note_written=written)


def update_promised_date(client: TrytonClient, call: Call) -> Outcome:
    """Record a new promised date on a sale: the shipping date while it is open, and always a comment."""
    p = Payload("update_promised_date", call.payload)
    sale = _locate(client, p)
    promised = p.date("promised_date", required=True)
    assert promised is not None
    state = client.read("sale.sale", [sale], ["state"])[0]["state"]
    date_written = False
    if state in _OPEN:
        # shipping_date is read-only once the sale is confirmed (Tryton then plans from the moves).
        if state == "quotation":
            client.model("sale.sale", "draft", [sale])
        client.write("sale.sale", [sale], {"shipping_date": promised})
        if state == "quotation":
            client.model("sale.sale", "quote", [sale])
        date_written = True
    reason = p.text("reason")
    append_comment(client, "sale.sale", sale, call,
                   f"promised date {promised.isoformat()}" + (f": {reason}" if reason else ""))
    return _result(client, sale, promised_date=promised.isoformat(), shipping_date_written=date_written)
