"""Both iron-triangle flows end to end: three live Tryton databases, the shipped routes.yaml, the real runtime.

Given the demo's stack (master data in crm/scm/srm, linked in the xref, the bus polling every second), when a
sales rep or a supplier acts in Tryton, then the other databases and the customer's outbox follow — and the
journal tells the story per order.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

import cli
from demo.actors import CrmSale, SalesRep, Supplier
from demo.masterdata import XrefLink, call
from demo.stack import REPO, Stack, wait_for
from tests.helpers.inprocess_cli import ironbus

pytestmark = [pytest.mark.tryton, pytest.mark.slow]

TIMEOUT = 120.0  # a deadline on a condition, not a sleep: generous for the loaded 2-core CI machine


def rep(stack: Stack) -> SalesRep:
    return SalesRep(stack.adapters["crm"].client)


def quote(stack: Stack, quantity: float, *, customer: int | None = None) -> CrmSale:
    return rep(stack).create_sale(customer or stack.system_id("customer", "crm"), stack.system_id("material", "crm"),
                                  quantity, dt.date.today() + dt.timedelta(days=10))


def purchases(stack: Stack, order_id: str) -> list[dict[str, Any]]:
    return Supplier(stack.adapters["srm"]).purchases_for(order_id)


def purchased_quantity(stack: Stack, order_id: str) -> float:
    """What confirmed SRM purchases buy for the order (the lines serving it; a purchase may serve several)."""
    lines = stack.adapters["srm"].client.search_read(
        "purchase.line", [["note", "like", f"serves {order_id}/%"], ["purchase.state", "=", "processing"]],
        ["quantity"])
    return sum(float(line["quantity"]) for line in lines)


def scm_demand(stack: Stack, order_id: str) -> float:
    client = stack.adapters["scm"].client
    sales = client.search("sale.sale", ["OR", ["reference", "=", order_id], ["reference", "like", f"{order_id}+%"]])
    lines = client.search_read("sale.line", [["sale", "in", sales], ["type", "=", "line"]], ["quantity"]) \
        if sales else []
    return sum(float(line["quantity"]) for line in lines)


def comment(stack: Stack, sale: CrmSale) -> str:
    return str(rep(stack).read(sale.id).get("comment") or "")


def notices(stack: Stack, prefix: str, order_id: str) -> list[dict[str, Any]]:
    docs = [json.loads(p.read_text()) for p in stack.notifications() if p.name.startswith(prefix)]
    return [d for d in docs if d["order_id"] == order_id]


def trace_text(order_id: str, stack: Stack) -> str:
    code, text = ironbus("trace", "--key", order_id, "--journal", stack.journal_url)
    assert code == 0, text
    return text


def test_order_change_flows_from_crm_to_srm_and_back(stack: Stack) -> None:
    # Given a quotation for 10 widgets in the CRM
    sale = quote(stack, 10)
    # Then the SCM plans it, the SRM orders it from the supplier, the CRM sale gets a note, the customer a notice
    found = wait_for("the SRM purchase", lambda: purchased_quantity(stack, sale.order_id) == 10 or None, TIMEOUT)
    assert found
    [purchase] = purchases(stack, sale.order_id)
    [line] = Supplier(stack.adapters["srm"]).purchases_serving(sale.order_id)
    assert line["note"].startswith(f"serves {sale.order_id}/PR-")
    assert scm_demand(stack, sale.order_id) == 10
    wait_for("the CRM note", lambda: f"Purchase order {purchase['number']} placed with" in comment(stack, sale),
             TIMEOUT)
    [notice] = wait_for("the confirmation notice", lambda: notices(stack, "order_confirmed-", sale.order_id), TIMEOUT)
    assert notice["customer"] == {"id": "C-ACME"}
    assert notice["kind"] == "order_confirmed"
    # And `ironbus trace --key` shows every hop of the chain, from the CRM poll to the outbox
    assert stack.runtime is not None and stack.runtime.wait_idle(20)
    text = trace_text(sale.order_id, stack)
    for hop in ("crm-order-changed → scm.update_demand: DELIVERED",
                "scm-procurement-requested → srm.procure: DELIVERED",
                "po-created-to-crm → crm.add_sale_note: DELIVERED",
                "notify-customer → notify.write: DELIVERED"):
        assert hop in text, text
    assert text.index("purchase_order.created") < text.index("notice.requested")


def test_supplier_delay_then_shortfall_reach_the_crm_and_the_customer(stack: Stack) -> None:
    # Given an order whose purchase is placed
    sale = quote(stack, 8)
    wait_for("the SRM purchase", lambda: purchased_quantity(stack, sale.order_id) == 8 or None, TIMEOUT)
    [purchase] = purchases(stack, sale.order_id)
    supplier = Supplier(stack.adapters["srm"])
    later = supplier.delivery_date(purchase["id"]) + dt.timedelta(days=9)
    # When the supplier moves the delivery 9 days later
    supplier.delay_purchase(purchase["id"], later)
    # Then the CRM sale carries the new promised date and the customer gets a delay notice with it
    wait_for("the promised date in the CRM", lambda: f"promised date {later.isoformat()}" in comment(stack, sale),
             TIMEOUT)
    [delayed] = wait_for("the delay notice", lambda: notices(stack, "order_delayed-", sale.order_id), TIMEOUT)
    assert delayed["promised_date"] == later.isoformat()
    assert "SCM" not in delayed["body"] and f"{later.day} {later:%B} {later.year}" in delayed["body"]
    # When the supplier then delivers only 5 of the 8
    [line] = supplier.purchases_serving(sale.order_id)
    supplier.deliver_less_on_line(purchase["id"], line["id"], 5)
    # Then the customer hears about a partial delivery
    [partial] = wait_for("the partial notice", lambda: notices(stack, "order_partial-", sale.order_id), TIMEOUT)
    assert partial["subject"] == f"Partial delivery for order {sale.order_id}"
    scm = stack.adapters["scm"].client
    [scm_sale] = scm.search_read("sale.sale", [["reference", "=", sale.order_id]], ["comment"])
    assert f"promised date {later.isoformat()}" in scm_sale["comment"]
    assert "partial" in scm_sale["comment"]


def test_two_quick_changes_end_in_the_latest_quantity(stack: Stack) -> None:
    sale = quote(stack, 4)
    wait_for("the first demand", lambda: scm_demand(stack, sale.order_id) == 4 or None, TIMEOUT)
    # When the rep changes the quantity twice in a row, faster than the bus polls
    rep(stack).change_quantity(sale.id, 6)
    rep(stack).change_quantity(sale.id, 9)
    # Then the SCM demand and the purchases end at the latest quantity, not at the one in between
    wait_for("demand of 9", lambda: scm_demand(stack, sale.order_id) == 9 or None, TIMEOUT)
    wait_for("purchases for 9", lambda: purchased_quantity(stack, sale.order_id) == 9 or None, TIMEOUT)
    assert stack.runtime is not None and stack.runtime.wait_idle(20)
    assert scm_demand(stack, sale.order_id) == 9
    assert purchased_quantity(stack, sale.order_id) == 9


def test_a_tryton_restart_delays_the_flow_but_loses_nothing(stack: Stack) -> None:
    assert stack.server is not None
    sale = quote(stack, 3)
    # When the whole Tryton server stops right after the CRM change, and comes back later
    stack.server.stop()
    try:
        assert purchases_unreachable(stack)
    finally:
        stack.server.launch()
    # Then the events waited (poll backoff, parked deliveries) and the flow completes
    wait_for("the SRM purchase after the restart", lambda: purchased_quantity(stack, sale.order_id) == 3 or None,
             60)
    wait_for("the CRM note after the restart", lambda: "Purchase order" in comment(stack, sale), 60)


def purchases_unreachable(stack: Stack) -> bool:
    from bus.errors import TransientError

    try:
        stack.adapters["srm"].client.search("purchase.purchase", [])
    except TransientError:
        return True
    return False


def test_an_order_of_an_unlinked_customer_waits_until_the_operator_links_it(stack: Stack) -> None:
    # Given a customer the sync route does not carry (its code is outside the CRM's customer numbering), so
    # nothing links it by itself
    crm, scm = stack.adapters["crm"], stack.adapters["scm"]
    new = {"code": "GLOBEX", "name": "Globex", "addresses": [{"street": "5 Side St", "city": "Namur"}]}
    crm_id = crm.call("upsert_party", call(new)).result["id"]
    scm_id = scm.call("upsert_party", call(new)).result["id"]
    sale = quote(stack, 2, customer=crm_id)
    # Then its order waits (parked, with a reason that says what it waits for), and is not dead-lettered
    journal = stack.journal()
    try:
        waiting = wait_for("the order to wait", lambda: [
            d for d in journal.deliveries_for_events([e.id for e in journal.events_for(route="crm-order-changed")])
            if d.route == "crm-order-changed" and d.status == "parked" and f"crm:{crm_id}" in (d.last_error or "")],
            TIMEOUT)
        assert f"ironbus xref set customer <canonical> crm {crm_id}" in (waiting[0].last_error or "")
        assert not [d for d in journal.dead_letters(route="crm-order-changed") if f"crm:{crm_id}" in d.reason]
    finally:
        journal.close()
    assert purchases(stack, sale.order_id) == []
    # When the operator links the customer
    url = stack.journal_url
    assert cli.main(["xref", "set", "customer", "C-GLOBEX", "crm", str(crm_id), "--journal", url]) == 0
    assert cli.main(["xref", "set", "customer", "C-GLOBEX", "scm", str(scm_id), "--journal", url]) == 0
    # Then the order flows to the end by itself, at its next try
    wait_for("the SRM purchase", lambda: purchased_quantity(stack, sale.order_id) == 2 or None, TIMEOUT)
    [notice] = wait_for("the notice", lambda: notices(stack, "order_confirmed-", sale.order_id), TIMEOUT)
    assert notice["customer"] == {"id": "C-GLOBEX"}


def test_a_shadow_route_journals_what_it_would_deliver_and_delivers_nothing(stack: Stack, tmp_path: Path) -> None:
    # Given a pilot bus of its own that runs only the first hop of the shipped routes, in shadow mode
    doc = yaml.safe_load((REPO / "routes.yaml").read_text())
    doc["routes"] = [dict(r, mode="shadow") for r in doc["routes"] if r["name"] == "crm-order-changed"]
    (tmp_path / "routes.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    shutil.copytree(REPO / "mappings", tmp_path / "mappings")
    stack.stop_bus()
    pilot = Stack(tmp_path, routes=tmp_path / "routes.yaml")
    pilot.server, pilot.adapters = stack.server, stack.adapters
    main_journal = stack.journal()
    try:
        pilot.import_xref([XrefLink(r.entity, r.canonical_id, r.system, r.system_id)
                           for r in main_journal.xref_rows()])
    finally:
        main_journal.close()
    try:
        pilot.start_bus()
        # When a sale is quoted
        sale = quote(stack, 7)
        # Then the pilot's journal holds the update_demand payload it would have sent, with status shadow
        journal = pilot.journal()
        try:
            def shadowed() -> list[Any]:
                events = journal.events_for(key=sale.order_id)
                return [d for d in journal.deliveries_for_events([e.id for e in events]) if d.status == "shadow"]

            delivery = wait_for("the shadow delivery", shadowed, TIMEOUT)[0]
        finally:
            journal.close()
        assert delivery.target == "scm.update_demand"
        assert delivery.payload["reference"] == sale.order_id
        assert delivery.payload["lines"] == [{"product": str(stack.system_id("material", "scm")), "quantity": 7}]
        # And nothing reached the SCM
        assert pilot.runtime is not None and pilot.runtime.wait_idle(10)
        assert scm_demand(stack, sale.order_id) == 0
    finally:
        pilot.stop_bus()
        pilot.server, pilot.adapters = None, {}
        stack.start_bus()


def xref_check(stack: Stack, entity: str) -> tuple[int, list[dict[str, Any]]]:
    code, text = ironbus("xref", "check", "--entity", entity, "--json", "--journal", stack.journal_url,
                         "--routes", str(REPO / "routes.yaml"))
    return code, json.loads(text)["problems"]


def test_xref_check_reads_every_system_and_reports_records_outside_their_owner_and_missing(stack: Stack) -> None:
    # Given the demo's master data, linked everywhere: the shipped supplier is consistent
    code, problems = xref_check(stack, "supplier")
    assert [p for p in problems if p.get("canonical_id") == "S-BOLT"] == []
    # When a supplier is created in the SCM, which does not own suppliers (the SRM does)
    srm, scm = stack.adapters["srm"], stack.adapters["scm"]
    new = {"code": "S-GEARS", "name": "Gears & Co"}
    scm_id = str(scm.call("upsert_party", call(new)).result["id"])
    code, problems = xref_check(stack, "supplier")
    assert code == 1
    assert {"kind": "outside_owner", "system": "scm", "system_id": scm_id} in [
        {k: p[k] for k in ("kind", "system", "system_id")} for p in problems]
    # When it is linked there by hand, the owner is reported as missing it
    assert cli.main(["xref", "set", "supplier", "S-GEARS", "scm", scm_id, "--journal", stack.journal_url]) == 0
    code, problems = xref_check(stack, "supplier")
    assert [(p["kind"], p["system"]) for p in problems if p.get("canonical_id") == "S-GEARS"] == [("missing", "srm")]
    # Then once the owner has it, the sync route finds the SCM's record by its code, links both, and the supplier
    # is consistent across systems
    srm_id = str(srm.call("upsert_party", call(new)).result["id"])
    assert stack.runtime is not None
    xref = stack.runtime.journal.xref
    wait_for("S-GEARS linked in the SRM", lambda: xref.reverse("supplier", "srm", "S-GEARS"), TIMEOUT)
    code, problems = xref_check(stack, "supplier")
    assert [p for p in problems if p.get("canonical_id") == "S-GEARS" or p.get("system_id") in (srm_id, scm_id)] == []
