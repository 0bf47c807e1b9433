"""``make demo-b2b``: the triangle with its suppliers on B2B standards, live on Tryton.

The shipped ``examples/suppliers/routes.yaml`` sends each SRM purchase to its supplier the way that supplier
trades: BOLT by EDI X12 (850) over AS2 (the demo swaps its folder transport for an AS2 block with keys it makes
for both sides), NUTS by EDIFACT (ORDERS) over folders, ACME by cXML (OrderRequest over HTTP). The simulated
suppliers of :mod:`demo.suppliers` answer: BOLT acknowledges (997) and confirms a week late (855), NUTS
confirms part of the quantity (ORDRSP), ACME confirms ten days late by cXML (ConfirmationRequest to the bus's
webhook). The delayed confirmations move the SRM purchases, and flow 2 takes it from there: the SCM re-plans,
the CRM sale gets the new promised date, the customer is told.

1. start trytond (crm, scm, srm), load master data (three suppliers, a material each, one customer) and link
   it, including each supplier's partner name in its B2B system;
2. start the suppliers and the bus (embedded journal and queue in ``var/demo-b2b``, webhooks on a free port);
3. the sales rep quotes one order per material; the documents each supplier received are listed;
4. wait for the delays to reach the CRM and the customer, and print them; everything is stopped at the end.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from bus.config import load_config
from bus.logs import configure_logging
from bus.runtime import Runtime, RuntimeOptions
from demo.actors import CrmSale, SalesRep
from demo.masterdata import XrefLink, call
from demo.stack import REPO, Stack, wait_for
from demo.suppliers import As2Link, SimulatorSettings, SupplierSimulator

__all__ = ["B2bDemo", "Supplier", "SUPPLIERS", "main"]

ROUTES = REPO / "examples" / "suppliers" / "routes.yaml"
WORK = REPO / "var" / "demo-b2b"
FLOW_TIMEOUT = 90.0


@dataclass(frozen=True)
class Supplier:
    code: str
    name: str
    material: str
    channel: str  # the B2B system of examples/suppliers/routes.yaml that reaches it
    partner: str  # its name in that system's settings


SUPPLIERS = (Supplier("S-BOLT", "Bolt & Nut Supplies", "W-100", "suppliers_x12", "BOLT"),
             Supplier("S-NUTS", "Nuts GmbH", "W-200", "suppliers_edifact", "NUTS"),
             Supplier("S-ACME", "ACME Industrial", "W-300", "suppliers_cxml", "ACME"))


def _identity(name: str, folder: Path) -> tuple[str, str]:
    """A throwaway AS2 identity for the demo: (key file, certificate file), RSA 2048, self-signed."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    key_file, cert_file = folder / f"{name.lower()}.key.pem", folder / f"{name.lower()}.cert.pem"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(key_file), str(cert_file)


