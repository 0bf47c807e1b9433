"""examples/sap/routes.yaml end to end: the bus runs the example's routes, mappings and schemas, with SAP the
real OData peer (CAP) and the two Tryton systems replaced by recording stubs. A Tryton SCM purchase request
becomes an SAP purchase order (deep insert), the order SAP answered becomes purchase_order.created and a CRM
note; an item deleted in SAP comes back by polling as a supplier issue for the SCM."""

from __future__ import annotations

import json
from pathlib import Path

from adapters.sap import SapAdapter
from adapters.stub import StubAdapter
from bus.config import load_config
from bus.envelope import Event
from bus.runtime import Runtime, RuntimeOptions
from bus.triggers import TriggerPlan, TriggerRunner
from tests.helpers.wait import wait_until

from .conftest import PASSWORD, ROOT, USER, CapPeer

EXAMPLE = ROOT / "examples" / "sap" / "routes.yaml"
REQUEST = ROOT / "tests" / "fixtures" / "tryton" / "scm_purchase_request.json"


def test_example_routes_end_to_end(cap: CapPeer, tmp_path: Path) -> None:
    env = {"SAP_URL": cap.url, "SAP_USER": USER, "SAP_PASSWORD": PASSWORD}
    config = load_config(EXAMPLE, env=env)
    crm, scm = StubAdapter("crm", {}), StubAdapter("scm", {})
    s4 = SapAdapter("s4", config.systems["s4"].settings)
    runtime = Runtime(config, journal=f"sqlite:///{tmp_path}/ironbus.sqlite",
                      options=RuntimeOptions(workers=2, port=None, triggers=False, lease_seconds=5),
                      adapters={"crm": crm, "scm": scm, "s4": s4})
    xref = runtime.journal.xref
    for entity, canonical, links in [("material", "W-100", {"scm": "1", "s4": "TG11"}),
                                     ("supplier", "S-BOLT", {"scm": "3", "s4": "17300001"})]:
        for system, own in links.items():
            xref.link(entity, canonical, system, own)
    runtime.start()
    try:
        request = json.loads(REQUEST.read_text())
        runtime.ingest([(Event(type="scm.purchase_requests_changed", source="ironbus/scm", data=request), "poll")])
        wait_until(lambda: crm.calls, timeout=30, what="the CRM note about the SAP purchase order")
        [(operation, call)] = crm.calls
        assert operation == "add_sale_note"
        orders = cap.rows("API_PURCHASEORDER_PROCESS_SRV", "A_PurchaseOrder",
                          "?$filter=CorrespncInternalReference eq 'SO-1'"
                          "&$expand=to_PurchaseOrderItem($expand=to_ScheduleLine)")
        assert len(orders) == 1
        po = orders[0]
        assert po["Supplier"] == "17300001" and po["PurchaseOrderType"] == "NB" and po["CompanyCode"] == "1010"
        [item] = po["to_PurchaseOrderItem"]
        assert item["Material"] == "TG11" and item["to_ScheduleLine"][0]["ScheduleLineDeliveryDate"]
        assert po["PurchaseOrder"] in json.dumps(call.payload), "the note names SAP's purchase order number"

        # the buyer deletes the item in SAP: the poll finds it, the SCM re-plans the customer order
        cap.v4.patch(f"/API_PURCHASEORDER_PROCESS_SRV/A_PurchaseOrderItem(PurchaseOrder='{po['PurchaseOrder']}',"
                     f"PurchaseOrderItem='{item['PurchaseOrderItem']}')", json={"PurchasingDocumentDeletionCode": "L"})
        cap.change("API_PURCHASEORDER_PROCESS_SRV", f"A_PurchaseOrder('{po['PurchaseOrder']}')",
                   {"PurchasingProcessingStatus": "02"})
        plan = TriggerPlan("s4", "purchase_orders_changed")
        poller = TriggerRunner({"s4": s4}, [plan], runtime.journal,
                               lambda events: runtime.ingest([(e, "poll") for e in events]))
        poller.run_once(plan)
        wait_until(lambda: scm.calls, timeout=30, what="the SCM promised-date update")
        [(operation, call)] = scm.calls
        assert operation == "update_promised_date"
        assert call.payload["reference"] == "SO-1" and "rejected" in call.payload["reason"]
        poller.run_once(plan)  # nothing new: the supplier issue is not sent twice
        assert runtime.wait_idle(timeout=10)
        assert len(scm.calls) == 1
    finally:
        runtime.stop()


def test_example_routes_pass_lint() -> None:
    from bus.lint import lint

    issues = [str(i) for i in lint(EXAMPLE, env={"SAP_PASSWORD": "x"})]
    assert issues == []
