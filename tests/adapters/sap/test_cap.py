"""The SAP adapter against SAP's CAP runtime serving OData V2 (see conftest.CapPeer): CSRF, deep insert,
ETags, $batch, $skiptoken paging, polling with restart, master data, OAuth."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from adapters.base import Outcome
from adapters.sap import SapAdapter
from bus.errors import PermanentError, TransientError
from bus.testing import make_call
from bus.triggers import MemoryWatermarkStore, TriggerPlan, TriggerRunner

from .conftest import CLIENT_ID, CLIENT_SECRET, CapPeer

SO = "API_SALES_ORDER_SRV"
_numbers = itertools.count(1)


def customer() -> str:
    """A sold-to party no other test uses, so tests can find their own orders."""
    return f"T{next(_numbers):04d}{id(customer) % 10000:04d}"[:10]


@pytest.fixture
def sap(cap: CapPeer) -> Iterator[SapAdapter]:
    adapter = SapAdapter("s4", cap.settings())
    adapter.open()
    yield adapter
    adapter.close()


def order(party: str, **extra: Any) -> dict[str, Any]:
    return {"SalesOrderType": "OR", "SoldToParty": party, "TransactionCurrency": "EUR",
            "SalesOrderDate": "2026-12-01", "TotalNetAmount": 123.4,
            "to_Item": [{"SalesOrderItem": "10", "Material": "TG11", "RequestedQuantity": 5,
                         "RequestedQuantityUnit": "PC"},
                        {"SalesOrderItem": "20", "Material": "TG12", "RequestedQuantity": "1.500"}], **extra}


def test_deep_insert_creates_header_and_items_with_csrf(sap: SapAdapter, cap: CapPeer) -> None:
    party = customer()
    outcome = sap.call("create_sales_order", make_call(order(party)))
    assert outcome.reference and outcome.reference.isdigit()
    created = cap.rows(SO, "A_SalesOrder", f"?$filter=SalesOrder eq '{outcome.reference}'&$expand=to_Item")[0]
    assert created["SoldToParty"] == party and created["SalesOrderDate"] == "2026-12-01"
    assert created["TotalNetAmount"] == pytest.approx(123.4)
    assert sorted((i["SalesOrderItem"], str(i["RequestedQuantity"])) for i in created["to_Item"]) == [
        ("10", "5"), ("20", "1.5")]
    # the result is the order as SAP answered it, in V2 form: decimal strings and /Date(ms)/
    assert outcome.result["SalesOrderDate"] == "/Date(1796083200000)/"
    assert outcome.result["to_Item"]["results"][0]["RequestedQuantity"] in ("5", "5.000")


def test_csrf_token_is_cached_per_session_and_refetched_when_the_server_forgets_it(cap: CapPeer) -> None:
    adapter = SapAdapter("s4", cap.settings())
    try:
        adapter.call("create_sales_order", make_call(order(customer())))
        adapter.call("create_sales_order", make_call(order(customer())))
        assert adapter.client.csrf_fetches == 1, "one token for the session, not one per write"
        refused_before = cap.stats()["refused"]
        cap.expire_sessions()  # as a Gateway restart or a session timeout does
        adapter.call("create_sales_order", make_call(order(customer())))
        assert cap.stats()["refused"] == refused_before + 1, "the stale token was sent and refused once"
        assert adapter.client.csrf_fetches == 2, "then a fresh token was fetched and the write went through"
    finally:
        adapter.close()


def test_update_reads_the_etag_and_changes_header_and_items_in_one_change_set(sap: SapAdapter, cap: CapPeer) -> None:
    number = sap.call("create_sales_order", make_call(order(customer()))).reference
    outcome = sap.call("update_sales_order", make_call({
        "SalesOrder": number, "PurchaseOrderByCustomer": "PO-77", "RequestedDeliveryDate": "2027-01-15",
        "to_Item": [{"SalesOrderItem": "10", "RequestedQuantity": 7}, {"SalesOrderItem": "30", "Material": "TG13",
                                                                       "RequestedQuantity": 2}]}))
    assert "change set" in outcome.detail
    row = cap.rows(SO, "A_SalesOrder", f"?$filter=SalesOrder eq '{number}'&$expand=to_Item")[0]
    assert row["PurchaseOrderByCustomer"] == "PO-77" and row["RequestedDeliveryDate"] == "2027-01-15"
    assert {i["SalesOrderItem"]: float(i["RequestedQuantity"]) for i in row["to_Item"]} == {
        "10": 7.0, "20": 1.5, "30": 2.0}


def test_header_only_update_sends_if_match_and_a_stale_etag_is_transient(sap: SapAdapter, cap: CapPeer,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    number = sap.call("create_sales_order", make_call(order(customer()))).reference
    assert sap.call("update_sales_order", make_call({"SalesOrder": number, "PurchaseOrderByCustomer": "A"}))
    # someone changes the order between our read and our write: the server answers 412
    real_get = sap.client.get

    def read_then_someone_writes(service: str, path: str, params: Any = None) -> Any:
        doc = real_get(service, path, params)
        cap.change(SO, f"A_SalesOrder('{number}')", {"PurchaseOrderByCustomer": "B"})
        return doc

    monkeypatch.setattr(sap.client, "get", read_then_someone_writes)
    with pytest.raises(TransientError, match="412"):
        sap.call("update_sales_order", make_call({"SalesOrder": number, "PurchaseOrderByCustomer": "C"}))


def test_validation_error_is_permanent_and_names_the_field(sap: SapAdapter) -> None:
    with pytest.raises(PermanentError) as info:
        sap.call("create_sales_order", make_call(order("X" * 13)))
    assert "HTTP 400" in str(info.value) and "SoldToParty" in str(info.value) or "String(10)" in str(info.value)


def test_call_many_sends_creates_in_one_batch_with_a_change_set_each(sap: SapAdapter, cap: CapPeer) -> None:
    parties = [customer() for _ in range(3)]
    payloads = [order(parties[0]), order("Y" * 13), order(parties[2])]
    answers = sap.call_many("create_sales_order", [make_call(p, idempotency_key=f"k{i}")
                                                   for i, p in enumerate(payloads)])
    assert isinstance(answers[0], Outcome) and isinstance(answers[2], Outcome)
    assert isinstance(answers[1], PermanentError), answers[1]
    found = {r["SoldToParty"] for r in cap.rows(SO, "A_SalesOrder", "?$select=SoldToParty")}
    assert parties[0] in found and parties[2] in found, "the bad order's change set failed alone"


def test_reads_return_the_document(sap: SapAdapter, cap: CapPeer) -> None:
    cap.seed("API_PRODUCT_SRV", "A_Product", {"Product": "RD-1", "ProductType": "FERT", "to_Description": [
        {"Language": "EN", "ProductDescription": "Read me"}]})
    outcome = sap.call("read_product", make_call({"Product": "RD-1"}))
    assert outcome.reference == "RD-1" and outcome.result["to_Description"]["results"][0]["ProductDescription"] == \
        "Read me"
    with pytest.raises(PermanentError, match="404"):
        sap.call("read_product", make_call({"Product": "NOPE"}))


def test_server_side_paging_is_followed(cap: CapPeer) -> None:
    # A_Product pages by two rows on the peer (@cds.query.limit): the answer ends with __next ($skiptoken)
    for n in range(5):
        cap.seed("API_PRODUCT_SRV", "A_Product", {"Product": f"PG-{n}", "ProductType": "PAGE"})
    adapter = SapAdapter("s4", cap.settings())
    try:
        first = adapter.client.get("API_PRODUCT_SRV", "A_Product", {"$filter": "ProductType eq 'PAGE'"})
        assert "$skiptoken" in first["d"]["__next"]
        rows = adapter.client.get_all("API_PRODUCT_SRV", "A_Product", {"$filter": "ProductType eq 'PAGE'",
                                                                      "$orderby": "Product"})
        assert [r["Product"] for r in rows] == [f"PG-{n}" for n in range(5)]
    finally:
        adapter.close()


def test_poll_resumes_after_restart_without_gaps_or_repeats(cap: CapPeer) -> None:
    store = MemoryWatermarkStore()
    emitted: list[str] = []
    plan = TriggerPlan("s4", "purchase_requisitions_changed")

    def run(settings: dict[str, Any]) -> int:
        adapter = SapAdapter("s4", settings)  # a new process: nothing in memory but the store
        adapter.open()
        try:
            runner = TriggerRunner({"s4": adapter}, [plan], store,
                                   lambda events: emitted.extend(e.data["PurchaseRequisition"] for e in events))
            return runner.run_once(plan)
        finally:
            adapter.close()

    settings = cap.settings(poll={"page_size": 2, "overlap": "2s"})
    pr = "API_PURCHASEREQ_PROCESS_SRV"
    first = [cap.seed(pr, "A_PurchaseRequisitionHeader", {"PurchaseRequisitionType": "NB"})["PurchaseRequisition"]
             for _ in range(5)]
    run(settings)
    assert set(first) <= set(emitted)
    before = len(emitted)
    run(settings)  # restart, nothing changed: nothing again
    assert len(emitted) == before
    changed = cap.change(pr, f"A_PurchaseRequisitionHeader('{first[1]}')", {"PurReqnDescription": "more"})
    later = [cap.seed(pr, "A_PurchaseRequisitionHeader", {"PurchaseRequisitionType": "NB"})["PurchaseRequisition"]
             for _ in range(3)]
    run(settings)  # restart again: exactly the change and the new ones, across pages of two
    assert sorted(emitted[before:]) == sorted([changed["PurchaseRequisition"], *later])
    assert len(emitted) == len(set(emitted)) + 1, "only the changed requisition came twice (it changed)"


def test_master_data_lists_customers_materials_suppliers(cap: CapPeer) -> None:
    bp = "API_BUSINESS_PARTNER"
    cap.seed(bp, "A_BusinessPartner", {"BusinessPartner": "MD-BP1", "Customer": "MD-C1", "SearchTerm1": "C-ACME",
                                       "BusinessPartnerFullName": "Acme Retail"})
    cap.seed(bp, "A_BusinessPartner", {"BusinessPartner": "MD-BP2", "Supplier": "MD-S1",
                                       "BusinessPartnerFullName": "Bolt Supply"})
    cap.seed(bp, "A_BusinessPartner", {"BusinessPartner": "MD-BP3", "BusinessPartnerFullName": "Neither role"})
    cap.seed("API_PRODUCT_SRV", "A_Product", {"Product": "MD-M1", "ProductOldID": "W-100", "to_Description": [
        {"Language": "DE", "ProductDescription": "Schraube"}, {"Language": "EN", "ProductDescription": "Screw"}]})
    only_ours = {"customer": {"filter": "startswith(Customer,'MD-')", "code": "SearchTerm1"},
                 "material": {"code": "ProductOldID"}}
    adapter = SapAdapter("s4", cap.settings(language="EN", master_data=only_ours))
    try:
        customers = adapter.master_data("customer")
        assert customers is not None and [(c.id, c.code, c.name) for c in customers] == [
            ("MD-C1", "C-ACME", "Acme Retail")]
        materials = {m.id: (m.code, m.name) for m in adapter.master_data("material") or []}
        assert materials["MD-M1"] == ("W-100", "Screw")  # all pages: products come two a page
        suppliers = [(s.id, s.name) for s in adapter.master_data("supplier") or []]
        assert ("MD-S1", "Bolt Supply") in suppliers and all(s[1] != "Neither role" for s in suppliers)
        assert adapter.master_data("warehouse") is None
    finally:
        adapter.close()


def test_oauth_client_credentials(cap: CapPeer) -> None:
    grants = cap.stats()["tokenGrants"]
    adapter = SapAdapter("s4", {"url": cap.url, "auth": {
        "type": "oauth2_client_credentials", "token_url": f"{cap.url}/oauth/token", "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET}})
    try:
        assert adapter.call("create_sales_order", make_call(order(customer()))).reference
        assert adapter.health().ok
        assert cap.stats()["tokenGrants"] == grants + 1
    finally:
        adapter.close()
    wrong = SapAdapter("s4", {"url": cap.url, "auth": {
        "type": "oauth2_client_credentials", "token_url": f"{cap.url}/oauth/token", "client_id": CLIENT_ID,
        "client_secret": "not-the-secret"}})
    try:
        with pytest.raises(PermanentError) as info:
            wrong.call("create_sales_order", make_call(order(customer())))
        assert "not-the-secret" not in str(info.value)
    finally:
        wrong.close()


def test_wrong_password_is_permanent_and_not_echoed(cap: CapPeer) -> None:
    adapter = SapAdapter("s4", {"url": cap.url, "auth": {"type": "basic", "username": "IRONBUS_COMM",
                                                         "password": "hunter2-wrong"}})
    try:
        with pytest.raises(PermanentError) as info:
            adapter.call("read_product", make_call({"Product": "TG11"}))
        assert "401" in str(info.value) and "hunter2" not in str(info.value)
        assert not adapter.health().ok
    finally:
        adapter.close()
