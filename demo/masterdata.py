"""Master data for the iron triangle: one customer, one supplier, one material, in the databases that need them.

Everything goes through the Tryton adapter's own operations (``upsert_party``, ``upsert_product``), the way an
integrator would load master data, and the result is the list of cross references that tie each database's ids
to the canonical business codes.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.base import Adapter, Call
from bus.envelope import Event

__all__ = ["Codes", "XrefLink", "call", "provision", "write_xref_csv"]


@dataclass(frozen=True)
class XrefLink:
    """One row of the cross reference: ``system`` knows the canonical ``canonical_id`` as ``system_id``."""

    entity: str
    canonical_id: str
    system: str
    system_id: str


@dataclass(frozen=True)
class Codes:
    """The canonical codes (and display names) of the demo's master data."""

    customer: str = "C-ACME"
    customer_name: str = "ACME Corporation"
    supplier: str = "S-BOLT"
    supplier_name: str = "Bolt & Nut Supplies"
    material: str = "W-100"
    material_name: str = "Widget W-100"
    list_price: str = "10.00"
    purchase_price: str = "4.00"
    lead_time_days: int = 3


def call(payload: Any) -> Call:
    """A Call for provisioning (not a bus delivery: its idempotency key is a fresh event id)."""
    event = Event(type="demo.provision", source="ironbus/demo", data=payload)
    return Call(event=event, payload=payload, idempotency_key=event.id, route="demo")


def _id(adapter: Adapter, operation: str, payload: dict[str, Any]) -> str:
    return str(adapter.call(operation, call(payload)).result["id"])


def provision(adapters: Mapping[str, Adapter], codes: Codes | None = None) -> list[XrefLink]:
    """Create (or update) the master data in ``crm``, ``scm`` and ``srm`` and return the xref links.

    * crm: the customer (with an address) and the material it sells;
    * scm: the customer, the supplier, and the material with that supplier and *supply on sale* = always, so a
      confirmed demand raises a purchase request for the supplier;
    * srm: the supplier and the material with the same supplier and price.
    """
    codes = codes or Codes()
    crm, scm, srm = adapters["crm"], adapters["scm"], adapters["srm"]
    customer = {"code": codes.customer, "name": codes.customer_name,
                "addresses": [{"street": "1 Harbour Road", "postal_code": "4000", "city": "Liège"}]}
    supplier = {"code": codes.supplier, "name": codes.supplier_name}
    product = {"code": codes.material, "name": codes.material_name, "list_price": codes.list_price}
    links: list[XrefLink] = []

    def link(entity: str, canonical: str, system: str, system_id: str) -> None:
        links.append(XrefLink(entity, canonical, system, system_id))

    link("customer", codes.customer, "crm", _id(crm, "upsert_party", customer))
    link("material", codes.material, "crm", _id(crm, "upsert_product", product))
    link("customer", codes.customer, "scm", _id(scm, "upsert_party", customer))
    scm_supplier = _id(scm, "upsert_party", supplier)
    link("supplier", codes.supplier, "scm", scm_supplier)
    link("material", codes.material, "scm", _id(scm, "upsert_product", {
        **product, "supply_on_sale": "always",
        "suppliers": [{"party": scm_supplier, "lead_time_days": codes.lead_time_days,
                       "price": codes.purchase_price}]}))
    srm_supplier = _id(srm, "upsert_party", supplier)
    link("supplier", codes.supplier, "srm", srm_supplier)
    link("material", codes.material, "srm", _id(srm, "upsert_product", {
        **product, "suppliers": [{"party": srm_supplier, "lead_time_days": codes.lead_time_days,
                                  "price": codes.purchase_price}]}))
    return links


def write_xref_csv(links: Iterable[XrefLink], path: Path) -> Path:
    """The links as the CSV ``ironbus xref import`` reads (entity, canonical_id, system, system_id)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["entity", "canonical_id", "system", "system_id"])
        for row in links:
            writer.writerow([row.entity, row.canonical_id, row.system, row.system_id])
    return path
