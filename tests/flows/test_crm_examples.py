"""The CRM example routes end to end: examples/salesforce-triangle and examples/dynamics-triangle on the real
runtime (journal, queue, workers, trigger threads), with the CRM played by local protocol servers — a Salesforce
REST API over HTTP plus its Pub/Sub API as a real gRPC server, and a Dataverse Web API — and the SCM and SRM by
recording stubs (the Tryton legs of the triangle are covered by test_flows.py).

Flow 1: an order change in the CRM reaches the SCM's demand; the purchase order that covers it becomes a Task /
a note on the CRM order and a customer notification. Flow 2: a new plan becomes the order's promised date in the
CRM and a customer notification.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import cli
from adapters.stub import StubAdapter
from bus.config import load_config
from bus.envelope import Event
from bus.runtime import Runtime, RuntimeOptions, open_adapters
from tests.helpers.dataverse import FakeDataverse
from tests.helpers.salesforce import ORDER_FIELDS, ORG_ID, FakeSalesforce, change_event, schema_from_sample
from tests.helpers.wait import wait_until

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 90.0  # a deadline on a condition, not a sleep: generous for the loaded 2-core CI machine

PO_CREATED = {"po_id": "PO-7", "source_system": "srm", "changed_at": "2026-11-25T00:21:25Z", "status": "processing",
              "supplier": {"id": "S-BOLT", "name": "Bolt & Nut Supplies"},
              "lines": [{"line_no": 1, "material_id": "W-100", "quantity": 10, "unit": "C62",
                         "requested_date": "2026-12-09"}]}


@pytest.mark.parametrize("example", ["salesforce-triangle", "dynamics-triangle"])
def test_the_example_routes_pass_lint(example: str) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["lint", str(REPO / "examples" / example / "routes.yaml")])
    assert code == 0, out.getvalue()
    assert "OK" in out.getvalue()


def start(routes: Path, tmp_path: Path) -> Runtime:
    config = load_config(routes)
    adapters = open_adapters(config, only={"crm", "notify"})
    adapters["scm"] = StubAdapter("scm", {})
    adapters["srm"] = StubAdapter("srm", {})
    runtime = Runtime(config, journal=f"sqlite:///{tmp_path}/journal.sqlite", adapters=adapters,
                      options=RuntimeOptions(workers=2, port=None, triggers=True, lease_seconds=10))
    return runtime


def link(runtime: Runtime, crm_customer: str, crm_material: str) -> None:
    xref = runtime.journal.xref
    xref.link("customer", "C-ACME", "crm", crm_customer)
    xref.link("customer", "C-ACME", "scm", "12")
    xref.link("material", "W-100", "crm", crm_material)
    xref.link("material", "W-100", "scm", "31")


def notifications(outbox: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(outbox.glob("*.json"))] if outbox.is_dir() else []


def demand(runtime: Runtime) -> list[Any]:
    scm = runtime.adapters["scm"]
    assert isinstance(scm, StubAdapter)
    return [call.payload for name, call in scm.calls if name == "update_demand"]


@pytest.fixture
def salesforce(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSalesforce]:
    with FakeSalesforce() as sf:
        key = tmp_path / "jwt.key"
        key.write_text(sf.private_key)
        for name, value in {"SALESFORCE_LOGIN_URL": sf.url, "SALESFORCE_ORG_ID": ORG_ID,
                            "SALESFORCE_CLIENT_ID": sf.client_id, "SALESFORCE_USERNAME": sf.username,
                            "SALESFORCE_KEY_FILE": str(key), "SALESFORCE_PUBSUB_URL": sf.pubsub.url,
                            "IRONBUS_OUTBOX": str(tmp_path / "outbox")}.items():
            monkeypatch.setenv(name, value)
        yield sf


def test_salesforce_triangle(salesforce: FakeSalesforce, tmp_path: Path) -> None:
    sf = salesforce
    order_id = "801SM00000A1b2cYAB"
    sf.records["Order"] = {order_id: {"Id": order_id, "OrderNumber": "00000100", "Status": "Draft",
                                      "AccountId": "001SM0000000iibYAA", "EffectiveDate": "2026-11-25",
                                      "PoNumber": "ACME-PO-4711", "CreatedDate": "2026-11-25T09:00:00.000+0000",
                                      "LastModifiedDate": "2026-11-25T10:30:00.000+0000",
                                      "SystemModstamp": "2026-11-25T10:30:00.000+0000"}}
    sf.records["OrderItem"] = {"802SM00000XyZ1aYAF": {"Id": "802SM00000XyZ1aYAF", "OrderId": order_id,
                                                      "OrderItemNumber": "0000000001", "Quantity": 10.0,
                                                      "Product2Id": "01tSM000000AbCdYAK", "ServiceDate": "2026-12-09"}}
    runtime = start(REPO / "examples" / "salesforce-triangle" / "routes.yaml", tmp_path)
    link(runtime, "001SM0000000iibYAA", "01tSM000000AbCdYAK")
    runtime.start()
    try:
        # Flow 1: the Order is activated in Salesforce; CDC brings the change over the Pub/Sub API.
        wait_until(lambda: sf.pubsub.first_requests, TIMEOUT, "the CDC subscription")
        schema = schema_from_sample("Order", ORDER_FIELDS)
        sf.records["Order"][order_id]["Status"] = "Activated"
        sf.pubsub.publish("/data/OrderChangeEvent", sf.pubsub.add_schema(schema),
                          change_event("Order", schema, "UPDATE", [order_id], {"Status": "Activated"}, 11))
        wait_until(lambda: demand(runtime), TIMEOUT, "the SCM demand")
        assert demand(runtime) == [{"reference": order_id, "party": "12", "sale_date": "2026-11-25",
                                    "description": f"Customer order {order_id} (ACME-PO-4711)",
                                    "lines": [{"product": "31", "quantity": 10}]}]
        # ... the SRM's purchase order covers it: a Task on the Order, and the customer is told.
        runtime.ingest([(Event(type="purchase_order.created", source="ironbus/srm",
                               data={**PO_CREATED, "origin_order_ids": [order_id]}), "send")])
        wait_until(lambda: sf.records.get("Task"), TIMEOUT, "the Task on the Order")
        (task,) = sf.records["Task"].values()
        assert task["WhatId"] == order_id and task["Status"] == "Completed" and "PO-7" in task["Description"]
        outbox = tmp_path / "outbox"
        wait_until(lambda: notifications(outbox), TIMEOUT, "the order-confirmed notification")
        (confirmed,) = notifications(outbox)
        assert confirmed["kind"] == "order_confirmed" and confirmed["customer"] == {"id": "C-ACME"}
        assert confirmed["subject"] == "Your order 00000100 is confirmed"
        # Flow 2: a supplier delay re-planned by the SCM becomes the Order's promised date.
        runtime.ingest([(Event(type="plan.adjusted", source="ironbus/scm",
                               data={"order_id": order_id, "promised_date": "2026-12-19", "kind": "delayed",
                                     "po_id": "PO-7", "supplier": {"id": "S-BOLT", "name": "Bolt & Nut Supplies"}}),
                         "send")])
        wait_until(lambda: len(notifications(outbox)) == 2, TIMEOUT, "the delay notification")
        assert sf.records["Order"][order_id]["Promised_Date__c"] == "2026-12-19"
        delayed = next(n for n in notifications(outbox) if n["kind"] == "order_delayed")
        assert delayed["promised_date"] == "2026-12-19" and delayed["customer"] == {"id": "C-ACME"}
        assert runtime.wait_idle(TIMEOUT)
    finally:
        runtime.stop()


@pytest.fixture
def dataverse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDataverse]:
    with FakeDataverse() as dv:
        for name, value in {"DYNAMICS_URL": dv.url, "DYNAMICS_TENANT_ID": dv.tenant,
                            "DYNAMICS_CLIENT_ID": dv.client_id, "DYNAMICS_CLIENT_SECRET": dv.client_secret,
                            "DYNAMICS_TOKEN_URL": dv.settings()["token_url"],
                            "IRONBUS_OUTBOX": str(tmp_path / "outbox")}.items():
            monkeypatch.setenv(name, value)
        yield dv


def test_dynamics_triangle(dataverse: FakeDataverse, tmp_path: Path) -> None:
    dv = dataverse
    customer = "60c4e274-0d87-e711-80e5-00155db19e6d"
    dv.put("salesorders", {"ordernumber": "ORD-OLD", "statecode": 0})  # before the bus: initial: skip
    runtime = start(REPO / "examples" / "dynamics-triangle" / "routes.yaml", tmp_path)
    link(runtime, customer, "a1b2c3d4-0d87-e711-80e5-00155db19e6d")
    runtime.start()
    try:
        wait_until(lambda: any("$deltatoken" in r[1] for r in dv.requests), TIMEOUT, "the first delta link")
        order_id = dv.put("salesorders", {"ordernumber": "ORD-01001", "name": "ACME widgets", "statecode": 1,
                                          "_customerid_value": customer, "submitdate": "2026-11-25",
                                          "requestdeliveryby": "2026-12-09", "createdon": "2026-11-25T09:00:00Z"})
        wait_until(lambda: demand(runtime), TIMEOUT, "the SCM demand")
        assert demand(runtime) == [{"reference": order_id, "party": "12", "sale_date": "2026-11-25",
                                    "shipping_date": "2026-12-09", "description": f"Customer order {order_id}"}]
        runtime.ingest([(Event(type="purchase_order.created", source="ironbus/srm",
                               data={**PO_CREATED, "origin_order_ids": [order_id]}), "send")])
        wait_until(lambda: dv.rows.get("annotations"), TIMEOUT, "the note on the sales order")
        (note,) = dv.rows["annotations"].values()
        assert note["objectid_salesorder@odata.bind"] == f"/salesorders({order_id})" and "PO-7" in note["notetext"]
        outbox = tmp_path / "outbox"
        wait_until(lambda: notifications(outbox), TIMEOUT, "the order-confirmed notification")
        (confirmed,) = notifications(outbox)
        assert confirmed["customer"] == {"id": "C-ACME"} and confirmed["subject"] == "Your order ORD-01001 is confirmed"
        runtime.ingest([(Event(type="plan.adjusted", source="ironbus/scm",
                               data={"order_id": order_id, "promised_date": "2026-12-19", "kind": "delayed",
                                     "po_id": "PO-7", "supplier": {"id": "S-BOLT"}}), "send")])
        wait_until(lambda: len(notifications(outbox)) == 2, TIMEOUT, "the delay notification")
        assert dv.rows["salesorders"][order_id]["ironbus_promiseddate"] == "2026-12-19"
        delayed = next(n for n in notifications(outbox) if n["kind"] == "order_delayed")
        assert delayed["customer"] == {"id": "C-ACME"} and "ORD-01001" in delayed["subject"]
        assert runtime.wait_idle(TIMEOUT)
    finally:
        runtime.stop()
