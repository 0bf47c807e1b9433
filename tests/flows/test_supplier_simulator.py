"""demo/suppliers.py against the buyer side the bus runs: purchase orders mapped from canonical documents and
sent by the x12, edifact and cxml adapters; the simulated suppliers answer (acknowledgements, a delayed
confirmation, a partial confirmation, ship notices); the answers come back through the adapters — the cXML ones
through the bus's real webhook server — and map to supplier.issue / shipment.notice."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.cxml import CxmlAdapter
from adapters.edifact import EdifactAdapter
from adapters.x12 import X12Adapter
from bus.envelope import Event
from bus.mapping import Mapping
from bus.metrics import Metrics
from bus.testing import make_call
from bus.webhooks import WebhookApp, WebhookServer, endpoints_for
from bus.xref import MemoryXref
from demo.suppliers import SimulatorSettings, SupplierSimulator
from tests.helpers.wait import wait_until

ROOT = Path(__file__).parents[2]
TODAY = dt.date(2024, 5, 2)
XREF = {"supplier": {"suppliers_x12": {"BOLT": "S-BOLT"}, "suppliers_edifact": {"NUTS": "S-NUTS"},
                     "suppliers_cxml": {"ACME": "S-ACME"}}}


def mapped(name: str, doc: Any) -> dict[str, Any]:
    return Mapping.load(ROOT / "mappings" / name, xref=MemoryXref.from_dict(XREF)).apply(doc)


def purchase_order(supplier: str) -> dict[str, Any]:
    return {"po_id": f"PO-{supplier}", "source_system": "srm", "changed_at": "2024-05-01T10:00:00Z",
            "status": "confirmed", "supplier": {"id": supplier}, "order_date": "2024-05-01", "currency": "USD",
            "lines": [{"line_no": 1, "material_id": "W-100", "supplier_part_id": "P-100", "quantity": 10,
                       "unit": "C62", "requested_date": "2024-05-20"},
                      {"line_no": 2, "material_id": "W-200", "quantity": 4, "unit": "C62"}]}


class Buyer:
    """The bus's side: three adapters, and the webhook server for what ACME posts."""

    def __init__(self, b2b: Path, acme_url: str) -> None:
        def folders(name: str) -> dict[str, str]:
            return {"kind": "directory", "outbox": str(b2b / name / "to-supplier"),
                    "inbox": str(b2b / name / "from-supplier")}
        self.x12 = X12Adapter("suppliers_x12", {"our_id": "IRONBUYER", "our_qualifier": "ZZ", "partners": {
            "BOLT": {"id": "BOLTCO", "qualifier": "ZZ", "transport": folders("bolt")}}})
        self.edifact = EdifactAdapter("suppliers_edifact", {"our_id": "IRONBUYER", "our_qualifier": "ZZ",
                                                            "partners": {"NUTS": {"id": "NUTSCO", "qualifier": "ZZ",
                                                                                  "transport": folders("nuts")}}})
        self.cxml = CxmlAdapter("suppliers_cxml", {
            "from": {"domain": "NetworkID", "identity": "AN-IRONBUYER"},
            "bill_to": {"Name": {"@xml:lang": "en", "#text": "Iron Buyer"}}, "suppliers": {"ACME": {
                "url": acme_url, "to": {"domain": "DUNS", "identity": "802661173"},
                "shared_secret": "acme-order-secret",
                "inbound": {"domain": "DUNS", "identity": "802661173", "shared_secret": "acme-post-secret"}}}})
        self.events: list[Event] = []

        async def ingest(events: list[Event]) -> None:
            self.events.extend(events)

        app = WebhookApp(endpoints_for("suppliers_cxml", self.cxml), ingest, lambda: (True, ""), metrics=Metrics())
        self.server = WebhookServer(app, "127.0.0.1", 0, graceful_timeout=2.0)
        for adapter in (self.x12, self.edifact, self.cxml):
            adapter.open()
        self.server.start()

    @property
    def hook_url(self) -> str:
        return f"{self.server.url}/hooks/suppliers_cxml/documents"

    def close(self) -> None:
        self.server.stop()
        for adapter in (self.x12, self.edifact, self.cxml):
            adapter.close()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Buyer, SupplierSimulator]]:
    simulator = SupplierSimulator(SimulatorSettings(b2b_dir=tmp_path, acme_port=0, today=lambda: TODAY))
    simulator.start()
    buyer = Buyer(tmp_path, simulator.acme_url)
    # the simulator posts to the buyer's webhook server, whose port is known only now
    object.__setattr__(simulator.settings, "buyer_cxml_url", buyer.hook_url)
    yield buyer, simulator
    buyer.close()
    simulator.stop()


