"""The SCM's demand for a customer order: one ``sale.sale`` per order (``reference`` = the order id), kept equal
to the latest version of the order whatever its state.

* no sale yet: create, quote and confirm it (supply on sale raises the purchase requests);
* a sale still open (draft/quotation): rewrite its lines, confirm it;
* a confirmed (processing) sale: Tryton freezes its lines, so quantities change through a *sale amendment*
  (module ``sale_amendment``): each line goes to its new quantity (0 for a removed line or a cancelled order) and
  the sale is processed again. A product the sale does not have yet goes on a supplementary sale ``<ref>+N``
  (an amendment changes lines, it cannot add one). The draft purchase request behind each line follows its
  line's quantity and date, so the SRM sees the change on its next poll.

What cannot be undone is refused, never dropped: a line cannot go below what was already shipped. The outcome
lists each refusal (``refused``: product, its name and unit, wanted, kept, reason) so a route can tell the CRM and
the customer.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import structlog

from adapters.base import Call, Outcome
from adapters.tryton.client import TrytonClient
from adapters.tryton.codec import plain
from adapters.tryton.payload import Payload
from adapters.tryton.refusals import named
from adapters.tryton.sales import _OPEN, _confirm, _header, _rewrite_open, _wanted_lines
from bus.errors import PermanentError

__all__ = ["update_demand"]

log = structlog.get_logger(__name__)


def _live_sales(client: TrytonClient, reference: str) -> list[dict[str, Any]]:
    sales = client.search_read("sale.sale", ["OR", ["reference", "=", reference],
                                             ["reference", "like", f"{reference}+%"]],
                               ["state", "reference"], order=[("id", "ASC")])
    return [s for s in sales if s["state"] != "cancelled"]


def _frozen_lines(client: TrytonClient, sale_ids: list[int]) -> list[dict[str, Any]]:
    """Lines of confirmed sales with what was shipped of each (done outgoing moves)."""
    if not sale_ids:
        return []
    lines = client.search_read("sale.line", [["sale", "in", sale_ids], ["type", "=", "line"]],
                               ["sale", "product", "quantity", "unit", "unit_price", "description", "moves",
                                "purchase_request"], order=[("sale", "ASC"), ("id", "ASC")])
    move_ids = sorted({m for line in lines for m in line.get("moves") or []})
    moves = {m["id"]: m for m in client.read("stock.move", move_ids, ["state", "quantity", "to_location.type"])} \
        if move_ids else {}
    for line in lines:
        line["shipped"] = sum(float(moves[m]["quantity"]) for m in line.get("moves") or []
                              if m in moves and moves[m]["state"] == "done"
                              and (moves[m].get("to_location.") or {}).get("type") == "customer")
    return lines


def _process_stuck(client: TrytonClient, sale_ids: list[int], op: str) -> None:
    """Sales left 'confirmed' (Tryton stopped before its queued processing ran) are processed now: only a
    processing sale can be amended."""
    if not sale_ids:
        return
    client.model("sale.sale", "process", sale_ids)
    stuck = [r["id"] for r in client.read("sale.sale", sale_ids, ["state"]) if r["state"] == "confirmed"]
    if stuck:
        raise PermanentError(f"tryton.{op}: sale(s) {stuck} stay 'confirmed' after processing (see the SCM's "
                             "ir.error records); they cannot be amended")


def _allocate(lines: list[dict[str, Any]], target: float) -> tuple[dict[int, float], float]:
    """New quantity per line so the product's lines sum to ``target``, never below what each line shipped.

    Decreases empty the later lines first; an increase goes on the first line. Returns the quantities and the
    part of a decrease that cannot be applied (already shipped).
    """
    new = {line["id"]: line["shipped"] for line in lines}
    remaining = target - sum(new.values())
    if remaining < 0:
        return new, -remaining
    for line in lines:
        add = min(remaining, max(float(line["quantity"]) - line["shipped"], 0.0))
        new[line["id"]] += add
        remaining -= add
    if remaining > 0 and lines:
        new[lines[0]["id"]] += remaining
    return new, 0.0


def _amend(client: TrytonClient, lines: list[dict[str, Any]], new: dict[int, float]) -> list[int]:
    """One validated ``sale.amendment`` per sale whose lines change; returns the amended sale ids."""
    by_sale: dict[int, list[dict[str, Any]]] = {}
    for line in lines:
        if abs(new[line["id"]] - float(line["quantity"])) > 1e-9:
            by_sale.setdefault(line["sale"], []).append(line)
    for sale, changed in by_sale.items():
        amendment = client.create("sale.amendment", [{
            "sale": sale, "description": "order change (ironbus)",
            "lines": [["create", [{"action": "line", "line": line["id"], "product": line["product"],
                                   "quantity": new[line["id"]], "unit": line["unit"],
                                   "unit_price": line["unit_price"], "description": line.get("description")}
                                  for line in changed]]]}])[0]
        client.model("sale.amendment", "validate_amendment", [amendment])
    return sorted(by_sale)


def _follow_requests(client: TrytonClient, sale_ids: list[int], touch: bool = False) -> list[int]:
    """Draft purchase requests follow their sale line's quantity; returns their ids.

    Their supply date is Tryton's to compute and refuses writes: when only the date moved (``touch``), the
    request is written anyway so the next poll reports it with its line's new shipping date."""
    lines = client.search_read("sale.line", [["sale", "in", sale_ids], ["type", "=", "line"],
                                             ["purchase_request", "!=", None]],
                               ["quantity", "purchase_request"]) if sale_ids else []
    if not lines:
        return []
    requests = {r["id"]: r for r in client.read("purchase.request", [x["purchase_request"] for x in lines],
                                                ["state", "quantity"])}
    for line in lines:
        request = requests[line["purchase_request"]]
        if request["state"] != "draft":
            continue  # bought inside the SCM itself: that purchase is the SCM's business, not the bus's
        values: dict[str, Any] = {}
        if touch or abs(float(request["quantity"]) - float(line["quantity"])) > 1e-9:
            values["quantity"] = float(line["quantity"])
        if values:
            client.write("purchase.request", [request["id"]], values)
    return sorted(requests)


