"""The erpnext adapter on the wire against a local Frappe (tests/helpers/fake_frappe.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from adapters.base import Adapter, WebhookRequest
from adapters.erpnext import ErpnextAdapter
from adapters.signatures import frappe_signature
from bus.envelope import Event
from bus.errors import ConfigError, PermanentError, TransientError, WebhookRejected
from bus.journal import Journal
from bus.testing import AdapterContract, make_call
from bus.triggers import TriggerPlan, TriggerRunner
from tests.helpers.fake_frappe import FakeFrappe, FrappeError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "erpnext"
VECTOR = json.loads((FIXTURES / "webhook_signature_test_vector_COMPUTED.json").read_text())
KEY, SECRET = "a1b2c3d4e5f6a7b", "0f9e8d7c6b5a4f3"


@pytest.fixture
def frappe() -> Iterator[FakeFrappe]:
    server = FakeFrappe(api_key=KEY, api_secret=SECRET).start()
    server.set_clock("2026-11-24 08:00:00")
    server.add("Customer", customer_name="ACME Corp", __newname="C-ACME", customer_type="Company")
    server.add("Supplier", supplier_name="Bolt Supplies", __newname="S-BOLT")
    server.add("Item", item_code="W-100", item_name="Widget", stock_uom="Nos")
    server.add("Item", item_code="G-200", item_name="Gadget", stock_uom="Nos")
    yield server
    server.stop()


def settings(server: FakeFrappe, **extra: Any) -> dict[str, Any]:
    return {"url": server.url, "api_key": KEY, "api_secret": SECRET, "webhook_secret": VECTOR["webhook_secret"],
            "timeout": 5, **extra}


@pytest.fixture
def adapter(frappe: FakeFrappe) -> Iterator[ErpnextAdapter]:
    made = ErpnextAdapter("scm", settings(frappe))
    made.open()
    yield made
    made.close()


def so(reference: str = "SO-1001", **extra: Any) -> dict[str, Any]:
    return {"reference": reference, "customer": "C-ACME", "date": "2026-12-01", "submit": True,
            "items": [{"item_code": "W-100", "qty": 5, "rate": 10}], **extra}


def signed(body: bytes, secret: str = VECTOR["webhook_secret"]) -> WebhookRequest:
    return WebhookRequest("POST", "http://bus/hooks/scm/document_events", {
        "x-frappe-webhook-signature": frappe_signature(secret, body)}, body)


class TestErpnextContract(AdapterContract):
    @pytest.fixture
    def adapter_factory(self, frappe: FakeFrappe) -> Any:
        self.server = frappe
        return lambda s: ErpnextAdapter("scm", s)

    @pytest.fixture
    def good_settings(self, frappe: FakeFrappe) -> Mapping[str, Any]:
        return settings(frappe)

    def junk_settings(self, good_settings: Mapping[str, Any]) -> list[Any]:
        return [{**good_settings, "order_change": "rewrite"}, {"url": "x", "api_key": "k", "api_secret": "s"},
                {k: v for k, v in good_settings.items() if k != "api_secret"}]

    def arrange_success(self, adapter: Adapter) -> tuple[str, Any]:
        return "upsert_sales_order", so()

    def arrange_transient(self, adapter: Adapter) -> tuple[str, Any]:
        self.server.faults[("Sales Order", "*")] = FrappeError("QueryDeadlockError", "Deadlock found when trying to "
                                                               "get lock; try restarting transaction", 500)
        return "upsert_sales_order", so()

    def arrange_permanent(self, adapter: Adapter) -> tuple[str, Any]:
        return "upsert_sales_order", so(items=[{"item_code": "NO-SUCH-ITEM", "qty": 1}])

    def observed_idempotency_key(self, adapter: Adapter) -> str | None:
        return [r for r in self.server.requests if "idempotency-key" in r.headers][-1].headers["idempotency-key"]

    def arrange_poll(self, adapter: Adapter) -> str:
        self.server.add("Sales Order", customer="C-ACME", delivery_date="2026-12-01",
                        items=[{"item_code": "W-100", "qty": 1}])
        return "sales_orders_changed"

    def arrange_webhook(self, adapter: Adapter) -> tuple[str, WebhookRequest, WebhookRequest]:
        body = VECTOR["raw_body"].encode()
        genuine = WebhookRequest("POST", "http://bus/hooks/scm/document_events", VECTOR["header"], body)
        forged = signed(body.replace(b"1500.0", b"15.0"))
        forged = WebhookRequest("POST", forged.url, VECTOR["header"], forged.body)
        return "document_events", genuine, forged


# -- the wire ---------------------------------------------------------------------------------------------
def test_list_requests_use_token_auth_and_frappe_paging(adapter: ErpnextAdapter, frappe: FakeFrappe) -> None:
    adapter.client.get_list("Sales Order", fields=["name", "modified"], filters=[["docstatus", "=", 1]],
                            order_by="modified asc, name asc", limit_start=40, limit_page_length=20)
    seen = frappe.last("/api/resource/Sales Order")
    assert seen.headers["authorization"] == f"token {KEY}:{SECRET}"
    assert seen.query == {"fields": '["name", "modified"]', "filters": '[["docstatus", "=", 1]]', "limit_start": "40",
                          "limit_page_length": "20", "order_by": "modified asc, name asc"}


@pytest.mark.parametrize(("error", "kind"), [
    (FrappeError("ValidationError", "Delivery Date cannot be before Sales Order Date"), PermanentError),
    (FrappeError("MandatoryError", "[Sales Order, SAL-ORD-2026-00001]: customer"), PermanentError),
    (FrappeError("LinkValidationError", "Could not find Customer: C-NOPE"), PermanentError),
    (FrappeError("PermissionError", "Insufficient Permission for Sales Order"), PermanentError),
    (FrappeError("TimestampMismatchError", "Document has been modified after you have opened it"), TransientError),
    (FrappeError("QueryDeadlockError", "Deadlock found when trying to get lock"), TransientError),
])
def test_frappe_errors_are_classified_by_exc_type(adapter: ErpnextAdapter, frappe: FakeFrappe,
                                                  error: FrappeError, kind: type[Exception]) -> None:
    frappe.faults[("Sales Order", "*")] = error
    with pytest.raises(kind) as info:
        adapter.call("upsert_sales_order", make_call(so()))
    assert error.exc_type in str(info.value) and error.message in str(info.value)  # from _server_messages
    assert not isinstance(info.value, TransientError if kind is PermanentError else PermanentError)


def test_wrong_credentials_are_permanent_and_the_secret_is_never_shown(frappe: FakeFrappe) -> None:
    made = ErpnextAdapter("scm", settings(frappe, api_secret="not-the-secret-42"))
    with pytest.raises(PermanentError, match="AuthenticationError") as info:
        made.call("upsert_sales_order", make_call(so()))
    assert "not-the-secret-42" not in str(info.value)
    assert not made.health().ok


def test_settings_name_the_bad_field(frappe: FakeFrappe) -> None:
    with pytest.raises(ConfigError, match="order_change"):
        ErpnextAdapter("scm", settings(frappe, order_change="rewrite"))


# -- the order lifecycle ----------------------------------------------------------------------------------
def test_sales_order_is_inserted_submitted_and_found_again_by_reference(adapter: ErpnextAdapter,
                                                                        frappe: FakeFrappe) -> None:
    first = adapter.call("upsert_sales_order", make_call(so()))
    again = adapter.call("upsert_sales_order", make_call(so()))
    assert first.reference == again.reference == "SAL-ORD-2026-00001"
    doc = frappe.doc("Sales Order", "SAL-ORD-2026-00001")
    assert doc["docstatus"] == 1 and doc["po_no"] == "SO-1001" and len(frappe.docs["Sales Order"]) == 1
    assert first.result["created"] is True and again.result["created"] is False


def test_draft_is_edited_in_place_with_its_modified_stamp(adapter: ErpnextAdapter, frappe: FakeFrappe) -> None:
    adapter.call("upsert_sales_order", make_call(so(submit=False)))
    frappe.tick()
    adapter.call("upsert_sales_order", make_call(so(submit=False, items=[{"item_code": "G-200", "qty": 2}])))
    doc = frappe.doc("Sales Order", "SAL-ORD-2026-00001")
    assert doc["docstatus"] == 0 and [(r["item_code"], r["qty"]) for r in doc["items"]] == [("G-200", 2)]
    put = frappe.last("/api/resource/Sales Order/SAL-ORD-2026-00001")
    assert put.method == "PUT" and put.json()["modified"] == "2026-11-24 08:00:00.000000"


def test_submitted_order_changes_through_update_items(adapter: ErpnextAdapter, frappe: FakeFrappe) -> None:
    adapter.call("upsert_sales_order", make_call(so(items=[{"item_code": "W-100", "qty": 5, "rate": 10},
                                                          {"item_code": "G-200", "qty": 1, "rate": 3}])))
    before = frappe.doc("Sales Order", "SAL-ORD-2026-00001")
    outcome = adapter.call("upsert_sales_order", make_call(so(items=[{"item_code": "W-100", "qty": 8}])))
    doc = frappe.doc("Sales Order", "SAL-ORD-2026-00001")
    assert doc["docstatus"] == 1 and outcome.reference == "SAL-ORD-2026-00001"
    assert [(r["item_code"], r["qty"], r["rate"]) for r in doc["items"]] == [("W-100", 8, 10)]
    assert doc["items"][0]["name"] == before["items"][0]["name"]  # the same row, changed in place
    call = frappe.last("update_child_qty_rate").json()
    assert call["parent_doctype"] == "Sales Order" and call["child_docname"] == "items"
    assert json.loads(call["trans_items"])[0]["docname"] == before["items"][0]["name"]


def test_update_items_refuses_to_go_below_the_delivered_quantity(adapter: ErpnextAdapter,
                                                                 frappe: FakeFrappe) -> None:
    adapter.call("upsert_sales_order", make_call(so()))
    frappe.docs["Sales Order"]["SAL-ORD-2026-00001"]["items"][0]["delivered_qty"] = 4
    with pytest.raises(PermanentError, match="less than delivered"):
        adapter.call("upsert_sales_order", make_call(so(items=[{"item_code": "W-100", "qty": 2}])))


def test_submitted_order_is_cancelled_and_amended_when_configured(frappe: FakeFrappe) -> None:
    adapter = ErpnextAdapter("scm", settings(frappe, order_change="amend"))
    adapter.call("upsert_sales_order", make_call(so()))
    outcome = adapter.call("upsert_sales_order", make_call(so(items=[{"item_code": "W-100", "qty": 9}])))
    assert outcome.reference == "SAL-ORD-2026-00001-1"
    assert outcome.result["amended_from"] == "SAL-ORD-2026-00001"
    assert frappe.doc("Sales Order", "SAL-ORD-2026-00001")["docstatus"] == 2
    amended = frappe.doc("Sales Order", "SAL-ORD-2026-00001-1")
    assert amended["docstatus"] == 1 and amended["items"][0]["qty"] == 9 and amended["po_no"] == "SO-1001"
    again = adapter.call("upsert_sales_order", make_call(so(items=[{"item_code": "W-100", "qty": 7}])))
    assert again.reference == "SAL-ORD-2026-00001-2"  # the amendment of the amendment


def test_cancel_of_a_submitted_order_and_refusal_of_a_draft(adapter: ErpnextAdapter, frappe: FakeFrappe) -> None:
    adapter.call("upsert_sales_order", make_call(so()))
    outcome = adapter.call("upsert_sales_order", make_call(so(status="cancelled")))
    assert outcome.result["docstatus"] == 2 and frappe.doc("Sales Order", "SAL-ORD-2026-00001")["status"] == "Cancelled"
    assert adapter.call("upsert_sales_order", make_call(so(status="cancelled"))).result is None  # nothing left
    adapter.call("upsert_sales_order", make_call(so(reference="SO-2", submit=False)))
    with pytest.raises(PermanentError, match="draft"):
        adapter.call("upsert_sales_order", make_call(so(reference="SO-2", status="cancelled")))


def test_submit_and_cancel_documents_by_name(adapter: ErpnextAdapter, frappe: FakeFrappe) -> None:
    doc = frappe.add("Purchase Order", supplier="S-BOLT", schedule_date="2026-12-01",
                     items=[{"item_code": "W-100", "qty": 3}])
    adapter.call("submit_document", make_call({"doctype": "Purchase Order", "name": doc["name"]}))
    assert frappe.doc("Purchase Order", doc["name"])["docstatus"] == 1
    adapter.call("cancel_document", make_call({"doctype": "Purchase Order", "name": doc["name"]}))
    assert frappe.doc("Purchase Order", doc["name"])["docstatus"] == 2
    with pytest.raises(PermanentError, match="DoesNotExistError"):
        adapter.call("submit_document", make_call({"doctype": "Purchase Order", "name": "PUR-ORD-NOPE"}))


def test_bad_payloads_name_the_field(adapter: ErpnextAdapter) -> None:
    with pytest.raises(PermanentError, match=r"items\[0\].qty"):
        adapter.call("upsert_sales_order", make_call(so(items=[{"item_code": "W-100", "qty": "many"}])))
    with pytest.raises(PermanentError, match="'items'"):
        adapter.call("upsert_sales_order", make_call(so(items=[])))
    with pytest.raises(PermanentError, match="'customer'"):
        adapter.call("upsert_sales_order", make_call({"reference": "X", "items": [{"item_code": "W-100", "qty": 1}]}))


def test_master_data_upserts_and_lists_for_xref(adapter: ErpnextAdapter) -> None:
    adapter.call("upsert_customer", make_call({"code": "C-NEW", "name": "New Customer"}))
    adapter.call("upsert_customer", make_call({"code": "C-NEW", "name": "New Customer Ltd"}))
    adapter.call("upsert_item", make_call({"code": "N-1", "name": "Nut"}))
    customers = {(r.id, r.code, r.name) for r in adapter.master_data("customer") or []}
    assert customers == {("C-ACME", "C-ACME", "ACME Corp"), ("C-NEW", "C-NEW", "New Customer Ltd")}
    assert {(r.code, r.name) for r in adapter.master_data("material") or []} == {
        ("W-100", "Widget"), ("G-200", "Gadget"), ("N-1", "Nut")}
    assert [r.code for r in adapter.master_data("supplier") or []] == ["S-BOLT"]
    assert adapter.master_data("warehouse") is None


# -- inbound ----------------------------------------------------------------------------------------------
def test_webhook_verifies_frappes_base64_signature_and_parses_the_document(adapter: ErpnextAdapter) -> None:
    body = VECTOR["raw_body"].encode()
    (doc,) = adapter.webhook("document_events", WebhookRequest("POST", "http://bus/h", VECTOR["header"], body))
    assert doc["name"] == "SAL-ORD-2024-00001" and adapter.webhook_key("document_events")(doc) == "SAL-ORD-2024-00001"
    with pytest.raises(WebhookRejected) as info:
        adapter.webhook("document_events", WebhookRequest("POST", "http://bus/h", {}, body))
    assert info.value.status == 401
    with pytest.raises(WebhookRejected) as info:
        adapter.webhook("document_events", signed(b"{not json"))
    assert info.value.status == 400 and info.value.reason == "malformed_body"
    with pytest.raises(WebhookRejected) as info:
        adapter.webhook("document_events", signed(b"[1, 2]"))
    assert info.value.status == 400
    with pytest.raises(WebhookRejected) as info:
        adapter.webhook("document_events", signed(b"[" * 40 + b"]" * 40))
    assert info.value.status == 400


def test_poll_reads_whole_documents_in_modified_order(frappe: FakeFrappe) -> None:
    adapter = ErpnextAdapter("scm", settings(frappe, poll={"page_size": 2}))
    names = []
    for i in range(3):
        frappe.tick()
        names.append(frappe.add("Material Request", material_request_type="Purchase", schedule_date="2026-12-01",
                                items=[{"item_code": "W-100", "qty": i + 1}])["name"])
    result = adapter.poll("material_requests_changed", None)
    assert [d["name"] for _, d in result.records] == names
    assert [d["items"][0]["qty"] for _, d in result.records] == [1, 2, 3]  # child tables come along
    assert result.watermark == frappe.doc("Material Request", names[-1])["modified"]
    lists = [r.query for r in frappe.requests if r.path == "/api/resource/Material Request"]
    assert [(q["limit_start"], q["limit_page_length"]) for q in lists] == [("0", "2"), ("2", "2")]


def test_poll_resumes_after_a_restart_without_gaps_or_repeats(frappe: FakeFrappe, tmp_path: Path) -> None:
    """Two bus lives, each with the journal opened anew: every document version is emitted exactly once."""
    emitted: list[Event] = []
    plan = TriggerPlan("scm", "sales_orders_changed")

    def life() -> None:
        store = Journal(f"sqlite:///{tmp_path}/journal.sqlite")
        adapter = ErpnextAdapter("scm", settings(frappe, poll={"page_size": 2, "overlap": 5}))
        runner = TriggerRunner({"scm": adapter}, [plan], store, emitted.extend)
        runner.run_once(plan)
        runner.run_once(plan)
        adapter.close()
        store.close()

    def order(ref: str) -> str:
        return str(frappe.add("Sales Order", customer="C-ACME", po_no=ref, delivery_date="2026-12-01",
                              items=[{"item_code": "W-100", "qty": 1}])["name"])

    a, b = order("A"), order("B")
    life()
    c = order("C")  # same timestamp as the watermark
    frappe.tick(-2)
    d = order("D")  # committed late: older than the watermark
    frappe.tick(10)
    frappe.docs["Sales Order"][a].update(docstatus=1, modified=frappe.now())  # a submitted
    life()
    versions = [(e.data["name"], e.data["modified"], e.data["docstatus"]) for e in emitted]
    assert len({v[:2] for v in versions}) == len(versions), f"repeated: {versions}"
    assert [(v[0], v[2]) for v in versions] == [(a, 0), (b, 0), (d, 0), (c, 0), (a, 1)]


def test_reschedule_moves_every_row_and_notes_why(adapter: ErpnextAdapter, frappe: FakeFrappe) -> None:
    adapter.call("upsert_sales_order", make_call(so(items=[{"item_code": "W-100", "qty": 5},
                                                          {"item_code": "G-200", "qty": 1}])))
    late = make_call({"reference": "SO-1001", "date": "2026-12-16", "reason": "supplier S-BOLT is late"},
                     idempotency_key="evt-5:issue:scm.reschedule_sales_order")
    outcome = adapter.call("reschedule_sales_order", late)
    assert adapter.call("reschedule_sales_order", late).result == outcome.result  # a retry: no second comment
    doc = frappe.doc("Sales Order", "SAL-ORD-2026-00001")
    assert [(r["item_code"], r["qty"], r["delivery_date"]) for r in doc["items"]] == [
        ("W-100", 5, "2026-12-16"), ("G-200", 1, "2026-12-16")]
    (comment,) = frappe.docs["Comment"].values()
    assert (comment["reference_doctype"], comment["reference_name"], comment["content"]) == (
        "Sales Order", "SAL-ORD-2026-00001", "[ironbus evt-5:issue:scm.reschedule_sales_order] supplier S-BOLT is late")
    assert outcome.result == {"name": "SAL-ORD-2026-00001", "reference": "SO-1001", "delivery_date": "2026-12-16",
                              "reason": "supplier S-BOLT is late"}
    adapter.call("upsert_sales_order", make_call(so(status="cancelled")))
    with pytest.raises(PermanentError, match="cancelled"):
        adapter.call("reschedule_sales_order", make_call({"name": "SAL-ORD-2026-00001", "date": "2026-12-20"}))
    with pytest.raises(PermanentError, match="no Sales Order"):
        adapter.call("reschedule_sales_order", make_call({"reference": "SO-NONE", "date": "2026-12-20"}))


def test_material_request_rows_come_one_by_one_with_their_order_and_supplier(adapter: ErpnextAdapter,
                                                                              frappe: FakeFrappe) -> None:
    frappe.docs["Item"]["W-100"]["item_defaults"] = [{"company": "ACME", "default_supplier": "S-BOLT"}]
    order = adapter.call("upsert_sales_order", make_call(so())).reference
    frappe.tick()
    mr = frappe.add("Material Request", material_request_type="Purchase", schedule_date="2026-12-01", docstatus=1,
                    items=[{"item_code": "W-100", "qty": 5, "sales_order": order},
                           {"item_code": "G-200", "qty": 2}])
    records = adapter.poll("material_request_items_changed", None).records
    assert [k.split("#")[0] for k, _ in records] == [f"{mr['name']}@{mr['modified']}"] * 2
    first, second = (p for _, p in records)
    assert (first["item_code"], first["sales_order_reference"], first["default_supplier"]) == ("W-100", "SO-1001",
                                                                                                "S-BOLT")
    assert (second["item_code"], second["sales_order_reference"], second["default_supplier"]) == ("G-200", None,
                                                                                                  None)
    assert first["parent"] == mr["name"] and first["document"]["docstatus"] == 1 and "items" not in first["document"]


def test_customer_named_by_the_site_is_found_again_by_its_name(adapter: ErpnextAdapter, frappe: FakeFrappe) -> None:
    frappe.names_by_prompt = False  # "Customer Naming By: Customer Name"
    first = adapter.call("upsert_customer", make_call({"code": "C-NUT", "name": "Nut & Co"}))
    again = adapter.call("upsert_customer", make_call({"code": "C-NUT", "name": "Nut & Co", "customer_group": "B2B"}))
    assert first.reference == again.reference == "Nut & Co" and again.result["created"] is False
    assert "link that name in the xref" in first.detail
    assert frappe.doc("Customer", "Nut & Co")["customer_group"] == "B2B" and len(frappe.docs["Customer"]) == 2


def test_rate_limit_is_transient_with_retry_after(adapter: ErpnextAdapter, frappe: FakeFrappe) -> None:
    limited = FrappeError("TooManyRequestsError", "You hit the rate limit because of too many requests.", 429)
    frappe.canned = [(429, {"Content-Type": "application/json", "Retry-After": "30"},
                      json.dumps(limited.body()).encode())]
    with pytest.raises(TransientError, match="TooManyRequestsError") as info:
        adapter.call("upsert_sales_order", make_call(so()))
    assert info.value.retry_after == 30


def test_a_site_slower_than_the_read_timeout_is_transient(frappe: FakeFrappe) -> None:
    adapter = ErpnextAdapter("scm", settings(frappe, timeout={"connect": 1, "read": 0.2}))
    frappe.delay = 0.5
    with pytest.raises(TransientError):
        adapter.call("upsert_sales_order", make_call(so()))


@pytest.mark.parametrize("order_change", ["update_items", "amend"])
def test_a_change_already_made_is_not_made_again(frappe: FakeFrappe, order_change: str) -> None:
    adapter = ErpnextAdapter("scm", settings(frappe, order_change=order_change))
    adapter.call("upsert_sales_order", make_call(so()))
    changed = so(items=[{"item_code": "W-100", "qty": 9, "rate": 10}])
    first = adapter.call("upsert_sales_order", make_call(changed))
    calls_before = len(frappe.requests)
    again = adapter.call("upsert_sales_order", make_call(changed))  # the answer was lost: the bus retries
    assert again.reference == first.reference
    assert [r.method for r in frappe.requests[calls_before:]] == ["GET", "GET"]  # found, compared, nothing sent
