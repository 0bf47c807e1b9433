"""Orders and master data in ERPNext, with Frappe's document lifecycle.

A transaction document is a draft (``docstatus`` 0, freely editable), submitted (1, frozen) or cancelled (2).
A submitted order is changed in one of two ways (setting ``order_change``):

* ``update_items`` (default): ERPNext's "Update Items" —
  ``erpnext.controllers.accounts_controller.update_child_qty_rate`` — changes quantities, rates and dates of
  the submitted order in place and adds or removes rows (ERPNext refuses to go below what was delivered);
* ``amend``: cancel the order and insert its amendment (``amended_from``), ERPNext names it ``<name>-1``,
  then submit that.

Orders are found again by the bus's reference (``po_no`` on a Sales Order, the field ``reference_fields``
names for other doctypes), so a retried or replayed delivery changes the order it made the first time.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from adapters.base import Call, Outcome
from adapters.erpnext.client import FrappeClient
from bus.errors import PermanentError

__all__ = ["ORDERS", "OrderKind", "change_state", "reschedule_order", "upsert_master", "upsert_order"]

UPDATE_ITEMS = "erpnext.controllers.accounts_controller.update_child_qty_rate"


@dataclass(frozen=True)
class OrderKind:
    doctype: str
    party_field: str
    date_field: str  # header date the payload's 'date' sets (and each row's default)
    reference_field: str | None


ORDERS = {
    "Sales Order": OrderKind("Sales Order", "customer", "delivery_date", "po_no"),
    "Purchase Order": OrderKind("Purchase Order", "supplier", "schedule_date", None),
    "Material Request": OrderKind("Material Request", "", "schedule_date", None),
}


def _payload(op: str, call: Call) -> Mapping[str, Any]:
    if not isinstance(call.payload, Mapping):
        raise PermanentError(f"{op}: payload must be an object, got {type(call.payload).__name__}")
    return call.payload


def headers_for(call: Call) -> dict[str, str]:
    # Frappe ignores them; they tie a request in the site's access log to one delivery.
    return {"Idempotency-Key": call.idempotency_key, "X-Correlation-Id": call.event.correlationid}


def _items(op: str, kind: OrderKind, p: Mapping[str, Any]) -> list[dict[str, Any]]:
    raw = p.get("items")
    if not isinstance(raw, list) or not raw:
        raise PermanentError(f"{op}: field 'items' must be a non-empty list of {{item_code, qty}}")
    rows = []
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping) or not item.get("item_code"):
            raise PermanentError(f"{op}: items[{i}] needs 'item_code'")
        try:
            qty = float(item.get("qty"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise PermanentError(f"{op}: items[{i}].qty must be a number, got {item.get('qty')!r}") from None
        if qty <= 0:
            raise PermanentError(f"{op}: items[{i}].qty must be positive, got {qty:g}")
        row: dict[str, Any] = {"item_code": str(item["item_code"]), "qty": qty}
        if item.get("rate") is not None:
            row["rate"] = float(item["rate"])
        date = item.get(kind.date_field) or item.get("date") or p.get("date")
        if date:
            row[kind.date_field] = str(date)
        if item.get("uom"):
            row["uom"] = str(item["uom"])
        rows.append(row)
    return rows


def find_order(client: FrappeClient, kind: OrderKind, reference_field: str | None, op: str,
               p: Mapping[str, Any]) -> dict[str, Any] | None:
    """The order named by ``name``, or the newest not cancelled one carrying the bus's ``reference``."""
    if p.get("name"):
        return client.get_doc(kind.doctype, str(p["name"]))
    reference = p.get("reference")
    if not reference_field or reference in (None, ""):
        return None
    rows = client.get_list(kind.doctype, fields=["name"], filters=[[reference_field, "=", str(reference)],
                                                                   ["docstatus", "!=", 2]],
                           order_by="creation desc", limit_page_length=1)
    return client.get_doc(kind.doctype, rows[0]["name"]) if rows else None


