"""The ERP routes examples end to end: examples/odoo (Odoo as the SRM) and examples/erpnext (ERPNext as the SCM).

Each runs the real bus (journal, queue, workers, poll triggers) on the example's own routes.yaml and mappings,
with the ERP adapter talking to its local server over HTTP (tests/helpers/fake_odoo.py, fake_frappe.py). The
other corners of the triangle are recording stubs here (the Tryton flows have their own end-to-end tests in
tests/flows/test_flows.py); their events are put on the bus as the Tryton triggers would emit them, from
payloads captured from the Tryton adapter.
"""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog

import cli
from adapters.base import Adapter
from adapters.erpnext import ErpnextAdapter
from adapters.odoo import OdooAdapter
from adapters.signatures import frappe_signature
from adapters.stub import StubAdapter
from bus.config import load_config
from bus.envelope import Event
from bus.runtime import Runtime, RuntimeOptions, open_adapters
from tests.helpers.fake_frappe import FakeFrappe
from tests.helpers.fake_odoo import FakeOdoo
from tests.helpers.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]
TRYTON = ROOT / "tests" / "fixtures" / "tryton"
ODOO_ENV = {"ODOO_API_KEY": "odoo-test-key-0001"}
ERPNEXT_ENV = {"ERPNEXT_API_KEY": "a1b2c3d4e5f6a7b", "ERPNEXT_API_SECRET": "0f9e8d7c6b5a4f3"}


def fixture(name: str) -> Any:
    return json.loads((TRYTON / name).read_text())


def calls(stub: Adapter, operation: str) -> list[Any]:
    assert isinstance(stub, StubAdapter)
    return [c.payload for op, c in list(stub.calls) if op == operation]


@pytest.fixture(autouse=True)
def logs_outlive_capsys(monkeypatch: pytest.MonkeyPatch) -> None:
    """``cli.main`` points structlog at the sys.stderr of the moment; under capture that stream is closed after
    the test while later tests' bus threads still log (see tests/bus/test_followups.py)."""
    from bus import logs

    configure = logs.configure_logging

    def configure_logging(level: str = "info", fmt: str = "console") -> None:
        configure(level, fmt)
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.__stderr__))

    monkeypatch.setattr(logs, "configure_logging", configure_logging)


@pytest.fixture
def run_bus(tmp_path: Path) -> Iterator[Any]:
    started: list[Runtime] = []

    def start(routes: Path, adapters: dict[str, Adapter], links: list[tuple[str, str, str, str]]) -> Runtime:
        runtime = Runtime(routes, journal=f"sqlite:///{tmp_path}/ironbus.sqlite",
                          options=RuntimeOptions(workers=2, port=None, lease_seconds=5), adapters=adapters)
        for entity, canonical, system, system_id in links:
            runtime.journal.xref.link(entity, canonical, system, system_id)
        runtime.start()
        started.append(runtime)
        return runtime

    yield start
    for runtime in started:
        runtime.stop()


