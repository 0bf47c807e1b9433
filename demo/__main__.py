"""``make demo``: the two iron-triangle flows, end to end, against three live Tryton databases.

1. start one trytond serving crm, scm and srm (fresh copies of the cached template) and the bus on the shipped
   routes.yaml;
2. master data through the bus: the supplier created in the SRM, the material in the SCM, the customer in the CRM;
   the sync routes bring each to the other databases and link it in the xref (docs/masterdata.md);
3. flow 1 — a sales rep quotes 10 widgets to ACME: the SCM plans the demand, its purchase request becomes an SRM
   purchase order, and the CRM sale gets a note; the customer raises the quantity to 15: the extra demand goes
   the same way; the rep confirms the sale;
4. flow 2 — the supplier moves the delivery a week later: the SCM re-plans, the CRM sale gets the new promised
   date and the customer a notification;
5. after each flow, ``ironbus trace --key`` for the order; everything started is stopped on exit or Ctrl-C.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sys
import time

from bus.logs import configure_logging
from bus.masterdata import check_master_data
from demo.actors import CrmSale, SalesRep, Supplier
from demo.masterdata import Codes
from demo.stack import REPO, Stack, wait_for

WORK = REPO / "var" / "demo"
FLOW_TIMEOUT = 60.0
T0 = time.monotonic()


def say(text: str = "") -> None:
    print(text, flush=True)


def step(title: str) -> None:
    say(f"\n[{time.monotonic() - T0:5.1f} s] == {title}")


def scm_demand(stack: Stack, order_id: str) -> list[str]:
    client = stack.adapters["scm"].client
    domain = ["OR", ["reference", "=", order_id], ["reference", "like", f"{order_id}+%"]]
    sales = client.search_read("sale.sale", domain, ["reference", "number", "state"], order=[("id", "ASC")])
    out = []
    for sale in sales:
        lines = client.search_read("sale.line", [["sale", "=", sale["id"]], ["type", "=", "line"]], ["quantity"])
        quantity = sum(float(line["quantity"]) for line in lines)
        out.append(f"SCM sale {sale['number']} (reference {sale['reference']}): {quantity:g} u, {sale['state']}")
    return out


def comment_has(rep: SalesRep, sale: CrmSale, text: str) -> bool:
    return text in (rep.read(sale.id).get("comment") or "")


def flow_one(stack: Stack, rep: SalesRep) -> CrmSale:
    step("Flow 1 — order change. The sales rep quotes 10 × W-100 to ACME in the CRM")
    wanted = dt.date.today() + dt.timedelta(days=14)
    sale = rep.create_sale(stack.system_id("customer", "crm"), stack.system_id("material", "crm"), 10, wanted,
                           reference="ACME-PO-4711")
    say(f"   CRM sale {sale.number} is a quotation; the bus calls it {sale.order_id} (wanted by {wanted})")
    supplier = Supplier(stack.adapters["srm"])
    progress = say

    def purchases(count: int) -> list[dict[str, object]] | None:
        found = supplier.purchases_for(sale.order_id)
        return found if len(found) >= count else None

    found = wait_for(f"an SRM purchase for {sale.order_id}", lambda: purchases(1), FLOW_TIMEOUT, progress=progress)
    say(f"   SRM purchase {found[0]['number']} (reference {found[0]['reference']}) is {found[0]['state']}")
    for line in scm_demand(stack, sale.order_id):
        say(f"   {line}")
    wait_for("the note on the CRM sale", lambda: comment_has(rep, sale, "Purchase order"), FLOW_TIMEOUT,
             progress=progress)
    say(f"   CRM sale comment: {rep.read(sale.id)['comment'].splitlines()[-1]}")

    step("The customer wants 15 instead of 10: the rep edits the quotation (Tryton freezes confirmed lines)")
    rep.change_quantity(sale.id, 15)
    found = wait_for(f"a second SRM purchase for {sale.order_id}", lambda: purchases(2), FLOW_TIMEOUT,
                     progress=progress)
    say("   The new demand in the SCM (the increase goes on a supplementary sale):")
    for line in scm_demand(stack, sale.order_id):
        say(f"   {line}")
    say("   SRM purchases: " + ", ".join(f"{p['number']} ({p['reference']})" for p in found))
    wait_for("a second note on the CRM sale",
             lambda: (rep.read(sale.id).get("comment") or "").count("Purchase order") >= 2, FLOW_TIMEOUT,
             progress=progress)

    step("The rep confirms the sale")
    rep.confirm(sale.id)
    say(f"   CRM sale {sale.number} is {rep.read(sale.id)['state']}")
    notes = wait_for("the customer's confirmation notices", lambda: [
        p for p in stack.notifications() if p.name.startswith("order_confirmed-")][1:] or None, FLOW_TIMEOUT)
    say(f"   outbox: {', '.join(p.name for p in stack.notifications())}")
    del notes
    return sale


def flow_two(stack: Stack, rep: SalesRep, sale: CrmSale) -> None:
    step("Flow 2 — supplier issue. The supplier moves the first purchase a week later")
    supplier = Supplier(stack.adapters["srm"])
    purchase = supplier.purchases_for(sale.order_id)[0]
    old = supplier.delivery_date(int(str(purchase["id"])))
    new = old + dt.timedelta(days=7)
    supplier.delay(str(purchase["reference"]), new)
    say(f"   SRM purchase {purchase['number']}: delivery {old} -> {new}")
    wait_for("the new promised date on the CRM sale",
             lambda: comment_has(rep, sale, f"promised date {new.isoformat()}"), FLOW_TIMEOUT, progress=say)
    say(f"   CRM sale comment: {rep.read(sale.id)['comment'].splitlines()[-1]}")
    notice = wait_for("the customer's delay notice", lambda: [
        p for p in stack.notifications() if p.name.startswith("order_delayed-")], FLOW_TIMEOUT, progress=say)
    doc = json.loads(notice[0].read_text())
    say(f"   outbox/{notice[0].name}:")
    say(f"      subject: {doc['subject']}")
    say(f"      body:    {doc['body']}")


def master_data_report(stack: Stack) -> str:
    """What ``ironbus xref check`` says about the three databases."""
    # the bus's own adapters: configured from routes.yaml, whose systems say which records are master data
    assert stack.runtime is not None
    adapters = {name: stack.runtime.adapters[name] for name in ("crm", "scm", "srm")}
    journal = stack.journal()
    try:
        report = check_master_data(adapters, journal.xref_rows(), ownership=stack.runtime.config.master_data)
    finally:
        journal.close()
    lines = [f"   {entity:<9} {c['records']} records in {c['systems']} systems, {c['canonical']} canonical ids, "
             f"{c['problems']} problem(s)" for entity, c in report["summary"].items()]
    lines += [f"   {p['kind']}: {p['entity']} {p.get('canonical_id') or ''} {p.get('system') or ''} "
              f"{p.get('system_id') or ''} {p['detail']}".rstrip() for p in report["problems"]]
    return "\n".join(lines)


def run() -> None:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    stack = Stack(WORK)
    try:
        step("Starting Tryton (the first run builds and caches the databases, about a minute)")
        server = stack.start_tryton()
        say(f"   trytond {server.url} serving crm, scm, srm (up in {server.started_in:.1f} s); log {server.log_path}")

        step("Starting the bus on routes.yaml (embedded journal and queue in var/demo)")
        runtime = stack.start_bus()
        say(f"   {len(runtime.config.routes)} routes: " + ", ".join(r.name for r in runtime.config.routes))

        step("Master data, each record created once in its owner; the bus syncs it and writes the xref")
        links = stack.provision_through_bus(Codes(), say=say)
        for link in links:
            say(f"   {link.entity:<9} {link.canonical_id:<7} = {link.system}:{link.system_id}")

        rep = SalesRep(stack.adapters["crm"].client)
        sale = flow_one(stack, rep)
        stack.runtime.wait_idle(10) if stack.runtime else None
        step(f"ironbus trace --key {sale.order_id}  (after flow 1)")
        say(stack.trace(sale.order_id))

        flow_two(stack, rep, sale)
        stack.runtime.wait_idle(10) if stack.runtime else None
        step(f"ironbus trace --key {sale.order_id}  (after flow 2)")
        say(stack.trace(sale.order_id))
        step("ironbus xref check  (master data across the three databases)")
        say(master_data_report(stack))
        step(f"Done in {time.monotonic() - T0:.0f} s. Journal: {stack.journal_url}; outbox: "
             f"{stack.outbox.relative_to(REPO)}")
    finally:
        stack.stop()


def main() -> int:
    configure_logging("error")
    try:
        run()
    except KeyboardInterrupt:
        say("\ninterrupted; everything the demo started is stopped")
        return 130
    except Exception as exc:
        say(f"\ndemo failed: {type(exc).__name__}: {exc}")
        say(f"(journal in {WORK}; trytond log in {WORK / 'tryton' / 'trytond.log'})")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