def upsert_order(client: FrappeClient, kind: OrderKind, op: str, call: Call, *, reference_field: str | None,
                 order_change: str, company: str | None) -> Outcome:
    """Create, change, submit or cancel an order so that it matches the payload."""
    p = _payload(op, call)
    headers = headers_for(call)
    order = find_order(client, kind, reference_field, op, p)
    cancel = p.get("status") == "cancelled"
    if cancel:
        if order is None:
            return Outcome(result=None, detail=f"no {kind.doctype} for reference {p.get('reference')!r}: nothing "
                                               "to cancel")
        return _result(kind, _cancel(client, kind, order, headers), created=False)
    items = _items(op, kind, p)
    values: dict[str, Any] = {"items": items}
    if kind.party_field:
        party = p.get(kind.party_field)
        if party:
            values[kind.party_field] = str(party)
    if p.get("date"):
        values[kind.date_field] = str(p["date"])
    if reference_field and p.get("reference"):
        values[reference_field] = str(p["reference"])
    for name in ("transaction_date", "material_request_type", "set_warehouse", "currency"):
        if p.get(name):
            values[name] = p[name]
    if company:
        values.setdefault("company", company)
    submit = bool(p.get("submit"))
    if order is None:
        if kind.party_field and kind.party_field not in values:
            raise PermanentError(f"{op}: a new {kind.doctype} needs {kind.party_field!r}")
        doc = client.insert(kind.doctype, values, headers)
        if submit:
            doc = _submit(client, kind, doc, headers)
        return _result(kind, doc, created=True)
    if order.get("docstatus") == 0:
        doc = client.update(kind.doctype, order["name"], {**values, "modified": order.get("modified")}, headers)
        if submit:
            doc = _submit(client, kind, doc, headers)
        return _result(kind, doc, created=False)
    if _matches(kind, order, items):
        # A retry after a lost answer, or a change that changes nothing: do not amend or update again.
        return _result(kind, order, created=False)
    # Submitted: Update Items in place, or cancel and amend.
    if order_change == "amend":
        cancelled = _cancel(client, kind, order, headers)
        amended = {k: v for k, v in order.items() if k not in _NOT_COPIED and not isinstance(v, list)}
        amended.update(values, amended_from=cancelled["name"])
        doc = _submit(client, kind, client.insert(kind.doctype, amended, headers), headers)
        return _result(kind, doc, created=False, amended_from=cancelled["name"])
    by_code: dict[Any, dict[str, Any]] = {}
    for row in order.get("items") or []:
        by_code.setdefault(row.get("item_code"), row)
    trans_items = []
    for row in items:
        existing = by_code.get(row["item_code"])
        entry: dict[str, Any] = {"item_code": row["item_code"], "qty": row["qty"],
                                 "rate": row.get("rate", existing.get("rate") if existing else 0),
                                 "uom": row.get("uom") or (existing or {}).get("uom")}
        if existing:
            entry["docname"] = existing["name"]
            entry["conversion_factor"] = existing.get("conversion_factor") or 1
        date = row.get(kind.date_field) or (existing or {}).get(kind.date_field)
        if date:
            entry[kind.date_field] = date
        trans_items.append({k: v for k, v in entry.items() if v is not None})
    client.method(UPDATE_ITEMS, {"parent_doctype": kind.doctype, "trans_items": json.dumps(trans_items),
                                 "parent_doctype_name": order["name"], "child_docname": "items"}, headers)
    return _result(kind, client.get_doc(kind.doctype, order["name"]), created=False)


