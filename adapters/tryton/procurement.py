"""The SRM's procurement for the SCM's purchase requests: one purchase line per request, kept equal to it.

Each line says which customer order and request it serves in its ``note`` (``serves SO-1/PR-3 by 2026-12-21``:
order, request, the date the SCM needs the goods), so the supplier sees it on the order and a supplier issue on
the purchase can be traced back to every order it touches. How requests become purchases is configurable per
route (target ``args``):

* ``grouping: order`` (default): one purchase per request, reference ``<order>/<request>``, confirmed at once;
* ``grouping: supplier``: requests for the same supplier join one open purchase (a quotation) for ``window``
  (e.g. ``30s``, ``2h``) after it was opened; then it is released (confirmed) by ``release_purchase``, which the
  ``grouped_purchases_due`` poll asks for.

A request that changes converges its line: an open purchase is edited, a confirmed one is amended (module
``purchase_amendment``). What the supplier already delivered cannot be taken back, nor what a supplier confirmed on
firm terms (:mod:`adapters.tryton.supplierterms`): such a decrease is refused and the quantity bought beyond the
demand is reported (``refused``, ``over_procured``).
A completed purchase (``done``: nothing left to receive, e.g. every line amended to 0) cannot be amended either: a
request that grows past its line there gets a new line for the rest, placed like a new request, and that line is
the request's from then on; the older line keeps what it holds.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections.abc import Mapping
from typing import Any

from adapters.base import AdapterStore, Call, Outcome, PollResult
from adapters.tryton import supplierterms
from adapters.tryton.client import TrytonClient
from adapters.tryton.codec import plain
from adapters.tryton.payload import Payload
from adapters.tryton.purchases import _lines as purchase_lines
from adapters.tryton.refusals import named
from bus.errors import PermanentError

__all__ = ["NOTE", "grouped_purchases_due", "parse_note", "procure", "release_purchase", "served_orders"]

_OPEN = ("draft", "quotation")
NOTE = re.compile(r"serves (?P<order>[^/\s]+)/(?P<request>\S+) by (?P<date>\d{4}-\d{2}-\d{2}|open)")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
# One grouped purchase per supplier at a time: two orders' requests handled by two workers must not open two.
_GROUPING = threading.RLock()


def parse_note(note: str | None) -> dict[str, Any] | None:
    """``{order, request, requested_date}`` from a line note the bus wrote, else None."""
    found = NOTE.search(note or "")
    if not found:
        return None
    date = found["date"]
    return {"order": found["order"], "request": found["request"],
            "requested_date": dt.date.fromisoformat(date) if date != "open" else None}


def _note(order: str, request: str, date: dt.date | None) -> str:
    return f"serves {order}/{request} by {date.isoformat() if date else 'open'}"


def _seconds(value: Any, op: str) -> float:
    found = _DURATION.match(str(value).strip()) if value is not None else None
    if not found:
        raise PermanentError(f"tryton.{op}: argument 'window' must be a duration such as '30s' or '2h', "
                             f"got {value!r}")
    return float(found[1]) * _UNITS[found[2]]


def _lines_of(client: TrytonClient, order: str, request: str, limit: int | None = None) -> list[dict[str, Any]]:
    """The live purchase lines serving ``request`` of ``order``, newest first."""
    return client.search_read("purchase.line", [["note", "like", f"serves {order}/{request} by %"],
                                                 ["purchase.state", "!=", "cancelled"]],
                              ["purchase", "purchase.state", "product", "product_supplier", "quantity", "unit",
                               "unit_price", "description", "moves", "note", "delivery_date_store"],
                              order=[("id", "DESC")], limit=limit)


def _find_line(client: TrytonClient, order: str, request: str) -> dict[str, Any] | None:
    """The request's current line: the newest (older ones sit in completed purchases, see :func:`procure`)."""
    rows = _lines_of(client, order, request, limit=1)
    return rows[0] if rows else None


def _received(client: TrytonClient, line: Mapping[str, Any]) -> float:
    moves = client.read("stock.move", list(line.get("moves") or []), ["state", "quantity"]) \
        if line.get("moves") else []
    return sum(float(m["quantity"]) for m in moves if m["state"] == "done")


