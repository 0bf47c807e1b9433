"""Issue 13 on live Tryton: every kind of order change converges in the SCM and the SRM; a grouped purchase serves
several customers' orders and a supplier issue on it reaches each of them; what a system refuses is told.

The stack is the demo's (tests/flows/conftest.py builds one per module; this module has its own, with a short
grouping window and a second customer and material).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pytest

from bus.envelope import new_event_id
from demo.actors import CrmSale, SalesRep, Supplier
from demo.masterdata import Codes
from demo.stack import Stack, wait_for
from tests.helpers.stacks import linked_triangle

pytestmark = [pytest.mark.tryton, pytest.mark.slow]

TIMEOUT = 120.0  # a deadline on a condition, not a sleep: generous for the loaded 2-core CI machine
SECOND = Codes(customer="C-GLOBEX", customer_name="Globex Ltd", material="W-200", material_name="Gear W-200")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    window = {"IRONBUS_GROUPING_WINDOW": "3s"}
    with linked_triangle(tmp_path_factory.mktemp("changes"), SECOND, env=window) as triangle:
        yield triangle


def ids(stack: Stack, entity: str, code: str, system: str) -> int:
    return next(int(x.system_id) for x in stack.links
                if x.entity == entity and x.canonical_id == code and x.system == system)


def rep(stack: Stack) -> SalesRep:
    return SalesRep(stack.adapters["crm"].client)


def crm_products(stack: Stack) -> tuple[int, int]:
    return ids(stack, "material", "W-100", "crm"), ids(stack, "material", "W-200", "crm")


def scm_demand(stack: Stack, order_id: str) -> dict[str, float]:
    """Planned quantity per material code in the SCM (every live sale of the order)."""
    client = stack.adapters["scm"].client
    sales = client.search("sale.sale", ["OR", ["reference", "=", order_id], ["reference", "like", f"{order_id}+%"]])
    lines = client.search_read("sale.line", [["sale", "in", sales], ["type", "=", "line"],
                                             ["sale.state", "!=", "cancelled"]], ["product.code", "quantity"]) \
        if sales else []
    out: dict[str, float] = {}
    for line in lines:
        code = line["product."]["code"]
        out[code] = out.get(code, 0.0) + float(line["quantity"])
    return {k: v for k, v in out.items() if v > 0}


def srm_procured(stack: Stack, order_id: str) -> dict[str, float]:
    """Quantity bought per material code in the SRM for the order (lines that serve it, live purchases)."""
    rows = stack.adapters["srm"].client.search_read(
        "purchase.line", [["note", "like", f"serves {order_id}/%"], ["purchase.state", "!=", "cancelled"]],
        ["product.code", "quantity"])
    out: dict[str, float] = {}
    for row in rows:
        code = row["product."]["code"]
        out[code] = out.get(code, 0.0) + float(row["quantity"])
    return {k: v for k, v in out.items() if v > 0}


def converged(stack: Stack, order_id: str, want: dict[str, float]) -> None:
    wanted = {k: v for k, v in want.items() if v > 0}
    wait_for(f"SCM demand {wanted} for {order_id}", lambda: scm_demand(stack, order_id) == wanted or None, TIMEOUT)
    wait_for(f"SRM procurement {wanted} for {order_id}", lambda: srm_procured(stack, order_id) == wanted or None,
             TIMEOUT)


def notices(stack: Stack, order_id: str, kind: str) -> list[dict[str, Any]]:
    docs = [json.loads(p.read_text()) for p in stack.notifications()]
    return [d for d in docs if d["order_id"] == order_id and d["kind"] == kind]


def crm_comment(stack: Stack, sale: CrmSale) -> str:
    return str(rep(stack).read(sale.id).get("comment") or "")


def test_every_kind_of_change_converges_in_the_scm_and_the_srm(stack: Stack) -> None:
    w100, w200 = crm_products(stack)
    customer = ids(stack, "customer", "C-ACME", "crm")
    # Given a quotation for 10 × W-100, planned and procured
    sale = rep(stack).create_order(customer, {w100: 10}, dt.date.today() + dt.timedelta(days=12))
    converged(stack, sale.order_id, {"W-100": 10})
    # When the customer adds a line while it is a quotation (the SCM's sale is confirmed: a supplementary sale)
    assert rep(stack).change_lines(sale.id, {w200: 4}) == "quotation edited"
    converged(stack, sale.order_id, {"W-100": 10, "W-200": 4})
    # When the rep confirms, then the customer raises one line and lowers the other (sale amendments everywhere)
    rep(stack).confirm(sale.id)
    assert rep(stack).change_lines(sale.id, {w100: 14, w200: 2}) == "amended"
    converged(stack, sale.order_id, {"W-100": 14, "W-200": 2})
    # When the quantity goes down again and the second line is removed
    assert rep(stack).change_lines(sale.id, {w100: 7, w200: 0}) == "amended"
    converged(stack, sale.order_id, {"W-100": 7})
    scm = stack.adapters["scm"].client
    amendments = scm.search("sale.amendment", [["sale.reference", "like", f"{sale.order_id}%"]])
    assert amendments, "the SCM's confirmed sales were changed by sale amendments, not notes"
    assert stack.runtime is not None and stack.runtime.wait_idle(30)
    assert scm_demand(stack, sale.order_id) == {"W-100": 7}
    assert srm_procured(stack, sale.order_id) == {"W-100": 7}


def test_a_cancelled_order_and_a_moved_date_converge(stack: Stack) -> None:
    w100, w200 = crm_products(stack)
    customer = ids(stack, "customer", "C-ACME", "crm")
    sale = rep(stack).create_order(customer, {w100: 5, w200: 3}, dt.date.today() + dt.timedelta(days=12))
    converged(stack, sale.order_id, {"W-100": 5, "W-200": 3})
    # When the requested date moves while it is a quotation, the SCM sale is re-planned for the new date
    later = dt.date.today() + dt.timedelta(days=20)
    crm = stack.adapters["crm"].client
    crm.model("sale.sale", "draft", [sale.id])
    crm.write("sale.sale", [sale.id], {"shipping_date": later})
    crm.model("sale.sale", "quote", [sale.id])
    scm, srm = stack.adapters["scm"].client, stack.adapters["srm"].client

    def scm_dates() -> set[Any]:
        sales = scm.search("sale.sale", [["reference", "like", f"{sale.order_id}%"], ["state", "!=", "cancelled"]])
        return {line["shipping_date"] for line in scm.search_read("sale.line", [["sale", "in", sales]],
                                                                  ["shipping_date"])}

    def srm_dates() -> set[str]:
        return {str(line["note"]).rsplit(" ", 1)[-1] for line in srm.search_read(
            "purchase.line", [["note", "like", f"serves {sale.order_id}/%"]], ["note"])}

    # (the SCM sale is confirmed: its lines' moves carry the date; the SRM lines say the date they serve)
    wait_for("the new date in the SCM", lambda: scm_dates() == {later} or None, TIMEOUT)
    wait_for("the new date in the SRM", lambda: srm_dates() == {later.isoformat()} or None, TIMEOUT)
    # When the customer cancels the order, nothing stays planned or bought for it
    rep(stack).cancel(sale.id)
    converged(stack, sale.order_id, {})


def test_a_grouped_purchase_serves_two_customers_and_a_supplier_issue_reaches_each(stack: Stack) -> None:
    w100, _ = crm_products(stack)
    acme, globex = ids(stack, "customer", "C-ACME", "crm"), ids(stack, "customer", "C-GLOBEX", "crm")
    wanted = dt.date.today() + dt.timedelta(days=10)
    # Given two customers' orders for the same material and supplier, placed within the grouping window
    first = rep(stack).create_order(acme, {w100: 10}, wanted)
    second = rep(stack).create_order(globex, {w100: 6}, wanted)
    converged(stack, first.order_id, {"W-100": 10})
    converged(stack, second.order_id, {"W-100": 6})
    supplier = Supplier(stack.adapters["srm"])
    # Then one SRM purchase serves both, each line naming the order it serves; it is released after the window
    lines_a, lines_b = supplier.purchases_serving(first.order_id), supplier.purchases_serving(second.order_id)
    assert {line["purchase"] for line in lines_a} == {line["purchase"] for line in lines_b}
    purchase = lines_a[0]["purchase"]
    wait_for("the grouped purchase released", lambda: supplier.purchases_serving(first.order_id)[0][
        "purchase."]["state"] == "processing" or None, TIMEOUT)
    # When the supplier delays the whole purchase by a week
    later = supplier.delivery_date(purchase) + dt.timedelta(days=7)
    supplier.delay_purchase(purchase, later)
    # Then both CRM sales carry the new date, and each customer gets a delay notice for their own order
    for sale in (first, second):
        wait_for(f"the promised date on {sale.order_id}",
                 lambda sale=sale: f"promised date {later.isoformat()}" in crm_comment(stack, sale) or None, TIMEOUT)
        [notice] = wait_for(f"the delay notice for {sale.order_id}",
                            lambda sale=sale: notices(stack, sale.order_id, "order_delayed"), TIMEOUT)
        assert notice["promised_date"] == later.isoformat()
        assert "Bolt" not in notice["body"], "no supplier names in what the customer reads"
    assert notices(stack, first.order_id, "order_delayed")[0]["customer"] == {"id": "C-ACME"}
    assert notices(stack, second.order_id, "order_delayed")[0]["customer"] == {"id": "C-GLOBEX"}
    # When the supplier can deliver only 4 of the 6 on the second customer's line
    [line_b] = supplier.purchases_serving(second.order_id)
    supplier.deliver_less_on_line(purchase, line_b["id"], 4)
    # Then only that customer hears of a partial delivery
    wait_for("the partial notice", lambda: notices(stack, second.order_id, "order_partial"), TIMEOUT)
    assert stack.runtime is not None and stack.runtime.wait_idle(30)
    assert notices(stack, first.order_id, "order_partial") == []


def released_order(stack: Stack, widgets: float, days: int) -> tuple[CrmSale, Supplier, int]:
    """ACME's order for ``widgets`` W-100 in ``days``, converged, with its purchase released to the supplier."""
    w100, _ = crm_products(stack)
    customer = ids(stack, "customer", "C-ACME", "crm")
    sale = rep(stack).create_order(customer, {w100: widgets}, dt.date.today() + dt.timedelta(days=days))
    converged(stack, sale.order_id, {"W-100": widgets})
    supplier = Supplier(stack.adapters["srm"])
    wait_for("the purchase released", lambda: supplier.purchases_serving(sale.order_id)[0][
        "purchase."]["state"] == "processing" or None, TIMEOUT)
    return sale, supplier, supplier.purchases_serving(sale.order_id)[0]["purchase"]


