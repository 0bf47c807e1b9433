"""``ironbus xref check`` across a Tryton and an SAP system: a customer and a material linked in both agree,
a renamed one is reported inconsistent, an unlinked SAP partner is reported unlinked."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from adapters.sap import SapAdapter
from adapters.tryton import TrytonAdapter
from bus.journal.records import XrefRow
from bus.masterdata import check_master_data
from tests.helpers.sap_cap import CapPeer, cap  # noqa: F401 - the fixture
from tests.tryton.tryton_helpers import call, unique


def test_xref_check_across_tryton_and_sap(make_adapter: Callable[..., TrytonAdapter], cap: CapPeer) -> None:  # noqa: F811
    code, name = unique("C"), unique("Customer")
    item, item_name = unique("P"), "Widget"
    crm = make_adapter("crm", master_data={"customer": {"model": "party.party", "domain": [["code", "=", code]]},
                                           "material": {"model": "product.product",
                                                        "domain": [["code", "=", item]]}})
    party = crm.call("upsert_party", call({"name": name, "code": code})).result["id"]
    product = crm.call("upsert_product", call({"code": item, "name": item_name, "list_price": "1.00"})).result["id"]
    sap_customer, sap_material, stranger = unique("K")[:10], unique("M"), unique("K")[:10]
    bp = "API_BUSINESS_PARTNER"
    cap.seed(bp, "A_BusinessPartner", {"BusinessPartner": sap_customer, "Customer": sap_customer,
                                       "SearchTerm1": code, "BusinessPartnerFullName": name})
    cap.seed(bp, "A_BusinessPartner", {"BusinessPartner": stranger, "Customer": stranger,
                                       "BusinessPartnerFullName": "Not linked"})
    cap.seed("API_PRODUCT_SRV", "A_Product", {"Product": sap_material, "ProductOldID": item, "to_Description": [
        {"Language": "EN", "ProductDescription": item_name}]})
    ours = f"Customer eq '{sap_customer}' or Customer eq '{stranger}'"
    s4 = SapAdapter("s4", cap.settings(language="EN", master_data={
        "customer": {"filter": ours, "code": "SearchTerm1"},
        "material": {"filter": f"Product eq '{sap_material}'", "code": "ProductOldID"}}))
    links = [XrefRow("customer", "crm", str(party), code), XrefRow("customer", "s4", sap_customer, code),
             XrefRow("material", "crm", str(product), item), XrefRow("material", "s4", sap_material, item)]
    try:
        report: dict[str, Any] = check_master_data({"crm": crm, "s4": s4}, links, ["customer", "material"])
        kinds = sorted((p["entity"], p["kind"], p["system_id"]) for p in report["problems"])
        assert kinds == [("customer", "unlinked", stranger)], report["problems"]
        assert report["summary"]["customer"]["canonical"] == 1 and report["summary"]["material"]["canonical"] == 1

        cap.change(bp, f"A_BusinessPartner('{sap_customer}')", {"BusinessPartnerFullName": "Renamed in SAP"})
        report = check_master_data({"crm": crm, "s4": s4}, links, ["customer"])
        assert ("inconsistent", code) in [(p["kind"], p["canonical_id"]) for p in report["problems"]]
    finally:
        s4.close()