def _routes_with_bolt_over_as2(work: Path, bolt_url: str, ours: tuple[str, str], bolt_certificate: str) -> Path:
    """examples/suppliers/routes.yaml with BOLT's folder transport swapped for AS2, written beside the journal
    (its mapping paths made absolute, so they resolve from there)."""
    doc = yaml.safe_load(ROUTES.read_text())

    def absolute(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: str((ROUTES.parent / v).resolve()) if k in ("map", "emit_map") and isinstance(v, str)
                    else absolute(v) for k, v in node.items()}
        return [absolute(item) for item in node] if isinstance(node, list) else node

    doc["routes"] = absolute(doc["routes"])
    partner = doc["systems"]["suppliers_x12"]["settings"]["partners"]["BOLT"]
    partner["transport"] = {"kind": "as2", "url": bolt_url, "as_from": "IRONBUYER", "as_to": "BOLTAS2",
                            "key": ours[0], "certificate": ours[1], "partner_certificate": bolt_certificate,
                            "mdn": "sync", "timeout": 20}
    # Documents BOLT pushes over AS2 arrive on the x12 system's webhook trigger `pushed`: the routes that read
    # its polled documents read the pushed ones too.
    pushed = [{**route, "name": f"{route['name']}-as2", "from": "suppliers_x12.pushed"} for route in doc["routes"]
              if route.get("from") == "suppliers_x12.received"]
    doc["routes"].extend(pushed)
    routes = work / "routes.yaml"
    routes.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    return routes


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class B2bDemo:
    """The stack, the simulated suppliers and the bus of the B2B scenario; :meth:`stop` ends all of it."""

    def __init__(self, work: Path, say: Callable[[str], None] = lambda _: None) -> None:
        self.work = work
        self.say = say
        self.stack = Stack(work, routes=ROUTES)
        self.simulator: SupplierSimulator | None = None
        self.runtime: Runtime | None = None
        self.links: list[XrefLink] = []

    # -- setup -------------------------------------------------------------------------------------------
    def provision(self) -> list[XrefLink]:
        """Suppliers in the SCM and the SRM, a material per supplier (supply on sale in the SCM), the customer."""
        links: list[XrefLink] = []

        def upsert(system: str, operation: str, payload: dict[str, object]) -> str:
            return str(self.stack.adapters[system].call(operation, call(payload)).result["id"])

        for s in SUPPLIERS:
            scm_id = upsert("scm", "upsert_party", {"code": s.code, "name": s.name})
            srm_id = upsert("srm", "upsert_party", {"code": s.code, "name": s.name})
            links += [XrefLink("supplier", s.code, "scm", scm_id), XrefLink("supplier", s.code, "srm", srm_id),
                      XrefLink("supplier", s.code, s.channel, s.partner)]
            product = {"code": s.material, "name": f"Part {s.material}", "list_price": "10.00"}
            links.append(XrefLink("material", s.material, "crm", upsert("crm", "upsert_product", product)))
            links.append(XrefLink("material", s.material, "scm", upsert("scm", "upsert_product", {
                **product, "supply_on_sale": "always",
                "suppliers": [{"party": scm_id, "lead_time_days": 3, "price": "4.00"}]})))
            links.append(XrefLink("material", s.material, "srm", upsert("srm", "upsert_product", {
                **product, "suppliers": [{"party": srm_id, "lead_time_days": 3, "price": "4.00",
                                          "code": f"P-{s.material}"}]})))
        customer = {"code": "C-ACME", "name": "ACME Corporation",
                    "addresses": [{"street": "1 Harbour Road", "postal_code": "4000", "city": "Liège"}]}
        for system in ("crm", "scm"):
            links.append(XrefLink("customer", "C-ACME", system, upsert(system, "upsert_party", customer)))
        self.links = links
        self.stack.links = links
        self.stack.import_xref(links)
        return links

    def start(self) -> None:
        server = self.stack.start_tryton()
        self.say(f"   trytond {server.url} serving crm, scm, srm")
        for link in self.provision():
            self.say(f"   {link.entity:<9} {link.canonical_id:<7} = {link.system}:{link.system_id}")
        port = _free_port()
        b2b = self.work / "b2b"
        ours = _identity("IRONBUYER", self.work / "keys")
        bolt = _identity("BOLTAS2", self.work / "keys")
        self.simulator = SupplierSimulator(SimulatorSettings(
            b2b_dir=b2b, acme_port=0, buyer_cxml_url=f"http://127.0.0.1:{port}/hooks/suppliers_cxml/documents",
            bolt_as2=As2Link(bus_hook=f"http://127.0.0.1:{port}/hooks/suppliers_x12/pushed", bolt_key=bolt[0],
                             bolt_certificate=bolt[1], buyer_certificate=ours[1])))
        self.simulator.start(background=True, interval=0.5)
        routes = _routes_with_bolt_over_as2(self.work, self.simulator.bolt.as2_url, ours, bolt[1])
        os.environ.update(TRYTON_URL=server.url, IRONBUS_OUTBOX=str(self.stack.outbox), IRONBUS_B2B=str(b2b),
                          ACME_CXML_URL=self.simulator.acme_url)
        self.runtime = Runtime(load_config(routes), journal=self.stack.journal_url,
                               options=RuntimeOptions(workers=3, port=port, triggers=True))
        self.runtime.start()
        self.stack.runtime = self.runtime
        self.say(f"   the bus: {len(self.runtime.config.routes)} routes, webhooks on 127.0.0.1:{port}; "
                 f"suppliers BOLT (X12 over AS2) at {self.simulator.bolt.as2_url}, NUTS (EDIFACT) in "
                 f"{b2b.relative_to(self.work.parent)}, ACME (cXML) at {self.simulator.acme_url}")

    # -- the scenario ------------------------------------------------------------------------------------
    def order(self, material: str, quantity: float) -> CrmSale:
        rep = SalesRep(self.stack.adapters["crm"].client)
        product = next(int(x.system_id) for x in self.links
                       if x.entity == "material" and x.canonical_id == material and x.system == "crm")
        # wanted in 4 days: the suppliers' confirmations (a week, ten days) come back later than that
        return rep.create_sale(self.stack.system_id("customer", "crm"), product, quantity,
                               dt.date.today() + dt.timedelta(days=4))

    def promised(self, sale: CrmSale) -> str | None:
        comment = SalesRep(self.stack.adapters["crm"].client).read(sale.id).get("comment") or ""
        return next((line for line in comment.splitlines() if "promised date" in line), None)

    def purchased(self, sale: CrmSale) -> list[float]:
        """The quantities of the SRM purchase lines bought for ``sale`` (reference ``<order>/<request>``): what
        the supplier confirmed, once its confirmation amended them."""
        client = self.stack.adapters["srm"].client
        ids = client.search("purchase.purchase", [["reference", "like", f"{sale.order_id}/%"],
                                                  ["state", "!=", "cancelled"]])
        return [float(x["quantity"]) for x in client.search_read(
            "purchase.line", [["purchase", "in", ids], ["type", "=", "line"]], ["quantity"])] if ids else []

    def notices(self, order_id: str) -> list[dict[str, object]]:
        docs = [json.loads(p.read_text()) for p in self.stack.notifications()]
        return [d for d in docs if d.get("order_id") == order_id]

    def stop(self) -> None:
        try:
            if self.simulator is not None:
                self.simulator.stop()
        finally:
            self.stack.stop()