def test_suppliers_answer_by_edi_and_cxml(world: tuple[Buyer, SupplierSimulator]) -> None:
    buyer, simulator = world
    buyer.x12.call("send", make_call(mapped("canonical_po_to_x12_850.yaml", purchase_order("S-BOLT"))))
    buyer.edifact.call("send", make_call(mapped("canonical_po_to_edifact_orders.yaml", purchase_order("S-NUTS"))))
    sent = buyer.cxml.call("order", make_call(mapped("canonical_po_to_cxml_order.yaml", purchase_order("S-ACME"))))
    assert sent.result["status"] == 200 and len(simulator.acme_orders) == 1

    said = simulator.step()
    assert "BOLT: 850 PO-S-BOLT answered with 855" in said and "NUTS: ORDERS PO-S-NUTS answered with ORDRSP" in said
    assert any(line.startswith("ACME: ConfirmationRequest for PO-S-ACME -> HTTP 200, cXML 200") for line in said)

    # X12: the 997 settles our 850; the 855 is the delayed confirmation; the 856 carries the same date.
    x12 = {p["document"]: p for _, p in buyer.x12.poll("received", None).records}
    assert set(x12) == {"997", "855", "856"} and all(p["status"] == "accepted" for p in x12.values())
    assert buyer.x12.store.items("awaiting:") == []
    issue = mapped("x12_855_to_supplier_issue.yaml", x12["855"])
    assert issue["kind"] == "delayed" and issue["po_id"] == "PO-S-BOLT"
    assert issue["lines"] == [{"line_no": 1, "supplier_part_id": "P-100", "unit": "C62", "old_quantity": 10,
                               "new_quantity": 10, "new_date": "2024-05-09"}]
    notice = mapped("x12_856_to_shipment_notice.yaml", x12["856"])
    assert notice["po_ids"] == ["PO-S-BOLT"] and notice["expected_date"] == "2024-05-09"

    # EDIFACT: CONTRL settles our ORDERS; the ORDRSP is the partial confirmation; DESADV ships what was confirmed.
    edifact = {p["document"]: p for _, p in buyer.edifact.poll("received", None).records}
    assert set(edifact) == {"CONTRL", "ORDRSP", "DESADV"}
    assert buyer.edifact.store.items("awaiting:") == []
    partial = mapped("edifact_ordrsp_to_supplier_issue.yaml", edifact["ORDRSP"])
    assert partial["kind"] == "partial" and partial["lines"][0]["new_quantity"] == 6
    assert mapped("edifact_desadv_to_shipment_notice.yaml", edifact["DESADV"])["lines"][0]["quantity"] == 6

    # cXML: both documents came through the webhook server and were answered 200 with a cXML Response.
    assert [(d, s, c) for d, s, c in simulator.acme_posted] == [("ConfirmationRequest", 200, "200"),
                                                                ("ShipNoticeRequest", 200, "200")]
    documents = {e.data["document"]: e.data for e in buyer.events}
    assert "acme-post-secret" not in repr(documents)
    delayed = mapped("cxml_confirmation_to_supplier_issue.yaml", documents["ConfirmationRequest"])
    assert delayed["kind"] == "delayed" and delayed["lines"][0]["new_date"] == "2024-05-12"
    assert mapped("cxml_ship_notice_to_shipment_notice.yaml", documents["ShipNoticeRequest"])["expected_date"] == \
        "2024-05-12"

    # The suppliers read our acknowledgements of their answers on their next round: nothing left waiting.
    simulator.step()
    wait_until(lambda: not simulator.bolt.station.store.items("awaiting:")
               and not simulator.nuts.station.store.items("awaiting:"), what="the suppliers to get our acks")