def _outcome(client: TrytonClient, purchase: int | None, order: str, request: str, wanted: float,
             **extra: Any) -> Outcome:
    row = client.read("purchase.purchase", [purchase], ["number", "reference", "state", "party"])[0] \
        if purchase else {}
    lines = _lines_of(client, order, request)
    line = lines[0] if lines else None
    bought = sum(float(row["quantity"]) for row in lines)
    if extra.get("refused") and line:  # the product's name and unit, for the CRM note and the customer
        extra["refused"] = named(client, extra["refused"], line.get("product"), line.get("unit"))
    result = {"id": purchase, "number": row.get("number"), "reference": row.get("reference"),
              "state": row.get("state"), "order_id": order, "request_id": request, "wanted": wanted,
              "quantity": bought, "over_procured": max(bought - wanted, 0.0), "refused": [], **extra}
    return Outcome(result=plain(result), reference=row.get("number") or (str(purchase) if purchase else None))


def _confirm(client: TrytonClient, purchase: int, op: str) -> None:
    if client.read("purchase.purchase", [purchase], ["state"])[0]["state"] == "draft":
        client.model("purchase.purchase", "quote", [purchase])
    client.model("purchase.purchase", "confirm", [purchase])
    state = client.read("purchase.purchase", [purchase], ["state"])[0]["state"]
    if state != "processing":
        raise PermanentError(f"tryton.{op}: purchase {purchase} is {state!r} after confirm, not 'processing' "
                             "(check the product's account category)")


def _edit_open(client: TrytonClient, line: dict[str, Any], quantity: float, date: dt.date | None,
               note: str) -> None:
    purchase, state = line["purchase"], line["purchase."]["state"]
    if state == "quotation":
        client.model("purchase.purchase", "draft", [purchase])
    if quantity <= 0:
        client.write("purchase.purchase", [purchase], {"lines": [["delete", [line["id"]]]]})
    else:
        values: dict[str, Any] = {"quantity": quantity, "note": note}
        if date is not None:
            values.update(delivery_date_edit=True, delivery_date_store=date)
        client.write("purchase.line", [line["id"]], values)
    if not client.search("purchase.line", [["purchase", "=", purchase], ["type", "=", "line"]]):
        client.model("purchase.purchase", "cancel", [purchase])
    elif state == "quotation":
        client.model("purchase.purchase", "quote", [purchase])


def _amend(client: TrytonClient, line: dict[str, Any], quantity: float, date: dt.date | None,
           note: str, order: str, request: str) -> list[dict[str, Any]]:
    """A confirmed purchase: amend the line's quantity (never below what was received); new date on its moves."""
    received = _received(client, line)
    refused = []
    target = quantity
    if quantity < received:
        target = received
        refused.append({"reason": "already_received", "wanted": quantity, "kept": received,
                        "detail": f"{received:g} already received from the supplier, cannot go down to "
                                  f"{quantity:g}"})
    if abs(target - float(line["quantity"])) > 1e-9:
        amendment = client.create("purchase.amendment", [{
            "purchase": line["purchase"], "description": f"order change {order} ({request})",
            "lines": [["create", [{"action": "line", "line": line["id"], "product": line["product"],
                                   "product_supplier": line.get("product_supplier"), "quantity": target,
                                   "unit": line["unit"], "unit_price": line["unit_price"],
                                   "description": line.get("description")}]]]}])[0]
        client.model("purchase.amendment", "validate_amendment", [amendment])
    if note != line.get("note"):
        client.write("purchase.line", [line["id"]], {"note": note})
    if date is not None:
        moves = client.search("stock.move", [["origin", "=", f"purchase.line,{line['id']}"],
                                             ["state", "=", "draft"]])
        if moves:
            client.write("stock.move", moves, {"planned_date": date})
    return refused


