"""Purchase operations: supply planning on the SCM side, purchase orders on the SRM side.

A confirmed Tryton purchase is frozen (lines, quantities and dates refuse writes); what still moves is its
incoming stock moves. So a supplier's delay or quantity change on a confirmed purchase is written on its
draft moves (``planned_date``, ``quantity``) and a cancellation cancels them — which is what Tryton's own
users do — while an open purchase (draft/quotation) is edited directly.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from adapters.base import Call, Outcome
from adapters.tryton.client import TrytonClient, TrytonWarning
from adapters.tryton.codec import plain
from adapters.tryton.payload import Payload
from adapters.tryton.sales import append_comment, first_address, product_info
from bus.errors import PermanentError

__all__ = ["create_purchase", "run_supply_planning", "update_purchase"]

_OPEN = ("draft", "quotation")


def run_supply_planning(client: TrytonClient, call: Call) -> Outcome:
    """Run the ``stock.supply`` wizard; returns the draft purchase requests that exist afterwards."""
    try:
        client.wizard("stock.supply", ["create_"])
    except TrytonWarning as warning:
        # "There are late supplier/customer moves": planning should still run; confirm once, like the GUI.
        client.accept_warning(warning)
        client.wizard("stock.supply", ["create_"])
    requests = client.search("purchase.request", [["state", "=", "draft"]], order=[("id", "ASC")])
    return Outcome(result={"purchase_requests": requests}, detail=f"{len(requests)} draft purchase request(s)")


def _supplier_price(client: TrytonClient, product: int, party: int) -> Decimal | None:
    template = client.read("product.product", [product], ["template"])[0]["template"]
    rows = client.search_read("purchase.product_supplier.price",
                              [["product_supplier.party", "=", party], ["product_supplier.template", "=", template],
                               ["OR", ["product_supplier.product", "=", None],
                                ["product_supplier.product", "=", product]]],
                              ["unit_price"], limit=1, order=[("quantity", "ASC")])
    price = rows[0]["unit_price"] if rows else None
    return Decimal(price) if price is not None else None


def _lines(client: TrytonClient, p: Payload, party: int) -> list[dict[str, Any]]:
    lines = p.items("lines", required=True)
    info = product_info(client, [line.req_ref("product") for line in lines], p.op)
    out = []
    for line in lines:
        product = line.req_ref("product")
        price = line.decimal("unit_price")
        if price is None:
            price = _supplier_price(client, product, party) or info[product]["cost_price"]
        if price is None:
            raise PermanentError(f"tryton.{p.op}: field {line.path}'unit_price' is required: no supplier price "
                                 f"or cost price for product {product}")
        values = {"type": "line", "product": product, "quantity": line.number("quantity", required=True),
                  "unit": line.ref("unit") or info[product]["purchase_uom"], "unit_price": Decimal(price)}
        if line.has("delivery_date"):
            values.update(delivery_date_edit=True, delivery_date_store=line.date("delivery_date"))
        out.append(values)
    return out


def _result(client: TrytonClient, purchase: int, **extra: Any) -> Outcome:
    row = client.read("purchase.purchase", [purchase], ["number", "reference", "state", "delivery_date"])[0]
    result = {"id": purchase, "number": row.get("number"), "reference": row.get("reference"),
              "state": row["state"], **extra}
    return Outcome(result=plain(result), reference=row.get("number") or str(purchase))


def create_purchase(client: TrytonClient, call: Call) -> Outcome:
    """Create a purchase order for a supplier (once per ``reference``), then quote and confirm it."""
    p = Payload("create_purchase", call.payload)
    reference = p.req_text("reference")
    existing = client.search("purchase.purchase", [["reference", "=", reference], ["state", "!=", "cancelled"]],
                             limit=1)
    if existing:
        return _result(client, existing[0], created=False)
    party = p.req_ref("party")
    values: dict[str, Any] = {"party": party, "invoice_address": p.ref("address") or first_address(client, party,
                                                                                                  p.op),
                              "reference": reference, "lines": [["create", _lines(client, p, party)]]}
    for name in ("purchase_date", "delivery_date"):
        if p.has(name):
            values[name] = p.date(name)
    if p.has("comment"):
        values["comment"] = p.text("comment")
    purchase = client.create("purchase.purchase", [values])[0]
    if p.flag("confirm", True):
        client.model("purchase.purchase", "quote", [purchase])
        client.model("purchase.purchase", "confirm", [purchase])
        state = client.read("purchase.purchase", [purchase], ["state"])[0]["state"]
        if state != "processing":
            raise PermanentError(f"tryton.create_purchase: purchase {purchase} is {state!r} after confirm, not "
                                 "'processing' (check the product's account category)")
    return _result(client, purchase, created=True)


def _locate(client: TrytonClient, p: Payload) -> dict[str, Any]:
    purchase = p.ref("purchase")
    domain: list[Any]
    if purchase is not None:
        domain = [["id", "=", purchase]]
    elif p.has("reference"):
        domain = [["reference", "=", p.text("reference")], ["state", "!=", "cancelled"]]
    elif p.has("number"):
        domain = [["number", "=", p.text("number")]]
    else:
        raise PermanentError(f"tryton.{p.op}: give 'purchase' (id), 'reference' or 'number'")
    rows = client.search_read("purchase.purchase", domain, ["state"], limit=1)
    if not rows:
        raise PermanentError(f"tryton.{p.op}: no purchase matches {domain}")
    return rows[0]


def _line_domain(change: Payload) -> list[Any]:
    """A change names one purchase line (``line``, a grouped purchase has one per order) or every line of a
    ``product``."""
    line = change.ref("line")
    return ["id", "=", line] if line is not None else ["product", "=", change.req_ref("product")]


def update_purchase(client: TrytonClient, call: Call) -> Outcome:
    """Move a purchase's delivery date, change line quantities, or cancel it."""
    p = Payload("update_purchase", call.payload)
    purchase = _locate(client, p)
    pid, state = purchase["id"], purchase["state"]
    if state in ("cancelled", "done"):
        raise PermanentError(f"tryton.update_purchase: purchase {pid} is {state!r} and cannot change")
    delivery = p.date("delivery_date")
    changes = p.items("lines")
    if p.flag("cancel", False):
        if state in _OPEN:
            client.model("purchase.purchase", "cancel", [pid])
        else:
            moves = client.search("stock.move", [["purchase", "=", pid], ["state", "=", "draft"]])
            if moves:
                client.model("stock.move", "cancel", moves)
            append_comment(client, "purchase.purchase", pid, call, "cancelled by the bus: incoming moves cancelled")
        return _result(client, pid, cancelled=True)
    if state in _OPEN:
        if state == "quotation":
            client.model("purchase.purchase", "draft", [pid])
        if delivery is not None:
            client.write("purchase.purchase", [pid], {"delivery_date": delivery})
        for change in changes:
            lines = client.search("purchase.line", [["purchase", "=", pid], _line_domain(change)])
            values: dict[str, Any] = {}
            if change.has("quantity"):
                values["quantity"] = change.number("quantity")
            if change.has("delivery_date"):
                values.update(delivery_date_edit=True, delivery_date_store=change.date("delivery_date"))
            if lines and values:
                client.write("purchase.line", lines, values)
        if state == "quotation":
            client.model("purchase.purchase", "quote", [pid])
        return _result(client, pid, moved_on="purchase")
    # Confirmed/processing: the purchase itself is frozen; its draft incoming moves carry date and quantity.
    if delivery is not None:
        moves = client.search("stock.move", [["purchase", "=", pid], ["state", "=", "draft"]])
        if moves:
            client.write("stock.move", moves, {"planned_date": delivery})
    for change in changes:
        line_id = change.ref("line")
        moves = client.search("stock.move", [["purchase", "=", pid], ["state", "=", "draft"],
                                             ["origin", "=", f"purchase.line,{line_id}"] if line_id
                                             else ["product", "=", change.req_ref("product")]])
        values = {}
        if change.has("quantity"):
            values["quantity"] = change.number("quantity")
        if change.has("delivery_date"):
            values["planned_date"] = change.date("delivery_date")
        if moves and values:
            client.write("stock.move", moves, values)
    note = []
    if delivery is not None:
        note.append(f"delivery date {delivery.isoformat()}")
    for c in changes:
        what = f"line {c.ref('line')}" if c.has("line") else f"product {c.req_ref('product')}"
        note.append(f"{what}: " + ", ".join(f"{k} {c.data[k]}" for k in ("quantity", "delivery_date") if c.has(k)))
    if note:
        append_comment(client, "purchase.purchase", pid, call, "supplier change: " + "; ".join(note))
    return _result(client, pid, moved_on="moves")