def _move_dates(client: TrytonClient, sale_ids: list[int], shipping_date: dt.date) -> bool:
    """A confirmed sale's shipping date is read-only; its not-yet-shipped moves carry the new date (and with
    them the lines' shipping date, which the purchase requests report). True when a date moved."""
    moves = client.search_read("stock.move", [["origin", "in", [f"sale.line,{i}" for i in client.search(
        "sale.line", [["sale", "in", sale_ids]])]], ["state", "in", ["staging", "draft"]]], ["planned_date"])
    moved = [m["id"] for m in moves if m.get("planned_date") != shipping_date]
    if moved:
        client.write("stock.move", moved, {"planned_date": shipping_date})
    return bool(moved)


def _settle_dates(client: TrytonClient, sale_ids: list[int], shipping: dt.date | None) -> None:
    """The requested date on every pending move (supply on sale may plan them for today), then the requests
    follow their lines (quantity; touched when a date moved, so the SRM hears of it)."""
    moved = _move_dates(client, sale_ids, shipping) if shipping is not None else False
    _follow_requests(client, sale_ids, touch=moved)


def _outcome(client: TrytonClient, reference: str, sale_ids: list[int], **extra: Any) -> Outcome:
    main = sale_ids[0] if sale_ids else None
    row = client.read("sale.sale", [main], ["number", "state", "party"])[0] if main else {}
    lines = client.search_read("sale.line", [["sale", "in", sale_ids], ["type", "=", "line"]],
                               ["product", "quantity"]) if sale_ids else []
    demand: dict[int, float] = {}
    for line in lines:
        demand[line["product"]] = demand.get(line["product"], 0.0) + float(line["quantity"])
    requests = client.search("purchase.request", [["origin", "in", [f"sale.sale,{i}" for i in sale_ids]]],
                             order=[("id", "ASC")]) if sale_ids else []
    result = {"id": main, "number": row.get("number"), "reference": reference, "state": row.get("state"),
              "party": row.get("party"), "sales": sale_ids, "purchase_requests": requests,
              "demand": [{"product": k, "quantity": v} for k, v in sorted(demand.items()) if v > 0],
              "refused": [], **extra}
    return Outcome(result=plain(result), reference=row.get("number") or reference)