def run(say: Callable[[str], None]) -> None:
    t0 = time.monotonic()

    def step(title: str) -> None:
        say(f"\n[{time.monotonic() - t0:5.1f} s] == {title}")

    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    demo = B2bDemo(WORK, say)
    try:
        step("Starting Tryton, the master data, the simulated suppliers and the bus on examples/suppliers")
        demo.start()
        step("The sales rep quotes one order per material: each goes to its supplier in that supplier's standard")
        sales = {s.partner: demo.order(s.material, 10) for s in SUPPLIERS}
        for partner, sale in sales.items():
            say(f"   {sale.order_id}: 10 × {next(s.material for s in SUPPLIERS if s.partner == partner)} "
                f"→ {partner}")
        assert demo.simulator is not None
        sim = demo.simulator
        wait_for("BOLT's and NUTS's answers", lambda: any(x.startswith("BOLT: 850") for x in sim.said)
                 and any(x.startswith("NUTS: ORDERS") for x in sim.said), FLOW_TIMEOUT, progress=say)
        wait_for("ACME's OrderRequest", lambda: sim.acme_orders, FLOW_TIMEOUT, progress=say)
        for line in list(sim.said):
            say(f"   {line}")
        say(f"   ACME received {len(sim.acme_orders)} cXML OrderRequest(s) and answered each with a cXML Response 200")
        step("The suppliers answer: BOLT confirms a week late by X12 855 over AS2, ACME ten days late by cXML")
        for partner in ("BOLT", "ACME"):
            sale = sales[partner]
            line = wait_for(f"{partner}'s delay in the CRM sale {sale.order_id}", lambda s=sale: demo.promised(s),
                            FLOW_TIMEOUT, progress=say)
            say(f"   CRM {sale.order_id}: {line.split('] ', 1)[-1]}")
            # a supplier that confirms again (an order update, a ship notice) may move the date twice: the newest
            notice = wait_for(f"the customer notice for {sale.order_id}",
                              lambda s=sale: [n for n in demo.notices(s.order_id)
                                              if n.get("kind") == "order_delayed"], FLOW_TIMEOUT, progress=say)[-1]
            say(f"   customer notice: {notice.get('subject')}: {notice.get('body')}")
        step("NUTS confirms 6 of the 10 by EDIFACT ORDRSP: the SRM purchase is amended, the customer is told")
        nuts = sales["NUTS"]
        bought = wait_for(f"the SRM purchase for {nuts.order_id} amended to what NUTS confirmed",
                          lambda: [q for q in demo.purchased(nuts) if q < 10], FLOW_TIMEOUT, progress=say)
        say(f"   SRM purchase for {nuts.order_id}: {bought[0]:g} of 10 (purchase_amendment)")
        short = wait_for(f"the shortfall notice for {nuts.order_id}",
                         lambda: [n for n in demo.notices(nuts.order_id) if n.get("kind") == "order_partial"],
                         FLOW_TIMEOUT, progress=say)[-1]
        say(f"   customer notice: {short.get('subject')}: {short.get('body')}")
        say("   cXML documents ACME posted to the bus: "
            + ", ".join(f"{doc} (HTTP {status}, cXML {code})" for doc, status, code in sim.acme_posted))
        step(f"Done in {time.monotonic() - t0:.0f} s. Journal: {demo.stack.journal_url}; "
             f"B2B folders: {WORK / 'b2b'}")
    finally:
        demo.stop()


def main() -> int:
    configure_logging("error")

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # unwinds through run()'s finally: the suppliers, the bus and trytond stop

    signal.signal(signal.SIGTERM, terminate)
    say = print
    try:
        run(lambda text: say(text, flush=True))
    except KeyboardInterrupt:
        print("\ninterrupted; everything the demo started is stopped")
        return 130
    except Exception as exc:
        print(f"\ndemo failed: {type(exc).__name__}: {exc}\n(journal and B2B folders in {WORK})")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
