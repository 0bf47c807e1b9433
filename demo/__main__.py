"""``make demo``: the order change, complete, against three live Tryton databases, a local SMTP server and the bus.

1. start one trytond serving crm, scm and srm (fresh copies of the cached template), an SMTP server, and the bus
   on the shipped routes.yaml (purchases grouped per supplier for a window, ``IRONBUS_GROUPING_WINDOW``);
2. master data through the bus: suppliers in the SRM, materials in the SCM, customers in the CRM; the sync routes
   bring each to the other databases and link it in the xref (docs/masterdata.md); ACME reads English, Globex
   French;
3. ACME orders two lines; Globex orders one: both orders' requests land on ONE grouped SRM purchase, each line
   saying which order it serves;
4. ACME's confirmed order is raised, lowered, then loses a line (sale amendments in the CRM and the SCM; the SRM's
   purchase edited or amended): after each change the SCM demand and the SRM purchases equal the order;
5. the supplier delays the grouped purchase by a week: both CRM sales get the new date and each customer an e-mail
   in their own language; the demo prints the mailboxes and ``ironbus trace --key`` for ACME's order;
6. everything started is stopped on exit, error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import sys
import textwrap
import time

from bus.logs import configure_logging
from bus.masterdata import check_master_data
from demo.actors import CrmSale, SalesRep, Supplier
from demo.masterdata import Codes
from demo.stack import REPO, Stack, wait_for

WORK = REPO / "var" / "demo"
FLOW_TIMEOUT = 60.0
T0 = time.monotonic()
SECOND = Codes(customer="C-GLOBEX", customer_name="Globex SARL", material="W-200", material_name="Gear W-200")


def say(text: str = "") -> None:
    print(text, flush=True)


def step(title: str) -> None:
    say(f"\n[{time.monotonic() - T0:5.1f} s] == {title}")


def scm_demand(stack: Stack, order_id: str) -> dict[str, float]:
    """Planned quantity per material in the SCM for the order (every live sale of it)."""
    client = stack.adapters["scm"].client
    sales = client.search("sale.sale", ["OR", ["reference", "=", order_id], ["reference", "like", f"{order_id}+%"]])
    out: dict[str, float] = {}
    for line in client.search_read("sale.line", [["sale", "in", sales], ["type", "=", "line"],
                                                 ["sale.state", "!=", "cancelled"]], ["product.code", "quantity"]):
        code = line["product."]["code"]
        out[code] = out.get(code, 0.0) + float(line["quantity"])
    return {k: v for k, v in sorted(out.items()) if v > 0}


def srm_procured(stack: Stack, order_id: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in Supplier(stack.adapters["srm"]).purchases_serving(order_id):
        code = stack.adapters["srm"].client.read("product.product", [line["product"]], ["code"])[0]["code"]
        out[code] = out.get(code, 0.0) + float(line["quantity"])
    return {k: v for k, v in sorted(out.items()) if v > 0}


def show(quantities: dict[str, float]) -> str:
    return ", ".join(f"{q:g} × {code}" for code, q in quantities.items()) or "nothing"


def converge(stack: Stack, order_id: str, want: dict[str, float]) -> None:
    want = {k: v for k, v in sorted(want.items()) if v > 0}
    wait_for(f"the SCM demand of {order_id} to be {show(want)}", lambda: scm_demand(stack, order_id) == want,
             FLOW_TIMEOUT, progress=say)
    wait_for(f"the SRM purchases for {order_id} to be {show(want)}", lambda: srm_procured(stack, order_id) == want,
             FLOW_TIMEOUT, progress=say)
    say(f"   SCM demand {order_id}: {show(scm_demand(stack, order_id))}; "
        f"SRM bought for it: {show(srm_procured(stack, order_id))}")


def show_purchase(stack: Stack, purchase: int) -> None:
    client = stack.adapters["srm"].client
    row = client.read("purchase.purchase", [purchase], ["number", "state", "party.name"])[0]
    say(f"   SRM purchase {row['number']} with {row['party.']['name']} ({row['state']}):")
    for line in client.search_read("purchase.line", [["purchase", "=", purchase], ["type", "=", "line"]],
                                   ["product.code", "quantity", "note"], order=[("id", "ASC")]):
        say(f"      {line['quantity']:g} × {line['product.']['code']:<6} {line['note']}")


def order_changes(stack: Stack, rep: SalesRep, acme: CrmSale, products: dict[str, int]) -> None:
    w100, w200 = products["W-100"], products["W-200"]
    step("The rep confirms ACME's order; the customer then raises both lines (a sale amendment in the CRM)")
    rep.confirm(acme.id)
    rep.change_lines(acme.id, {w100: 14, w200: 6})
    converge(stack, acme.order_id, {"W-100": 14, "W-200": 6})
    step("The customer lowers both lines (another amendment; the SCM's sale and the SRM's lines follow)")
    rep.change_lines(acme.id, {w100: 8, w200: 3})
    converge(stack, acme.order_id, {"W-100": 8, "W-200": 3})
    step("The customer drops the W-200 line")
    rep.change_lines(acme.id, {w200: 0})
    converge(stack, acme.order_id, {"W-100": 8})


def supplier_delay(stack: Stack, rep: SalesRep, orders: list[CrmSale]) -> None:
    supplier = Supplier(stack.adapters["srm"])
    purchase = supplier.purchases_serving(orders[0].order_id)[0]["purchase"]
    wait_for("the grouped purchase to be released to the supplier (its window to pass)", lambda: stack.adapters[
        "srm"].client.read("purchase.purchase", [purchase], ["state"])[0]["state"] == "processing", FLOW_TIMEOUT,
        progress=say)
    show_purchase(stack, purchase)
    step("The supplier delays the whole grouped purchase by a week")
    old = supplier.delivery_date(purchase)
    new = old + dt.timedelta(days=7)
    supplier.delay_purchase(purchase, new)
    say(f"   delivery {old} -> {new}")
    for sale in orders:
        wait_for(f"the new promised date on {sale.order_id} in the CRM",
                 lambda sale=sale: comment_has(rep, sale, f"promised date {new.isoformat()}"), FLOW_TIMEOUT,
                 progress=say)
        say(f"   CRM sale {sale.number} ({sale.order_id}): {rep.read(sale.id)['comment'].splitlines()[-1]}")


def comment_has(rep: SalesRep, sale: CrmSale, text: str) -> bool:
    return text in (rep.read(sale.id).get("comment") or "")


def mails(stack: Stack, who: dict[str, str]) -> None:
    assert stack.mail is not None
    for name, address in who.items():
        received = stack.mail.received(address)
        say(f"\n   {name} <{address}> received {len(received)} e-mail(s):")
        for message in received:
            say(f"   ── {message.subject}")
            for text in textwrap.wrap(message.body, 100):
                say(f"      {text}")


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
        mail = stack.start_smtp()
        say(f"   SMTP server on 127.0.0.1:{mail.port}, mailbox {(WORK / 'mail').relative_to(REPO)}")

        step("Starting the bus on routes.yaml (embedded journal and queue in var/demo)")
        # Purchase requests for one supplier are grouped into one purchase for this long, then released.
        os.environ.setdefault("IRONBUS_GROUPING_WINDOW", "20s")
        runtime = stack.start_bus()
        say(f"   {len(runtime.config.routes)} routes; grouping window {os.environ['IRONBUS_GROUPING_WINDOW']}")

        step("Master data, each record created once in its owner; the bus syncs it and writes the xref")
        stack.provision_through_bus(Codes(), say=say)
        links = stack.provision_through_bus(SECOND, say=say)
        for link in links:
            say(f"   {link.entity:<9} {link.canonical_id:<9} = {link.system}:{link.system_id}")
        rep = SalesRep(stack.adapters["crm"].client)

        def crm_id(entity: str, code: str) -> int:
            return next(int(x.system_id) for x in links
                        if x.entity == entity and x.canonical_id == code and x.system == "crm")

        acme_id, globex_id = crm_id("customer", "C-ACME"), crm_id("customer", "C-GLOBEX")
        products = {code: crm_id("material", code) for code in ("W-100", "W-200")}
        rep.set_contact(acme_id, "purchasing@acme.example", "en")
        rep.set_contact(globex_id, "achats@globex.example", "fr")
        say("   CRM: ACME reads English (purchasing@acme.example), Globex French (achats@globex.example)")

        step("ACME asks for 10 × W-100 and 4 × W-200: the rep quotes it in the CRM")
        wanted = dt.date.today() + dt.timedelta(days=14)
        acme = rep.create_order(acme_id, {products["W-100"]: 10, products["W-200"]: 4}, wanted)
        converge(stack, acme.order_id, {"W-100": 10, "W-200": 4})
        step("Globex asks for 6 × W-100: same supplier, so the same (still open) SRM purchase")
        globex = rep.create_order(globex_id, {products["W-100"]: 6}, wanted)
        converge(stack, globex.order_id, {"W-100": 6})
        supplier = Supplier(stack.adapters["srm"])
        shared = {line["purchase"] for line in supplier.purchases_serving(acme.order_id)} & \
            {line["purchase"] for line in supplier.purchases_serving(globex.order_id)}
        for purchase in sorted(shared):
            show_purchase(stack, purchase)
        rep.confirm(globex.id)

        order_changes(stack, rep, acme, products)
        supplier_delay(stack, rep, [acme, globex])
        wait_for("the delay e-mails to both customers", lambda: all(
            any("livraison" in m.subject.lower() or "delivery date" in m.subject.lower() for m in mail.received(a))
            for a in ("purchasing@acme.example", "achats@globex.example")), FLOW_TIMEOUT, progress=say)
        stack.runtime.wait_idle(10) if stack.runtime else None
        step("What each customer received (SMTP mailbox)")
        mails(stack, {"ACME": "purchasing@acme.example", "Globex": "achats@globex.example"})
        step(f"ironbus trace --key {acme.order_id}")
        say(stack.trace(acme.order_id))
        step("ironbus xref check  (master data across the three databases)")
        say(master_data_report(stack))
        step(f"Done in {time.monotonic() - T0:.0f} s. Journal: {stack.journal_url}; outbox: "
             f"{stack.outbox.relative_to(REPO)}; mail: {(WORK / 'mail').relative_to(REPO)}")
    finally:
        stack.stop()


def _terminate(signum: int, frame: object) -> None:
    # SIGTERM (a CI job cancelled, `kill`): unwind like Ctrl-C so the finally blocks stop trytond (its own session,
    # so the signal does not reach it) and the SMTP server.
    raise KeyboardInterrupt


def main() -> int:
    configure_logging("error")
    signal.signal(signal.SIGTERM, _terminate)
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
