"""A supplier's confirmation applied to the SRM purchase: confirmed quantities become the purchase's quantities.

A supplier that confirms less than was ordered (cXML ConfirmationRequest detail, X12 855 ``IQ``/``IB``/``IR``
lines, EDIFACT ORDRSP with a changed quantity) will deliver only that. So the purchase line is brought down to
the confirmed quantity — an open purchase (draft, quotation) is edited, a confirmed one is amended with
Tryton's ``purchase_amendment``, never below what was already received — and its incoming moves take the
supplier's dates.

What was ordered is kept in the line's note (``serves SO-1/PR-3 by 2026-12-21 (supplier confirmed 6 of 10)``),
so the SRM's purchase poll still reports the shortfall against the demand (:func:`ordered_quantity`: the line's
``quantity`` is what was ordered, its ``expected_quantity`` what the supplier confirmed) and the supplier-issue
flow re-plans the customer order in the SCM and tells the CRM and the customer.

Lines are addressed by ``line_no``: the purchase order's line number, i.e. the position of the line among the
purchase's product lines in their order (how the canonical purchase order numbers them).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from adapters.base import Call, Outcome
from adapters.tryton import supplierterms
from adapters.tryton.client import TrytonClient
from adapters.tryton.codec import plain
from adapters.tryton.payload import Payload
from adapters.tryton.purchases import update_purchase
from adapters.tryton.sales import append_comment
from bus.errors import PermanentError, TransientError

__all__ = ["confirm_purchase", "ordered_quantity"]

_OPEN = ("draft", "quotation")
_CONFIRMED = re.compile(r"\s*\(supplier confirmed (?P<confirmed>[\d.]+) of (?P<ordered>[\d.]+)\)")


def ordered_quantity(note: str | None) -> float | None:
    """The quantity ordered before a supplier confirmed less (from the line's note), else None."""
    found = _CONFIRMED.search(note or "")
    return float(found["ordered"]) if found else None


def _noted(note: str | None, confirmed: float, ordered: float) -> str:
    base = _CONFIRMED.sub("", note or "").rstrip()
    return f"{base} (supplier confirmed {confirmed:g} of {ordered:g})".lstrip()


def _locate(client: TrytonClient, p: Payload) -> dict[str, Any]:
    """The purchase a confirmation answers: by ``purchase`` id, or by ``number`` (or ``reference``) of the
    supplier ``party`` — purchase numbers are per company, and a supplier's documents name only its own."""
    if p.has("purchase"):
        domain: list[Any] = [["id", "=", p.req_ref("purchase")]]
    elif p.has("number"):
        domain = [["number", "=", p.req_text("number")]]
    elif p.has("reference"):
        domain = [["reference", "=", p.req_text("reference")]]
    else:
        raise PermanentError(f"tryton.{p.op}: give 'purchase' (id), 'number' or 'reference'")
    if p.has("party"):
        domain.append(["party", "=", p.req_ref("party")])
    rows = client.search_read("purchase.purchase", [*domain, ["state", "!=", "cancelled"]], ["state"], limit=2)
    if not rows:
        raise PermanentError(f"tryton.{p.op}: no purchase matches {domain}")
    if len(rows) > 1:
        raise PermanentError(f"tryton.{p.op}: more than one purchase matches {domain}; give the supplier 'party'")
    return rows[0]


def _lines(client: TrytonClient, purchase: int) -> list[dict[str, Any]]:
    return client.search_read("purchase.line", [["purchase", "=", purchase], ["type", "=", "line"]],
                              ["product", "product_supplier", "quantity", "unit", "unit_price", "description",
                               "moves", "note"], order=[("sequence", "ASC"), ("id", "ASC")])


def _received(client: TrytonClient, line: dict[str, Any]) -> float:
    moves = client.read("stock.move", list(line.get("moves") or []), ["state", "quantity"]) \
        if line.get("moves") else []
    return sum(float(m["quantity"]) for m in moves if m["state"] == "done")


def _lower(client: TrytonClient, purchase: int, state: str, line: dict[str, Any], quantity: float,
           why: str) -> float:
    """Bring one line down to ``quantity`` (not below what was received); the quantity it has now."""
    if state in _OPEN:
        if state == "quotation":
            client.model("purchase.purchase", "draft", [purchase])
        client.write("purchase.line", [line["id"]], {"quantity": quantity})
        if state == "quotation":
            client.model("purchase.purchase", "quote", [purchase])
        return quantity
    target = max(quantity, _received(client, line))
    amendment = client.create("purchase.amendment", [{
        "purchase": purchase, "description": why,
        "lines": [["create", [{"action": "line", "line": line["id"], "product": line["product"],
                               "product_supplier": line.get("product_supplier"), "quantity": target,
                               "unit": line["unit"], "unit_price": line["unit_price"],
                               "description": line.get("description")}]]]}])[0]
    client.model("purchase.amendment", "validate_amendment", [amendment])
    return target


def _move_dates(client: TrytonClient, origin: list[Any], date: dt.date) -> None:
    moves = client.search("stock.move", [origin, ["state", "=", "draft"]])
    if not moves:
        return
    try:
        client.write("stock.move", moves, {"planned_date": date})
    except PermanentError as exc:
        if "don't exist" not in str(exc):
            raise
        # an amendment of the same purchase (another document of the supplier's, on another route) replaced
        # the moves between our search and our write: the bus tries again, and finds the new ones
        raise TransientError(f"tryton.confirm_purchase: the purchase's moves changed while writing: {exc}") from None


def confirm_purchase(client: TrytonClient, call: Call) -> Outcome:
    """Apply a supplier's confirmation (or ship notice): ``number`` (or ``reference``/``purchase``) and the
    supplier ``party``, optional
    ``cancel`` (the supplier rejects the order), ``delivery_date`` and ``lines`` ``[{line_no, quantity,
    delivery_date}]`` with what the supplier confirmed. Idempotent: applying it again changes nothing."""
    p = Payload("confirm_purchase", call.payload)
    found = _locate(client, p)
    if p.flag("cancel", False):
        return update_purchase(client, Call(event=call.event, payload={"purchase": found["id"], "cancel": True},
                                             idempotency_key=call.idempotency_key, route=call.route,
                                             attempt=call.attempt, args=call.args))
    pid, state = found["id"], found["state"]
    if state in ("cancelled", "done"):
        raise PermanentError(f"tryton.confirm_purchase: purchase {pid} is {state!r}; a confirmation cannot change it")
    if state == "confirmed":  # Tryton stopped before its queued processing ran: process it now
        client.model("purchase.purchase", "process", [pid])
        state = client.read("purchase.purchase", [pid], ["state"])[0]["state"]
    lines = _lines(client, pid)
    applied: list[dict[str, Any]] = []
    notes: list[str] = []
    for change in p.items("lines"):
        number = int(change.number("line_no", required=True) or 0)
        if not 1 <= number <= len(lines):
            raise PermanentError(f"tryton.confirm_purchase: purchase {pid} has no line {number} (it has "
                                 f"{len(lines)})")
        line = lines[number - 1]
        current = float(line["quantity"])
        ordered = ordered_quantity(line.get("note")) or current
        confirmed = change.number("quantity")
        kept = current
        if confirmed is not None and confirmed < current - 1e-9:
            kept = _lower(client, pid, state, line, confirmed, f"supplier confirmation of line {number}")
            client.write("purchase.line", [line["id"]], {"note": _noted(line.get("note"), kept, ordered)})
            notes.append(f"line {number}: {kept:g} of {ordered:g} confirmed")
        date = change.date("delivery_date")
        if date is not None:
            _move_dates(client, ["origin", "=", f"purchase.line,{line['id']}"], date)
            notes.append(f"line {number}: expected {date.isoformat()}")
        applied.append({"line_no": number, "line": line["id"], "ordered": ordered, "quantity": kept,
                        "shortfall": max(ordered - kept, 0.0), "delivery_date": date})
    delivery = p.date("delivery_date")
    if delivery is not None:
        _move_dates(client, ["purchase", "=", pid], delivery)
        notes.append(f"delivery date {delivery.isoformat()}")
    # The comment line carries supplierterms.MARK: on a supplier's firm terms, a later change order may then not
    # reduce what the supplier confirmed (see adapters/tryton/supplierterms.py).
    append_comment(client, "purchase.purchase", pid, call,
                   supplierterms.MARK + (": " + "; ".join(notes) if notes else ""))
    row = client.read("purchase.purchase", [pid], ["number", "reference", "state"])[0]
    return Outcome(result=plain({"id": pid, "number": row.get("number"), "reference": row.get("reference"),
                                 "state": row["state"], "lines": applied}),
                   reference=row.get("number") or str(pid))