@pytest.mark.parametrize(("example", "env"), [("odoo", ODOO_ENV), ("erpnext", ERPNEXT_ENV)])
def test_example_passes_lint_and_its_route_tests(example: str, env: dict[str, str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    routes = str(ROOT / "examples" / example / "routes.yaml")
    assert cli.main(["lint", routes]) == 0
    assert cli.main(["test", str(ROOT / "examples" / example / "tests"), "--routes", routes]) == 0


def test_example_lint_names_the_missing_secret(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("ODOO_API_KEY", raising=False)
    assert cli.main(["lint", str(ROOT / "examples" / "odoo" / "routes.yaml")]) != 0
    assert "ODOO_API_KEY" in capsys.readouterr().err


def test_odoo_as_srm_end_to_end(run_bus: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ODOO_ENV.items():
        monkeypatch.setenv(name, value)
    odoo = FakeOdoo(api_key=ODOO_ENV["ODOO_API_KEY"]).start()
    try:
        supplier = odoo.add("res.partner", name="Bolt & Nut Supplies", ref="S-BOLT", supplier_rank=1)
        widget = odoo.add("product.product", name="Widget", default_code="W-100")
        srm = OdooAdapter("srm", {"url": odoo.url, "database": "acme", "api_key": ODOO_ENV["ODOO_API_KEY"],
                                  "triggers": {"purchase_orders_changed": {"interval": "100ms"}},
                                  "poll": {"overlap": 1}})
        adapters: dict[str, Adapter] = {"crm": StubAdapter("crm", {}), "scm": StubAdapter("scm", {}), "srm": srm,
                                        "notify": StubAdapter("notify", {})}
        runtime = run_bus(ROOT / "examples" / "odoo" / "routes.yaml", adapters, [
            ("material", "W-100", "scm", "1"), ("material", "W-100", "srm", str(widget)),
            ("supplier", "S-BOLT", "scm", "3"), ("supplier", "S-BOLT", "srm", str(supplier))])

        # The SCM's purchase request (as the Tryton trigger emits it) becomes a confirmed Odoo purchase order ...
        runtime.ingest([(Event(type="scm.purchase_requests_changed", source="ironbus/scm",
                                        data=fixture("scm_purchase_request.json")), "poll")])
        wait_until(lambda: [o for o in odoo.find("purchase.order", origin="SO-1/PR-1") if o["state"] == "purchase"],
                   10, "a confirmed Odoo purchase order for SO-1/PR-1")
        (order,) = odoo.find("purchase.order", origin="SO-1/PR-1")
        (line,) = odoo.find("purchase.order.line", order_id=order["id"])
        assert (line["product_id"], line["product_qty"], line["date_planned"]) == (widget, 10, "2026-12-09 00:00:00")
        # ... and purchase_order.created (the odoo emit map) confirms the change to the CRM.
        wait_until(lambda: calls(adapters["crm"], "add_sale_note"), 10, "the CRM note")
        (note,) = calls(adapters["crm"], "add_sale_note")
        assert note["number"] == "1" and "Purchase order P00001 placed with" in note["note"]

        # The supplier moves the line a week later in Odoo: the poll trigger turns it into a supplier issue.
        odoo.tick(5)
        odoo.execute("purchase.order", "write", [order["id"]],
                     {"vals": {"order_line": [[1, line["id"], {"date_planned": "2026-12-16 00:00:00"}]]}})
        wait_until(lambda: calls(adapters["scm"], "update_promised_date"), 10, "the SCM re-plan")
        assert calls(adapters["scm"], "update_promised_date") == [{
            "reference": "SO-1", "promised_date": "2026-12-16",
            "reason": "supplier Bolt & Nut Supplies reports purchase order P00001 delayed: expected arrival moved "
                      "to 2026-12-16"}]
        # The order as first placed was polled too, and was no issue: one re-plan only.
        assert len(odoo.find("purchase.order")) == 1
    finally:
        odoo.stop()


def test_erpnext_as_scm_end_to_end(run_bus: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ERPNEXT_ENV.items():
        monkeypatch.setenv(name, value)
    frappe = FakeFrappe(api_key=ERPNEXT_ENV["ERPNEXT_API_KEY"], api_secret=ERPNEXT_ENV["ERPNEXT_API_SECRET"]).start()
    try:
        frappe.add("Customer", customer_name="ACME Corporation", __newname="C-ACME")
        frappe.add("Supplier", supplier_name="Bolt & Nut Supplies", __newname="S-BOLT")
        frappe.add("Item", item_code="W-100", item_name="Widget", stock_uom="Nos",
                   item_defaults=[{"company": "ACME", "default_supplier": "S-BOLT"}])
        scm = ErpnextAdapter("scm", {"url": frappe.url, **{k.lower().removeprefix("erpnext_"): v
                                                           for k, v in ERPNEXT_ENV.items()},
                                     "triggers": {"material_request_items_changed": {"interval": "100ms"}}})
        srm = StubAdapter("srm", {"result": {"number": "7", "state": "confirmed", "reference": "SO-1/x"}})
        adapters: dict[str, Adapter] = {"crm": StubAdapter("crm", {}), "scm": scm, "srm": srm,
                                        "notify": StubAdapter("notify", {})}
        runtime = run_bus(ROOT / "examples" / "erpnext" / "routes.yaml", adapters, [
            ("customer", "C-ACME", "crm", "2"), ("customer", "C-ACME", "scm", "C-ACME"),
            ("material", "W-100", "crm", "1"), ("material", "W-100", "scm", "W-100"),
            ("material", "W-100", "srm", "1"), ("supplier", "S-BOLT", "scm", "S-BOLT"),
            ("supplier", "S-BOLT", "srm", "2")])

        # The CRM sale (as the Tryton trigger emits it) becomes a submitted Sales Order ...
        sale = fixture("crm_sale_processing.json")
        runtime.ingest([(Event(type="crm.sales_changed", source="ironbus/crm", data=sale), "poll")])
        wait_until(lambda: [d for d in frappe.docs["Sales Order"].values() if d["docstatus"] == 1], 10,
                   "a submitted Sales Order")
        (name,) = frappe.docs["Sales Order"]
        assert frappe.doc("Sales Order", name)["po_no"] == "SO-1"
        # ... which the customer's change updates in place (Update Items), keeping its name.
        changed = {**sale, "write_date": "2026-11-25T01:00:00", "lines": [{**sale["lines"][0], "quantity": 20.0}]}
        runtime.ingest([(Event(type="crm.sales_changed", source="ironbus/crm", data=changed), "poll")])
        wait_until(lambda: frappe.doc("Sales Order", name)["items"][0]["qty"] == 20, 10, "the Sales Order at 20")
        assert list(frappe.docs["Sales Order"]) == [name]

        # Planning raises a Material Request for it: the SRM is asked for a purchase order.
        frappe.tick(5)
        frappe.add("Material Request", material_request_type="Purchase", schedule_date="2026-12-09", docstatus=1,
                   items=[{"item_code": "W-100", "item_name": "Widget", "qty": 20, "uom": "Nos",
                           "sales_order": name}])
        wait_until(lambda: calls(srm, "create_purchase"), 10, "the SRM purchase")
        (purchase,) = calls(srm, "create_purchase")
        assert purchase["reference"] == "SO-1/MAT-MR-2026-00001/1" and purchase["party"] == "2"

        # The SRM's purchase arrives late: the Sales Order's delivery dates move, and the CRM hears of it
        # through plan.adjusted (the erpnext emit map).
        runtime.ingest([(Event(type="srm.purchases_changed", source="ironbus/srm",
                               data=fixture("srm_purchase_delayed.json")), "poll")])
        wait_until(lambda: calls(adapters["crm"], "update_promised_date"), 10, "the CRM promised date")
        assert {r["delivery_date"] for r in frappe.doc("Sales Order", name)["items"]} == {"2026-12-16"}
        (comment,) = frappe.docs["Comment"].values()
        assert comment["reference_name"] == name and "delayed" in comment["content"]
        (promised,) = calls(adapters["crm"], "update_promised_date")
        assert promised["number"] == "1" and promised["promised_date"] == "2026-12-16"
    finally:
        frappe.stop()



def test_frappe_webhooks_through_the_bus_http_edge(tmp_path: Path) -> None:
    """A signed Frappe webhook is accepted (202) and delivered; unsigned is 401, a signed non-JSON body 400."""
    secret = "webhook-secret-for-tests"
    routes = tmp_path / "routes.yaml"
    routes.write_text(textwrap.dedent(f"""\
        version: 1
        systems:
          scm:
            adapter: erpnext
            settings: {{url: "http://127.0.0.1:9", api_key: k, api_secret: s, webhook_secret: {secret}}}
          sink: {{adapter: stub}}
        routes:
          - name: submitted-orders
            from: scm.document_events
            filter: "docstatus == `1`"
            to: [sink.record]
        """))
    sink = StubAdapter("sink", {})
    adapters = open_adapters(load_config(routes))
    adapters["sink"] = sink
    runtime = Runtime(routes, journal=f"sqlite:///{tmp_path}/edge.sqlite", adapters=adapters,
                      options=RuntimeOptions(workers=1, port=0, triggers=False, lease_seconds=5))
    runtime.start()
    try:
        url = f"http://127.0.0.1:{runtime.port}/hooks/scm/document_events"
        body = json.dumps({"doctype": "Sales Order", "name": "SAL-ORD-2026-00001", "docstatus": 1}).encode()
        signed = {"X-Frappe-Webhook-Signature": frappe_signature(secret, body)}  # Frappe sends no Content-Type
        assert httpx.post(url, content=body, headers=signed).status_code == 202
        assert httpx.post(url, content=body).status_code == 401
        bad = b"{not json"
        answer = httpx.post(url, content=bad, headers={"X-Frappe-Webhook-Signature": frappe_signature(secret, bad)})
        assert answer.status_code == 400
        wait_until(lambda: calls(sink, "record"), 10, "the webhook's document at the sink")
        assert calls(sink, "record") == [json.loads(body)]
    finally:
        runtime.stop()
