"""The ERP examples' emit maps: the operation result the adapter gave (captured from it against the local
servers, tests/fixtures/odoo and tests/fixtures/erpnext) plus the event that was delivered (``event('data')``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bus.envelope import Event
from bus.mapping import Mapping
from bus.schemas import default_registry
from bus.xref import MemoryXref

REPO = Path(__file__).resolve().parents[2]
PROCUREMENT = {"request_id": "PR-1", "source_system": "scm", "changed_at": "2026-11-25T00:21:24Z",
               "status": "requested", "material": {"id": "W-100", "name": "Widget"},
               "supplier": {"id": "S-BOLT", "name": "Bolt & Nut Supplies"}, "quantity": 10, "unit": "C62",
               "needed_by": "2026-12-09", "origin_order_ids": ["SO-1"]}
ISSUE = {"issue_id": "SO-1/PR-1@2026-11-25 10:14:02", "source_system": "srm", "changed_at": "2026-11-25T10:14:02Z",
         "po_id": "P00001", "supplier": {"id": "S-BOLT", "name": "Bolt & Nut Supplies"}, "kind": "delayed",
         "reason": "expected arrival moved to 2026-12-16",
         "lines": [{"line_no": 1, "material_id": "W-100", "old_date": "2026-12-09", "new_date": "2026-12-16"}]}


def apply(name: str, result: Any, delivered: dict[str, Any], type_: str) -> Any:
    mapping = Mapping.load(REPO / "mappings" / name, xref=MemoryXref())
    return mapping.apply(result, event=Event(type=type_, source="ironbus/test", data=delivered, key="SO-1"))


def captured(vendor: str, name: str) -> Any:
    return json.loads((REPO / "tests" / "fixtures" / vendor / name).read_text())


def test_odoo_purchase_result_and_the_procurement_make_a_valid_purchase_order_created() -> None:
    result = captured("odoo", "upsert_purchase_order_result.json")
    doc = apply("odoo_purchase_to_po_created.yaml", result, PROCUREMENT, "procurement.requested")
    default_registry().validate("purchase_order.created", doc)
    assert (doc["po_id"], doc["status"], doc["srm_reference"]) == ("P00001", "confirmed", "SO-1/PR-1")
    assert doc["supplier"] == PROCUREMENT["supplier"] and doc["origin_order_ids"] == ["SO-1"]
    assert doc["lines"] == [{"line_no": 1, "material_id": "W-100", "quantity": 10, "unit": "C62",
                             "requested_date": "2026-12-09", "request_ids": ["PR-1"]}]


def test_an_rfq_still_waiting_for_approval_is_sent() -> None:
    result = {**captured("odoo", "upsert_purchase_order_result.json"), "state": "to approve"}
    assert apply("odoo_purchase_to_po_created.yaml", result, PROCUREMENT, "procurement.requested")["status"] == "sent"


def test_erpnext_reschedule_result_and_the_issue_make_plan_adjusted() -> None:
    result = captured("erpnext", "reschedule_sales_order_result.json")
    doc = apply("erpnext_reschedule_to_plan_adjusted.yaml", result, ISSUE, "supplier.issue")
    assert doc == {"order_id": "SO-1", "promised_date": "2026-12-16", "kind": "delayed", "issue_id": ISSUE["issue_id"],
                   "po_id": "P00001", "supplier": ISSUE["supplier"], "reason": ISSUE["reason"],
                   "lines": ISSUE["lines"], "scm_sale": "SAL-ORD-2026-00001"}