def procure(client: TrytonClient, store: AdapterStore, call: Call) -> Outcome:
    """Make the purchase line serving one request of one order match the request (see the module docstring)."""
    p = Payload("procure", call.payload)
    order, request = p.req_text("order_id"), p.req_text("request_id")
    quantity = p.number("quantity", required=True) or 0.0
    if p.text("status") == "cancelled":
        quantity = 0.0
    date = p.date("delivery_date")
    note = _note(order, request, date)
    grouping = str(call.args.get("grouping", "order"))
    if grouping not in ("order", "supplier"):
        raise PermanentError(f"tryton.procure: argument 'grouping' must be 'order' or 'supplier', got {grouping!r}")
    with _GROUPING:
        lines = _lines_of(client, order, request)
        line = lines[0] if lines else None
        # A completed purchase cannot be amended: when the request grows past its line there, the rest is bought on
        # a new line (below), which is the request's line from then on. The older lines keep what they hold.
        settled = sum(float(row["quantity"]) for row in lines[1:] if row["purchase."]["state"] == "done")
        here = max(quantity - settled, 0.0)
        if line is not None:
            state = line["purchase."]["state"]
            if state in _OPEN:
                try:
                    _edit_open(client, line, here, date, note)
                except PermanentError:
                    # Released (confirmed) by another process between our read and our write: amend it instead.
                    fresh = _find_line(client, order, request)
                    if fresh is None or fresh["purchase."]["state"] in _OPEN:
                        raise
                    line, state = fresh, fresh["purchase."]["state"]
                else:
                    purchase = line["purchase"]
                    still = client.read("purchase.purchase", [purchase], ["state"])[0]["state"]
                    return _outcome(client, purchase if still != "cancelled" else None, order, request, quantity,
                                    created=False)
            if state == "confirmed":  # Tryton stopped before its queued processing ran: process it now
                client.model("purchase.purchase", "process", [line["purchase"]])
                state = client.read("purchase.purchase", [line["purchase"]], ["state"])[0]["state"]
            if state == "processing":
                # a supplier who confirmed on firm terms keeps the line: the decrease is refused, the rest applies
                firm = supplierterms.firm_refusal(client, line, here, supplierterms.terms_of(call, p.data))
                refused = _amend(client, line, firm["kept"] if firm else here, date, note, order, request)
                return _outcome(client, line["purchase"], order, request, quantity, created=False,
                                refused=[firm, *refused] if firm else refused)
            if here <= float(line["quantity"]):
                refused = [] if here >= float(line["quantity"]) else [{
                    "reason": "purchase_done", "wanted": quantity, "kept": settled + float(line["quantity"]),
                    "detail": "the purchase is complete: every line was delivered"}]
                return _outcome(client, line["purchase"], order, request, quantity, created=False, refused=refused)
            # done with less than the request now needs (lowered to nothing, then raised again): buy the rest
            here -= float(line["quantity"])
        if here <= 0:
            return _outcome(client, None, order, request, 0.0, created=False)
        party = p.req_ref("party")
        values = purchase_lines(client, Payload("procure", {"lines": [{
            "product": p.req_ref("product"), "quantity": here,
            "delivery_date": date.isoformat() if date else None}]}), party)
        new_line = dict(values[0], note=note)
        if grouping == "order":
            purchase = _create(client, party, f"{order}/{request}", new_line, p.op)
            _confirm(client, purchase, p.op)
            return _outcome(client, purchase, order, request, quantity, created=True)
        window = _seconds(call.args.get("window", "0s"), p.op)
        purchase = _open_group(client, store, party)
        if purchase is None:
            today = dt.date.today()
            purchase = _create(client, party, f"grouped {today.isoformat()}", new_line, p.op)
            client.model("purchase.purchase", "quote", [purchase])
            release = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=window)
            store.put(f"release:{purchase}", release.isoformat())
            store.put(f"group:{party}", str(purchase))
            created = True
        else:
            client.model("purchase.purchase", "draft", [purchase])
            client.write("purchase.purchase", [purchase], {"lines": [["create", [new_line]]]})
            client.model("purchase.purchase", "quote", [purchase])
            created = False
        if window <= 0:
            _release(client, store, purchase, p.op)
        return _outcome(client, purchase, order, request, quantity, created=created, grouped=True)