def test_the_same_date_planned_again_is_not_told_again(stack: Stack) -> None:
    sale, supplier, purchase = released_order(stack, 7, days=9)
    later = supplier.delivery_date(purchase) + dt.timedelta(days=5)
    # Given a delay the CRM and the customer have been told of
    supplier.delay_purchase(purchase, later)
    wait_for("the delay notice", lambda: notices(stack, sale.order_id, "order_delayed"), TIMEOUT)
    assert stack.runtime is not None
    journal = stack.runtime.journal
    adjusted = [e for e in journal.events_for(key=sale.order_id) if e.type == "plan.adjusted"]
    assert adjusted, "the delay re-planned the order"
    # When the SCM re-plans the order to the same date once more. A supplier's change often takes several writes
    # (its incoming moves, then its note), and a poll between them reports the purchase twice, each re-planning
    # the SCM with what the purchase said then.
    again = adjusted[-1].with_(id=new_event_id(), data={**adjusted[-1].data, "reason": "port strike in Rotterdam"})
    stack.runtime.ingest([(again, "followup")])
    [row] = wait_for("the second re-plan handled", lambda: [d for d in journal.deliveries_for_events([again.id])
                                                          if d.route == "plan-adjusted-to-crm"] or None, TIMEOUT)
    assert stack.runtime.wait_idle(30)
    # Then neither the CRM nor the customer hears the same date again
    assert row.status == "unchanged"
    [notice] = notices(stack, sale.order_id, "order_delayed")
    assert notice["promised_date"] == later.isoformat()
    assert crm_comment(stack, sale).count(f"promised date {later.isoformat()}") == 1


