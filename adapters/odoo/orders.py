"""Sale and purchase orders, partners and products in Odoo: the operations' payloads turned into ORM calls.

Orders are found again by the reference the bus gave them (``client_order_ref`` on a sale, ``origin`` on a
purchase), so a retried or replayed create updates the order it made the first time instead of making a
second one. Lines are matched by product: a confirmed order's line is never deleted (Odoo refuses), its
quantity goes to 0 instead. State changes go through Odoo's own button methods (``action_confirm``,
``action_cancel``, ``button_confirm``, ``button_cancel``), so Odoo's workflow rules apply.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from adapters.base import AdapterStore, Call, Outcome
from adapters.odoo.client import OdooClient
from bus.errors import PermanentError

__all__ = ["PURCHASE", "SALE", "OrderKind", "requested_key", "set_state", "upsert_order", "upsert_partner",
           "upsert_product"]


@dataclass(frozen=True)
class OrderKind:
    model: str
    line_model: str
    reference_field: str  # where the bus's reference lives
    qty_field: str
    date_field: str  # header date the payload's 'date' sets
    line_date_field: str | None
    confirm: str
    cancel: str
    draft_states: tuple[str, ...]
    closed_states: tuple[str, ...]


SALE = OrderKind("sale.order", "sale.order.line", "client_order_ref", "product_uom_qty", "commitment_date", None,
                 "action_confirm", "action_cancel", ("draft", "sent"), ("cancel",))
PURCHASE = OrderKind("purchase.order", "purchase.order.line", "origin", "product_qty", "date_planned",
                     "date_planned", "button_confirm", "button_cancel", ("draft", "sent", "to approve"),
                     ("cancel",))


def _payload(op: str, call: Call) -> Mapping[str, Any]:
    if not isinstance(call.payload, Mapping):
        raise PermanentError(f"{op}: payload must be an object, got {type(call.payload).__name__}")
    return call.payload


def _int(op: str, field: str, value: Any) -> int:
    if isinstance(value, list) and value:  # a many2one as Odoo reads it: [id, "name"]
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise PermanentError(f"{op}: field {field!r} must be an Odoo record id, got {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise PermanentError(f"{op}: field {field!r} must be an Odoo record id, got {value!r}") from None
    if number <= 0:
        raise PermanentError(f"{op}: field {field!r} must be a positive record id, got {value!r}")
    return number


def _qty(op: str, field: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise PermanentError(f"{op}: field {field!r} must be a number, got {value!r}") from None
    if number < 0:
        raise PermanentError(f"{op}: field {field!r} must not be negative, got {value!r}")
    return number


def _headers(call: Call) -> dict[str, str]:
    # Odoo ignores these; a reverse proxy's access log and our traces can find one delivery by them.
    return {"Idempotency-Key": call.idempotency_key, "X-Correlation-Id": call.event.correlationid}


def find_order(client: OdooClient, kind: OrderKind, op: str, p: Mapping[str, Any]) -> dict[str, Any] | None:
    """The order named by ``id`` or by the bus's ``reference`` (the newest not cancelled one), or None."""
    fields = ["name", "state", kind.reference_field, "order_line"]
    if p.get("id") not in (None, ""):
        found = client.call(kind.model, "read", ids=[_int(op, "id", p["id"])], fields=fields)
        if not found:
            raise PermanentError(f"{op}: {kind.model} {p['id']} does not exist")
        return dict(found[0])
    reference = p.get("reference")
    if reference in (None, ""):
        return None
    rows = client.call(kind.model, "search_read", domain=[[kind.reference_field, "=", str(reference)]],
                       fields=fields, order="id desc", limit=5)
    live = [r for r in rows if r.get("state") not in kind.closed_states]
    return dict(live[0]) if live else (dict(rows[0]) if rows else None)


def _line_values(kind: OrderKind, op: str, line: Mapping[str, Any], index: int) -> dict[str, Any]:
    where = f"lines[{index}]"
    if not isinstance(line, Mapping):
        raise PermanentError(f"{op}: {where} must be an object")
    values: dict[str, Any] = {"product_id": _int(op, f"{where}.product_id", line.get("product_id")),
                              kind.qty_field: _qty(op, f"{where}.quantity", line.get("quantity"))}
    if line.get("price_unit") is not None:
        values["price_unit"] = _qty(op, f"{where}.price_unit", line["price_unit"])
    if line.get("name"):
        values["name"] = str(line["name"])
    if kind.line_date_field and line.get("date"):
        values[kind.line_date_field] = str(line["date"])
    return values