def _matches(kind: OrderKind, order: Mapping[str, Any], items: list[dict[str, Any]]) -> bool:
    """Does the submitted order hold exactly these rows (item, quantity, and rate and date where given)?"""
    rows = [r for r in order.get("items") or [] if isinstance(r, Mapping)]
    if len(rows) != len(items):
        return False
    for row, want in zip(rows, items, strict=True):
        if row.get("item_code") != want["item_code"] or float(row.get("qty") or 0) != want["qty"]:
            return False
        for name in ("rate", kind.date_field):
            if name in want and str(row.get(name)) != str(want[name]) and \
                    not (name == "rate" and float(row.get(name) or 0) == want[name]):
                return False
    return True


def reschedule_order(client: FrappeClient, kind: OrderKind, op: str, call: Call, *,
                     reference_field: str | None) -> Outcome:
    """Move every row of an order to a new date (``date``), noting ``reason`` as a comment on the order.

    A submitted order's dates change through Update Items, which keeps quantities and rates as they are.
    """
    p = _payload(op, call)
    date = p.get("date")
    if not date:
        raise PermanentError(f"{op}: payload needs 'date' (YYYY-MM-DD)")
    order = find_order(client, kind, reference_field, op, p)
    if order is None:
        raise PermanentError(f"{op}: no {kind.doctype} with reference {p.get('reference')!r} (give 'name' or "
                             "'reference')")
    headers = headers_for(call)
    rows = [r for r in order.get("items") or [] if isinstance(r, dict)]
    if order.get("docstatus") == 0:
        client.update(kind.doctype, order["name"], {kind.date_field: str(date), "modified": order.get("modified"),
                                                    "items": [{**r, kind.date_field: str(date)} for r in rows]},
                      headers)
    elif order.get("docstatus") == 1:
        trans_items = [{"docname": r["name"], "item_code": r.get("item_code"), "qty": r.get("qty"),
                        "rate": r.get("rate") or 0, "uom": r.get("uom"),
                        "conversion_factor": r.get("conversion_factor") or 1, kind.date_field: str(date)}
                       for r in rows]
        client.method(UPDATE_ITEMS, {"parent_doctype": kind.doctype, "trans_items": json.dumps(trans_items),
                                     "parent_doctype_name": order["name"], "child_docname": "items"}, headers)
    else:
        raise PermanentError(f"{op}: {kind.doctype} {order['name']} is cancelled; it has no dates to move")
    if p.get("reason"):
        # Tagged with the delivery's key: a retry finds its comment instead of writing it twice.
        tag = f"[ironbus {call.idempotency_key}]"
        written = client.get_list("Comment", fields=["name"], filters=[
            ["reference_doctype", "=", kind.doctype], ["reference_name", "=", order["name"]],
            ["content", "like", f"%{tag}%"]], limit_page_length=1)
        if not written:
            client.insert("Comment", {"comment_type": "Comment", "reference_doctype": kind.doctype,
                                      "reference_name": order["name"], "content": f"{tag} {p['reason']}"}, headers)
    return Outcome(result={"name": order["name"], "reference": order.get(reference_field) if reference_field
                           else None, kind.date_field: str(date), "reason": p.get("reason")},
                   reference=str(order["name"]))


_NOT_COPIED = frozenset({"name", "docstatus", "modified", "creation", "owner", "modified_by", "amended_from",
                         "status", "idx"})


def _submit(client: FrappeClient, kind: OrderKind, doc: Mapping[str, Any], headers: Mapping[str, str]) -> Any:
    if doc.get("docstatus") == 1:
        return doc
    submitted = client.method("frappe.client.submit", {"doc": json.dumps({**doc, "doctype": kind.doctype})},
                              headers)
    return submitted if isinstance(submitted, dict) else client.get_doc(kind.doctype, str(doc["name"]))


def _cancel(client: FrappeClient, kind: OrderKind, doc: Mapping[str, Any], headers: Mapping[str, str]) -> Any:
    status = doc.get("docstatus")
    if status == 2:
        return doc
    if status == 0:  # a draft was never binding: cancelling it is not possible in Frappe, deleting is not ours
        raise PermanentError(f"{kind.doctype} {doc.get('name')} is a draft; Frappe cancels only submitted "
                             "documents (delete the draft in ERPNext, or submit it first)")
    client.method("frappe.client.cancel", {"doctype": kind.doctype, "name": doc["name"]}, headers)
    return client.get_doc(kind.doctype, str(doc["name"]))


