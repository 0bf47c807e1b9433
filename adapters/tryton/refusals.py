"""What a refusal says about its line in words a person reads: the product's name and the unit.

``update_demand`` (SCM) and ``procure`` (SRM) refuse per product line; the CRM note and the customer's message name
the product and the unit, not the material code (docs/flows.md, "When a system refuses").
"""

from __future__ import annotations

from typing import Any

from adapters.tryton.client import TrytonClient

__all__ = ["named"]


def named(client: TrytonClient, refusals: list[dict[str, Any]], product: int | None,
          unit: int | None) -> list[dict[str, Any]]:
    """``refusals`` with ``description`` (the product's name), ``unit`` (the unit's symbol, e.g. ``u``) and
    ``unit_name`` (e.g. ``Unit``) added; what Tryton does not know is left out (the readers fall back to the code)."""
    if not refusals:
        return refusals
    words: dict[str, Any] = {}
    if product:
        words["description"] = client.read("product.product", [product], ["name"])[0].get("name")
    if unit:
        row = client.read("product.uom", [unit], ["symbol", "name"])[0]
        words.update(unit=row.get("symbol"), unit_name=row.get("name"))
    return [{**refusal, **{k: v for k, v in words.items() if v}} for refusal in refusals]