def _line_commands(client: OdooClient, kind: OrderKind, op: str, order: Mapping[str, Any] | None,
                   lines: list[Any], confirmed: bool) -> list[Any]:
    """x2many commands making the order's lines match ``lines`` (by product)."""
    wanted = [_line_values(kind, op, line, i) for i, line in enumerate(lines)]
    if order is None:
        return [[0, 0, v] for v in wanted]
    existing = client.call(kind.line_model, "read", ids=list(order.get("order_line") or []),
                           fields=["product_id", kind.qty_field]) if order.get("order_line") else []
    by_product: dict[int, dict[str, Any]] = {}
    for row in existing:
        product = row.get("product_id")
        pid = product[0] if isinstance(product, list) and product else product
        if isinstance(pid, int) and pid not in by_product:
            by_product[pid] = row
    commands: list[Any] = []
    seen: set[int] = set()
    for values in wanted:
        row = by_product.get(values["product_id"])
        if row is None:
            commands.append([0, 0, values])
        else:
            seen.add(values["product_id"])
            update = {k: v for k, v in values.items() if k != "product_id"}
            commands.append([1, row["id"], update])
    for pid, row in by_product.items():
        if pid not in seen:
            # Odoo refuses to delete a confirmed order's line; a zero quantity is how its UI removes one.
            commands.append([1, row["id"], {kind.qty_field: 0}] if confirmed else [2, row["id"], 0])
    return commands


def requested_key(model: str, order_id: int) -> str:
    """The adapter-store name of what the bus last asked of an order's lines (see :func:`upsert_order`)."""
    return f"requested:{model}:{order_id}"


def _remember(store: AdapterStore | None, kind: OrderKind, order_id: int, p: Mapping[str, Any]) -> None:
    """Keep what the bus asked per product (quantity, date): the poll hands it back next to what the order
    says now, so a mapping can tell that a supplier moved a date or cut a quantity."""
    lines = p.get("lines")
    if store is None or not isinstance(lines, list):
        return
    asked = {str(_int("remember", "product_id", line.get("product_id"))): {
        "quantity": float(line["quantity"]), "date": line.get("date") or p.get("date") or None}
        for line in lines if isinstance(line, Mapping)}
    store.put(requested_key(kind.model, order_id), json.dumps(asked, sort_keys=True))


def upsert_order(client: OdooClient, kind: OrderKind, op: str, call: Call,
                 store: AdapterStore | None = None) -> Outcome:
    """Create the order or bring it in line with the payload; confirm or cancel it when asked."""
    p = _payload(op, call)
    headers = _headers(call)
    order = find_order(client, kind, op, p)
    if order is not None and order.get("state") in kind.closed_states and p.get("status") != "cancelled":
        raise PermanentError(f"{op}: {kind.model} {order.get('name')} is cancelled; a cancelled order is not "
                             "changed (create a new one with a new reference)")
    values: dict[str, Any] = {}
    if p.get("partner_id") is not None:
        values["partner_id"] = _int(op, "partner_id", p["partner_id"])
    if p.get("reference") not in (None, ""):
        values[kind.reference_field] = str(p["reference"])
    if p.get("date"):
        values[kind.date_field] = str(p["date"])
    if p.get("note") is not None:
        values["note" if kind is SALE else "notes"] = str(p["note"])
    lines = p.get("lines")
    if lines is not None and not isinstance(lines, list):
        raise PermanentError(f"{op}: field 'lines' must be a list")
    confirmed = order is not None and order.get("state") not in kind.draft_states
    if lines is not None and p.get("status") != "cancelled":
        values["order_line"] = _line_commands(client, kind, op, order, lines, confirmed)
    created = order is None
    if order is None:
        if "partner_id" not in values:
            raise PermanentError(f"{op}: a new {kind.model} needs 'partner_id'")
        new_id = client.call(kind.model, "create", vals_list=[values], headers=headers)
        order_id = _int(op, "created id", new_id[0] if isinstance(new_id, list) else new_id)
    else:
        order_id = int(order["id"])
        if values and order.get("state") not in kind.closed_states:
            client.call(kind.model, "write", ids=[order_id], vals=values, headers=headers)
    if "order_line" in values:
        _remember(store, kind, order_id, p)
    return _finish(client, kind, op, order_id, p.get("status"), bool(p.get("confirm")), created, headers)