def _result(kind: OrderKind, doc: Mapping[str, Any], *, created: bool, amended_from: str | None = None) -> Outcome:
    result = {"name": doc.get("name"), "doctype": kind.doctype, "docstatus": doc.get("docstatus"),
              "status": doc.get("status"), "created": created,
              "amended_from": amended_from or doc.get("amended_from"),
              "items": [{"item_code": r.get("item_code"), "qty": r.get("qty"), kind.date_field: r.get(kind.date_field)}
                        for r in doc.get("items") or []]}
    if kind.party_field:
        result[kind.party_field] = doc.get(kind.party_field)
    return Outcome(result=result, reference=str(doc.get("name")) if doc.get("name") else None)


def change_state(client: FrappeClient, op: str, call: Call, target: str) -> Outcome:
    """Submit or cancel any submittable document: payload {doctype, name}."""
    p = _payload(op, call)
    doctype, name = p.get("doctype"), p.get("name")
    if not doctype or not name:
        raise PermanentError(f"{op}: payload needs 'doctype' and 'name'")
    kind = ORDERS.get(str(doctype)) or OrderKind(str(doctype), "", "", None)
    doc = client.get_doc(kind.doctype, str(name))
    headers = headers_for(call)
    done = _submit(client, kind, doc, headers) if target == "submitted" else _cancel(client, kind, doc, headers)
    return Outcome(result={"doctype": kind.doctype, "name": name, "docstatus": done.get("docstatus")},
                   reference=str(name))


MASTERS = {"Customer": ("name", "customer_name"), "Supplier": ("name", "supplier_name"),
           "Item": ("item_code", "item_name")}


def upsert_master(client: FrappeClient, doctype: str, op: str, call: Call, defaults: Mapping[str, Any]) -> Outcome:
    """Create or update a Customer, Supplier or Item by its code (the document name / item_code)."""
    p = _payload(op, call)
    code_field, name_field = MASTERS[doctype]
    code = p.get("code")
    if not code:
        raise PermanentError(f"{op}: payload needs 'code' (the {doctype}'s {code_field})")
    values: dict[str, Any] = {k: v for k, v in p.items() if k not in ("code", "name") and v is not None}
    if p.get("name") is not None:
        values[name_field] = str(p["name"])
    existing = client.get_list(doctype, fields=["name"], filters=[[code_field, "=", str(code)]],
                               limit_page_length=1)
    if not existing and doctype != "Item" and p.get("name"):
        # A site that names Customers/Suppliers by their name (ERPNext's default) gave the first upsert a name
        # other than the code: find that document again by its name field.
        existing = client.get_list(doctype, fields=["name"], filters=[[name_field, "=", str(p["name"])]],
                                   limit_page_length=1)
    if existing:
        doc = client.update(doctype, existing[0]["name"], values, headers_for(call)) if values else \
            client.get_doc(doctype, existing[0]["name"])
        created = False
    else:
        if name_field not in values:
            raise PermanentError(f"{op}: a new {doctype} needs 'name'")
        new = {**defaults, **values, code_field: str(code)}
        if doctype != "Item":
            new["__newname"] = str(code)  # the name asked for; the site's naming rule may give another
        doc = client.insert(doctype, new, headers_for(call))
        created = True
    detail = "" if doc.get(code_field) == str(code) else (
        f"{doctype} is named {doc.get(code_field)!r} by the site's naming rule, not {str(code)!r}: link that name "
        "in the xref")
    return Outcome(result={"code": doc.get(code_field), "name": doc.get(name_field), "created": created},
                   reference=str(doc.get("name")), detail=detail)
