"""The emit maps of routes.yaml: an operation's result plus the event that was delivered (``event('data')``).

``ironbus test`` mapping tests cannot hand a mapping an event, so these run the mappings directly, with the real
result shapes of the Tryton operations (docs/adapters/tryton.md) and the canonical documents captured by the demo
(tests/fixtures/tryton/). No Tryton needed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bus.envelope import Event
from bus.mapping import Mapping
from bus.schemas import default_registry
from bus.xref import MemoryXref

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "tryton"


def apply(name: str, result: dict[str, Any], delivered: dict[str, Any], type_: str) -> Any:
    mapping = Mapping.load(REPO / "mappings" / name, xref=MemoryXref())
    event = Event(type=type_, source="ironbus/test", data=delivered, key="SO-1")
    return mapping.apply(result, event=event)


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


PROCUREMENT = {"request_id": "PR-1", "source_system": "scm", "changed_at": "2026-11-25T00:21:24.000000Z",
               "status": "requested", "material": {"id": "W-100", "name": "Widget W-100"},
               "supplier": {"id": "S-BOLT", "name": "Bolt & Nut Supplies"}, "quantity": 10, "unit": "C62",
               "needed_by": "2026-12-09", "origin_order_ids": ["SO-1"]}


def test_create_purchase_result_and_the_procurement_make_a_valid_purchase_order_created() -> None:
    result = {"id": 1, "number": "1", "reference": "SO-1/PR-1", "state": "processing", "party": 2, "created": True}
    doc = apply("tryton_srm_purchase_to_po_created.yaml", result, PROCUREMENT, "procurement.requested")
    default_registry().validate("purchase_order.created", doc)
    assert doc["po_id"] == "1" and doc["status"] == "processing"
    assert doc["supplier"] == {"id": "S-BOLT", "name": "Bolt & Nut Supplies"}
    assert doc["origin_order_ids"] == ["SO-1"] and doc["request_ids"] == ["PR-1"]
    assert doc["lines"] == [{"line_no": 1, "material_id": "W-100", "quantity": 10, "unit": "C62",
                             "requested_date": "2026-12-09", "request_ids": ["PR-1"]}]


def test_add_sale_note_result_and_the_confirmation_make_the_notice_the_demo_wrote() -> None:
    confirmed = {"confirmation_id": "1@SO-1", "source_system": "srm", "changed_at": "2026-11-25T00:21:25.983901Z",
                 "order_id": "SO-1", "result": "confirmed", "po_ids": ["1"], "promised_date": "2026-12-09",
                 "note": "Purchase order 1 placed with Bolt & Nut Supplies for 10 C62 of W-100; expected 2026-12-09."}
    result = {"id": 1, "number": "1", "reference": "ACME-PO-4711", "state": "quotation", "party": 2,
              "note_written": True}
    doc = apply("tryton_crm_note_to_notice.yaml", result, confirmed, "order.change.confirmed")
    assert doc == fixture("notice_requested_confirmed.json")


def test_a_rejected_confirmation_is_an_order_cancelled_notice() -> None:
    rejected = {"confirmation_id": "1@SO-1", "changed_at": "2026-11-25T00:00:00Z", "order_id": "SO-1",
                "result": "rejected", "note": "n"}
    doc = apply("tryton_crm_note_to_notice.yaml", {"party": 2}, rejected, "order.change.confirmed")
    assert doc["kind"] == "order_cancelled" and doc["subject"] == "Your order SO-1 is not confirmed"


def test_scm_promised_date_result_and_the_issue_make_plan_adjusted() -> None:
    issue = {"issue_id": "SO-1/PR-1@2026-11-25T00:21:31.245855", "po_id": "1", "kind": "delayed",
             "supplier": {"id": "S-BOLT", "name": "Bolt & Nut Supplies"}, "reason": "late",
             "lines": [{"line_no": 1, "new_date": "2026-12-16"}]}
    result = {"id": 1, "number": "1", "reference": "SO-1", "state": "processing", "party": 2,
              "promised_date": "2026-12-16", "shipping_date_written": False}
    doc = apply("tryton_scm_promised_date_to_plan_adjusted.yaml", result, issue, "supplier.issue")
    captured = fixture("plan_adjusted.json")
    assert doc == {**captured, "reason": "late", "issue_id": issue["issue_id"], "lines": issue["lines"]}


def test_crm_promised_date_result_and_plan_adjusted_make_a_delay_notice() -> None:
    plan = fixture("plan_adjusted.json")
    result = {"id": 1, "number": "1", "state": "processing", "party": 2, "promised_date": "2026-12-16",
              "shipping_date_written": False}
    doc = apply("tryton_crm_promised_date_to_notice.yaml", result, plan, "plan.adjusted")
    captured = fixture("notice_requested_delayed.json")
    assert {k: v for k, v in doc.items() if k not in ("changed_at", "notification_id")} == \
        {k: v for k, v in captured.items() if k not in ("changed_at", "notification_id")}
    assert doc["notification_id"].startswith("order_delayed-SO-1-")


REFUSAL = {"refusal_id": "SO-4@srm@PR-7@2026-12-07T02:00:00Z", "source_system": "srm",
           "changed_at": "2026-12-07T02:00:00Z", "order_id": "SO-4",
           "lines": [{"material_id": "W-100", "description": "Widget W-100", "wanted": 5, "kept": 9, "unit": "C62",
                      "reason": "already_received"}],
           "over_procured": 4, "note": "…"}


def test_procure_result_with_a_refusal_makes_a_purchase_order_created_that_says_so() -> None:
    result = {"id": 3, "number": "3", "reference": "grouped 2026-12-07", "state": "processing", "order_id": "SO-4",
              "request_id": "PR-7", "wanted": 5.0, "quantity": 9.0, "over_procured": 4.0, "created": False,
              "refused": [{"reason": "already_received", "wanted": 5.0, "kept": 9.0,
                           "detail": "9 already received from the supplier, cannot go down to 5"}]}
    doc = apply("tryton_srm_procure_to_po_created.yaml", result, dict(PROCUREMENT, quantity=5),
                "procurement.requested")
    default_registry().validate("purchase_order.created", doc)
    assert doc["origin_order_ids"] == ["SO-4"] and doc["over_procured"] == 4.0
    assert doc["refused"][0]["kept"] == 9.0


def test_the_refusal_notice_tells_the_customer_what_stays_in_plain_words() -> None:
    result = {"id": 4, "number": "4", "reference": "SO-4", "state": "processing", "party": 2, "note_written": True}
    doc = apply("tryton_crm_refusal_note_to_notice.yaml", result, REFUSAL, "order.change.refused")
    assert doc["kind"] == "order_change_refused" and doc["crm_customer"] == 2
    assert "Widget W-100 stays at 9 (you asked for 5)" in doc["body"]
    assert "PR-7" not in doc["body"] and "srm" not in doc["body"]
    assert doc["refused"] == REFUSAL["lines"]  # name and unit go on to the customer's message, which words them
