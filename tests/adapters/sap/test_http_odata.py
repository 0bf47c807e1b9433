"""The http adapter's OData poll variant against a real OData server (SAP's CAP runtime): V4 with
``@odata.nextLink`` and V2 with ``__next`` and ``/Date(ms)/`` stamps, resumed across restarts."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.http import HttpAdapter
from bus.triggers import MemoryWatermarkStore, TriggerPlan, TriggerRunner

from .conftest import PASSWORD, USER, CapPeer


def poll_once(doc: dict[str, Any], store: MemoryWatermarkStore, seen: list[str]) -> int:
    adapter = HttpAdapter("erp", doc)
    plan = TriggerPlan("erp", "products")
    try:
        runner = TriggerRunner({"erp": adapter}, [plan], store, lambda ev: seen.extend(e.data["Product"] for e in ev))
        return runner.run_once(plan)
    finally:
        adapter.close()


@pytest.mark.parametrize("version", [4, 2])
def test_odata_poll_pages_and_resumes(cap: CapPeer, version: int) -> None:
    prefix = f"OD{version}-"
    for n in range(5):
        cap.seed("API_PRODUCT_SRV", "A_Product", {"Product": f"{prefix}{n}", "ProductType": f"OD{version}"})
    base = f"{cap.url}/odata/v4/API_PRODUCT_SRV" if version == 4 else f"{cap.url}/sap/opu/odata/sap/API_PRODUCT_SRV"
    doc: dict[str, Any] = {"base_url": base, "polls": {"products": {"path": "A_Product", "odata": {
        "version": version, "changed": "LastChangeDateTime", "key": "Product", "overlap": "1s",
        "filter": f"ProductType eq 'OD{version}'"}}}}
    if version == 2:
        doc["auth"] = {"type": "basic", "username": USER, "password": PASSWORD}
    store = MemoryWatermarkStore()
    seen: list[str] = []
    assert poll_once(doc, store, seen) == 5, "five products over three server pages of two"
    assert poll_once(doc, store, seen) == 0
    cap.change("API_PRODUCT_SRV", f"A_Product('{prefix}3')", {"BaseUnit": "KG"})
    cap.seed("API_PRODUCT_SRV", "A_Product", {"Product": f"{prefix}9", "ProductType": f"OD{version}"})
    assert poll_once(doc, store, seen) == 2
    assert sorted(seen) == sorted([f"{prefix}{n}" for n in range(5)] + [f"{prefix}3", f"{prefix}9"])
    mark = store.get_watermark("erp", "products")
    assert mark is not None and mark.startswith("20")  # an ISO timestamp, also from V2's /Date(ms)/