def set_state(client: OdooClient, kind: OrderKind, op: str, call: Call, target: str) -> Outcome:
    """Confirm (``target`` 'confirmed') or cancel an order found by id or reference."""
    p = _payload(op, call)
    order = find_order(client, kind, op, p)
    if order is None:
        raise PermanentError(f"{op}: no {kind.model} with reference {p.get('reference')!r} (give 'id' or "
                             "'reference')")
    return _finish(client, kind, op, int(order["id"]), "cancelled" if target == "cancelled" else None,
                   target == "confirmed", False, _headers(call))


def _finish(client: OdooClient, kind: OrderKind, op: str, order_id: int, status: Any, confirm: bool,
            created: bool, headers: Mapping[str, str]) -> Outcome:
    state = _read(client, kind, order_id)["state"]
    if status == "cancelled" and state not in kind.closed_states:
        client.call(kind.model, kind.cancel, ids=[order_id], headers=headers)
    elif confirm and state in kind.draft_states:
        client.call(kind.model, kind.confirm, ids=[order_id], headers=headers)
    row = _read(client, kind, order_id)
    result = {"id": order_id, "name": row.get("name"), "state": row.get("state"),
              "reference": row.get(kind.reference_field) or None, "partner_id": row.get("partner_id"),
              "date": row.get(kind.date_field) or None, "created": created}
    return Outcome(result=result, reference=str(row.get("name") or order_id))


def _read(client: OdooClient, kind: OrderKind, order_id: int) -> dict[str, Any]:
    rows = client.call(kind.model, "read", ids=[order_id],
                       fields=["name", "state", kind.reference_field, "partner_id", kind.date_field])
    if not rows:
        raise PermanentError(f"{kind.model} {order_id} vanished while the bus was updating it")
    return dict(rows[0])


def _upsert_by_code(client: OdooClient, model: str, code_field: str, op: str, call: Call,
                    values: dict[str, Any]) -> Outcome:
    p = _payload(op, call)
    code = p.get("code")
    record_id = _int(op, "id", p["id"]) if p.get("id") not in (None, "") else None
    if record_id is None and code in (None, ""):
        raise PermanentError(f"{op}: give 'id' or 'code'")
    if record_id is None:
        found = client.call(model, "search", domain=[[code_field, "=", str(code)]], limit=1)
        record_id = found[0] if found else None
    if code not in (None, ""):
        values[code_field] = str(code)
    if record_id is None:
        if "name" not in values:
            raise PermanentError(f"{op}: a new {model} needs 'name'")
        made = client.call(model, "create", vals_list=[values], headers=_headers(call))
        record_id = made[0] if isinstance(made, list) else made
        created = True
    else:
        if values:
            client.call(model, "write", ids=[record_id], vals=values, headers=_headers(call))
        created = False
    row = client.call(model, "read", ids=[record_id], fields=[code_field, "name"])[0]
    return Outcome(result={"id": record_id, "code": row.get(code_field) or None, "name": row.get("name"),
                           "created": created}, reference=str(record_id))


def upsert_partner(client: OdooClient, call: Call) -> Outcome:
    """A contact by ``id`` or ``code`` (Odoo's ``ref``); ``customer``/``supplier`` set the ranks Odoo uses."""
    op = "upsert_partner"
    p = _payload(op, call)
    values: dict[str, Any] = {k: p[k] for k in ("name", "email", "phone", "vat", "street", "zip", "city")
                              if p.get(k) is not None}
    if p.get("is_company") is not None:
        values["is_company"] = bool(p["is_company"])
    if p.get("customer"):
        values["customer_rank"] = 1
    if p.get("supplier"):
        values["supplier_rank"] = 1
    return _upsert_by_code(client, "res.partner", "ref", op, call, values)


def upsert_product(client: OdooClient, call: Call) -> Outcome:
    """A product variant by ``id`` or ``code`` (Odoo's ``default_code``)."""
    op = "upsert_product"
    p = _payload(op, call)
    values: dict[str, Any] = {}
    if p.get("name") is not None:
        values["name"] = str(p["name"])
    for name in ("list_price", "standard_price"):
        if p.get(name) is not None:
            values[name] = _qty(op, name, p[name])
    if p.get("type") is not None:
        values["type"] = str(p["type"])
    return _upsert_by_code(client, "product.product", "default_code", op, call, values)