def _create(client: TrytonClient, party: int, reference: str, line: dict[str, Any], op: str) -> int:
    from adapters.tryton.sales import first_address

    purchase: int = client.create("purchase.purchase", [{
        "party": party, "invoice_address": first_address(client, party, op), "reference": reference,
        "comment": "Lines say which customer order and request each serves.",
        "lines": [["create", [line]]]}])[0]
    return purchase


def _open_group(client: TrytonClient, store: AdapterStore, party: int) -> int | None:
    """The supplier's grouped purchase still collecting requests (in its window), if any."""
    current = store.get(f"group:{party}")
    if current is None:
        return None
    purchase = int(current)
    release = store.get(f"release:{purchase}")
    rows = client.read("purchase.purchase", [purchase], ["state"]) if client.search(
        "purchase.purchase", [["id", "=", purchase]]) else []
    if not rows or rows[0]["state"] not in _OPEN or release is None \
            or dt.datetime.fromisoformat(release) <= dt.datetime.now(dt.UTC):
        return None
    return purchase


def release_purchase(client: TrytonClient, store: AdapterStore, call: Call) -> Outcome:
    """Confirm a grouped purchase whose window has passed (idempotent: a confirmed one stays as it is)."""
    p = Payload("release_purchase", call.payload)
    purchase = p.ref("purchase") or p.req_ref("id")
    with _GROUPING:  # not while a request of this process is being added to or edited on it
        return _release(client, store, purchase, p.op)


def _release(client: TrytonClient, store: AdapterStore, purchase: int, op: str) -> Outcome:
    rows = client.search_read("purchase.purchase", [["id", "=", purchase]], ["state", "party"])
    if not rows:
        raise PermanentError(f"tryton.release_purchase: no purchase {purchase}")
    if rows[0]["state"] in _OPEN:
        _confirm(client, purchase, op)
    store.put(f"release:{purchase}", None)
    if store.get(f"group:{rows[0]['party']}") == str(purchase):
        store.put(f"group:{rows[0]['party']}", None)
    row = client.read("purchase.purchase", [purchase], ["number", "reference", "state"])[0]
    served = sorted({n["order"] for n in (parse_note(x.get("note")) for x in client.search_read(
        "purchase.line", [["purchase", "=", purchase]], ["note"])) if n})
    return Outcome(result=plain({"id": purchase, "number": row.get("number"), "reference": row.get("reference"),
                                 "state": row["state"], "orders": served}),
                   reference=row.get("number") or str(purchase))


def grouped_purchases_due(client: TrytonClient, store: AdapterStore, watermark: str | None) -> PollResult:
    """Grouped purchases whose window has passed and that are still open: one record each (key id@release)."""
    now = dt.datetime.now(dt.UTC)
    records = []
    for name, release in store.items("release:"):
        if dt.datetime.fromisoformat(release) > now:
            continue
        purchase = int(name.split(":", 1)[1])
        rows = client.search_read("purchase.purchase", [["id", "=", purchase]], ["state", "number", "reference"])
        if not rows or rows[0]["state"] not in _OPEN:
            store.put(name, None)
            continue
        records.append((f"{purchase}@{release}", plain({"id": purchase, "number": rows[0].get("number"),
                                                         "reference": rows[0].get("reference"),
                                                         "release_at": release})))
    return PollResult(records=records, watermark=watermark)


def served_orders(result: PollResult) -> PollResult:
    """Purchases as seen by each customer order they serve: one record per (purchase, order), with only the
    lines serving that order, so a supplier issue reaches every affected order with its own quantities."""
    records = []
    for key, purchase in result.records:
        by_order: dict[str, list[dict[str, Any]]] = {}
        for line in purchase.get("lines") or []:
            if line.get("order_id"):
                by_order.setdefault(str(line["order_id"]), []).append(line)
        ident, _, stamp = key.partition("@")
        for order, lines in sorted(by_order.items()):
            records.append((f"{ident}:{order}@{stamp}", {**purchase, "order_id": order, "lines": lines,
                                                        "orders": sorted(by_order)}))
    return PollResult(records=records, watermark=result.watermark)