def test_a_decrease_after_the_goods_arrived_is_refused_and_told(stack: Stack) -> None:
    w100, _ = crm_products(stack)
    sale, supplier, purchase = released_order(stack, 9, days=8)
    # Given the supplier has delivered the goods
    assert supplier.receive(purchase) > 0
    rep(stack).confirm(sale.id)
    # When the customer lowers the order to 5
    rep(stack).change_lines(sale.id, {w100: 5})
    # Then the SCM follows, the SRM keeps what it received, and the refusal reaches the CRM and the customer
    wait_for("demand of 5", lambda: scm_demand(stack, sale.order_id) == {"W-100": 5} or None, TIMEOUT)
    wait_for("the refusal on the CRM sale", lambda: "bought beyond the order" in crm_comment(stack, sale) or None,
             TIMEOUT)
    assert "4 Unit of Widget W-100 bought beyond the order" in crm_comment(stack, sale)
    [notice] = wait_for("the refusal notice", lambda: notices(stack, sale.order_id, "order_change_refused"), TIMEOUT)
    assert "Widget W-100 stays at 9 pieces (you asked for 5)" in notice["body"]
    assert srm_procured(stack, sale.order_id) == {"W-100": 9}


def test_a_line_lowered_to_nothing_then_raised_again_is_bought_again(stack: Stack) -> None:
    w100, _ = crm_products(stack)
    sale, supplier, purchase = released_order(stack, 4, days=10)
    rep(stack).confirm(sale.id)
    # Given the customer lowered the order to nothing: the purchase's only line is amended to 0, and Tryton
    # completes a purchase with nothing left to receive
    assert rep(stack).change_lines(sale.id, {w100: 0}) == "amended"
    srm = stack.adapters["srm"].client
    wait_for("the emptied purchase completed", lambda: srm.read("purchase.purchase", [purchase], ["state"])[0][
        "state"] == "done" or None, TIMEOUT)
    # When the customer raises the line again: a completed purchase cannot be amended, so the SRM buys it anew
    assert rep(stack).change_lines(sale.id, {w100: 6}) == "amended"
    converged(stack, sale.order_id, {"W-100": 6})
    lines = srm.search_read("purchase.line", [["note", "like", f"serves {sale.order_id}/%"]],
                            ["purchase", "quantity", "purchase.state"])
    assert sorted((row["purchase"] == purchase, float(row["quantity"])) for row in lines) == [(False, 6.0), (True, 0.0)]
    # and a later change goes to the new line only
    assert rep(stack).change_lines(sale.id, {w100: 5}) == "amended"
    converged(stack, sale.order_id, {"W-100": 5})