def update_demand(client: TrytonClient, call: Call) -> Outcome:
    """Make the SCM's sales for a customer order match its latest version (see the module docstring)."""
    p = Payload("update_demand", call.payload)
    reference = p.req_text("reference")
    cancel = p.text("status") == "cancelled"
    values = {**_header(client, p), "reference": reference}
    lines = [] if cancel else [line for line in _wanted_lines(client, p) if float(line["quantity"]) > 0]
    want: dict[int, float] = {}
    for line in lines:
        want[line["product"]] = want.get(line["product"], 0.0) + float(line["quantity"])
    live = _live_sales(client, reference)
    shipping = p.date("shipping_date")

    if not live:
        if not lines:
            return _outcome(client, reference, [], cancelled=cancel)
        sale = client.create("sale.sale", [{**values, "lines": [["create", lines]]}])[0]
        _confirm(client, sale, p.op)
        _settle_dates(client, [sale], shipping)
        return _outcome(client, reference, [sale], created=True)

    opened = [s for s in live if s["state"] in _OPEN]
    frozen = [s for s in live if s["state"] not in _OPEN]
    if not frozen:
        main, rest = opened[0], opened[1:]
        if rest:
            client.model("sale.sale", "cancel", [s["id"] for s in rest])
        if not lines:
            client.model("sale.sale", "cancel", [main["id"]])
            return _outcome(client, reference, [main["id"]], cancelled=True)
        _rewrite_open(client, main, values, lines)
        _confirm(client, main["id"], p.op)
        _settle_dates(client, [main["id"]], shipping)
        return _outcome(client, reference, [main["id"]], created=False)

    # Confirmed: amend. An open leftover (a confirm that failed earlier) is folded into the amendment's plan.
    if opened:
        client.model("sale.sale", "cancel", [s["id"] for s in opened])
    _process_stuck(client, [s["id"] for s in frozen if s["state"] == "confirmed"], p.op)
    sale_ids = [s["id"] for s in frozen]
    current = _frozen_lines(client, sale_ids)
    new: dict[int, float] = {}
    refused: list[dict[str, Any]] = []
    for product in sorted({line["product"] for line in current} | set(want)):
        of_product = [line for line in current if line["product"] == product]
        if not of_product:
            continue
        quantities, unapplied = _allocate(of_product, want.get(product, 0.0))
        new.update(quantities)
        if unapplied > 0:
            kept = sum(quantities.values())
            refused += named(client, [{
                "product": product, "wanted": want.get(product, 0.0), "kept": kept, "reason": "already_shipped",
                "detail": f"{kept:g} already shipped, cannot go down to {want.get(product, 0.0):g}"}],
                product, of_product[0].get("unit"))
    amended = _amend(client, current, new)
    missing = [dict(line) for line in lines if line["product"] not in {c["product"] for c in current}]
    supplement = None
    if missing:
        taken: set[int] = set()
        extra = []
        for line in missing:
            if line["product"] not in taken:
                taken.add(line["product"])
                extra.append(dict(line, quantity=want[line["product"]]))
        count = len(client.search("sale.sale", ["OR", ["reference", "=", reference],
                                                ["reference", "like", f"{reference}+%"]]))
        supplement = client.create("sale.sale", [{**values, "reference": f"{reference}+{count + 1}",
                                                  "lines": [["create", extra]]}])[0]
        _confirm(client, supplement, p.op)
        sale_ids.append(supplement)
    _settle_dates(client, sale_ids, shipping)
    if refused:
        log.info("tryton.demand_refused", reference=reference, refused=refused, event_id=call.event.id)
    return _outcome(client, reference, sale_ids, created=False, amended=amended, supplement=supplement,
                    refused=refused, cancelled=cancel)


def demand_of(client: TrytonClient, reference: str) -> dict[int, float]:
    """The planned quantity per product of a customer order (every live sale of it)."""
    sale_ids = [s["id"] for s in _live_sales(client, reference)]
    totals: dict[int, float] = {}
    for line in client.search_read("sale.line", [["sale", "in", sale_ids], ["type", "=", "line"]],
                                   ["product", "quantity"]) if sale_ids else []:
        totals[line["product"]] = totals.get(line["product"], 0.0) + float(line["quantity"])
    return {k: v for k, v in totals.items() if v > 0}
