"""Master data for the iron triangle: one customer, one supplier, one material, in the databases that need them.

:func:`create_in_owners` is how the demo loads it: each record is created once, in the system that owns it
(routes.yaml ``master_data:``) — the supplier in the SRM, the material in the SCM, the customer in the CRM — and
the bus's sync routes bring it to the other databases and link it in the xref. :func:`provision` loads every
database directly and returns the links, for tests that start from linked master data.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.base import Adapter, Call
from bus.envelope import Event

__all__ = ["Codes", "XrefLink", "call", "create_in_owners", "provision", "write_xref_csv"]


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


#: ``(entity, canonical id, system) -> that system's id``, waiting until the bus has linked it.
LinkWaiter = Callable[[str, str, str], str]


def create_in_owners(adapters: Mapping[str, Adapter], linked: LinkWaiter, codes: Codes | None = None,
                     say: Callable[[str], None] = lambda _: None) -> None:
    """Create each record in its owner only; ``linked`` waits for the bus to bring it to the others.

    The supplier's lead time and price are the SRM's own (``master_data.material.attributes``): the SRM buyer
    sets them on the synced material, and the bus carries the lead time back to the SCM's planning.
    """
    codes = codes or Codes()
    crm, scm, srm = adapters["crm"], adapters["scm"], adapters["srm"]
    _id(srm, "upsert_party", {"code": codes.supplier, "name": codes.supplier_name})
    say(f"   SRM: supplier {codes.supplier} created; waiting for the bus to bring it to the SCM")
    scm_supplier = linked("supplier", codes.supplier, "scm")
    _id(scm, "upsert_product", {"code": codes.material, "name": codes.material_name, "list_price": codes.list_price,
                                "supply_on_sale": "always", "suppliers": [{"party": scm_supplier}]})
    say(f"   SCM: material {codes.material} created with supplier {codes.supplier}; waiting for the CRM and the SRM")
    linked("material", codes.material, "crm")
    srm_supplier = linked("supplier", codes.supplier, "srm")
    linked("material", codes.material, "srm")
    _id(srm, "upsert_product", {"code": codes.material, "suppliers": [
        {"party": int(srm_supplier), "lead_time_days": codes.lead_time_days, "price": codes.purchase_price}]})
    say(f"   SRM: the buyer agrees {codes.lead_time_days} days and {codes.purchase_price} with the supplier")
    _id(crm, "upsert_party", {"code": codes.customer, "name": codes.customer_name,
                              "addresses": [{"street": "1 Harbour Road", "postal_code": "4000", "city": "Liège"}]})
    say(f"   CRM: customer {codes.customer} created; waiting for the SCM")
    linked("customer", codes.customer, "scm")
