"""Master-data operations: parties (customers, suppliers) and products, upserted by their code."""

from __future__ import annotations

import datetime as dt
from typing import Any

from adapters.base import Call, Outcome
from adapters.tryton.client import TrytonClient
from adapters.tryton.payload import Payload
from adapters.tryton.seed import ACCOUNT_CATEGORY
from bus.errors import PermanentError

__all__ = ["upsert_party", "upsert_product"]

_ADDRESS_FIELDS = ("street", "postal_code", "city")
#: Tryton hides archived (inactive) records from searches unless the domain asks for both states.
_ANY_STATE = ["active", "in", [True, False]]




def _write_keeping_active_last(client: TrytonClient, model: str, record: int, values: dict[str, Any]) -> None:
    """Write ``values``; an archived record's fields are read-only in Tryton, so a re-activation is written
    before the other changes and a deactivation after them."""
    active = values.pop("active", None)
    if active is True:
        client.write(model, [record], {"active": True})
    if values:
        client.write(model, [record], values)
    if active is False:
        client.write(model, [record], {"active": False})


def _address(a: Payload) -> dict[str, Any]:
    values: dict[str, Any] = {name: a.text(name) for name in _ADDRESS_FIELDS if a.has(name)}
    if a.has("name"):
        values["party_name"] = a.text("name")
    return values


def upsert_party(client: TrytonClient, call: Call) -> Outcome:
    """Create or update a party found by ``id`` or ``code`` (else by exact ``name``)."""
    p = Payload("upsert_party", call.payload)
    name = p.req_text("name")
    code = p.text("code")
    party = p.ref("id")
    if party is None:
        domain = [["code", "=", code]] if code is not None else [["name", "=", name]]
        # an archived party is still the one with this code: re-activating beats creating a duplicate
        found = client.search("party.party", [*domain, _ANY_STATE], limit=1, order=[("id", "ASC")])
        party = found[0] if found else None
    addresses = [_address(a) for a in p.items("addresses")]
    values: dict[str, Any] = {"name": name}
    if code is not None and party is None:
        values["code"] = code  # Tryton refuses to write a party's code once set, even unchanged
    if p.has("active"):
        values["active"] = p.flag("active", True)
    if party is None:
        # Sales and purchases need an address: give every new party at least an empty one.
        values["addresses"] = [["create", addresses or [{}]]]
        party = client.create("party.party", [values])[0]
        created = True
    else:
        if addresses:
            existing = client.search("party.address", [["party", "=", party]], order=[("sequence", "ASC")])
            commands: list[Any] = [["write", [aid], vals] for aid, vals in zip(existing, addresses, strict=False)]
            if len(addresses) > len(existing):
                commands.append(["create", addresses[len(existing):]])
            values["addresses"] = commands
        _write_keeping_active_last(client, "party.party", party, values)
        created = False
    row = client.read("party.party", [party], ["code", "name"])[0]
    return Outcome(result={"id": party, "code": row["code"], "name": row["name"], "created": created},
                   reference=str(party))


def _account_category(client: TrytonClient, p: Payload) -> int:
    given = p.ref("account_category")
    if given is not None:
        return given
    found = client.search("product.category", [["accounting", "=", True], ["name", "=", ACCOUNT_CATEGORY]],
                          limit=1) or client.search("product.category", [["accounting", "=", True]], limit=1)
    if not found:
        raise PermanentError("tryton.upsert_product: no accounting product category in this database; give "
                             "'account_category' or provision the database (adapters.tryton.seed)")
    return found[0]


def _unit(client: TrytonClient, p: Payload) -> int:
    unit = p.ref("unit_id")
    if unit is not None:
        return unit
    symbol = p.text("unit") or "u"
    found = client.search("product.uom", [["symbol", "=", symbol]], limit=1)
    if not found:
        raise PermanentError(f"tryton.upsert_product: field 'unit' {symbol!r} is no unit of measure symbol")
    return found[0]


def upsert_product(client: TrytonClient, call: Call) -> Outcome:
    """Create or update a goods product (template + variant) by ``id`` or ``code``, with its suppliers."""
    p = Payload("upsert_product", call.payload)
    product = p.ref("id")
    code = p.text("code", required=product is None)
    template: int | None = None
    if product is None:
        found = client.search_read("product.product", [["code", "=", code], _ANY_STATE], ["template"], limit=1)
        if found:
            product, template = found[0]["id"], found[0]["template"]
    elif product is not None:
        template = client.read("product.product", [product], ["template"])[0]["template"]
    values: dict[str, Any] = {}
    if p.has("name"):
        values["name"] = p.text("name")
    for name in ("list_price",):
        if p.has(name):
            values[name] = p.decimal(name)
    if p.has("active"):
        values["active"] = p.flag("active", True)
    if "supply_on_sale" in p.data:
        choice = p.data["supply_on_sale"]
        if choice not in (None, "always", "stock_first"):
            raise PermanentError("tryton.upsert_product: field 'supply_on_sale' must be null, 'always' or "
                                 f"'stock_first', got {choice!r}")
        values["supply_on_sale"] = choice
    suppliers = []
    for s in p.items("suppliers"):
        supplier: dict[str, Any] = {"party": s.req_ref("party")}
        if s.has("lead_time_days"):
            supplier["lead_time"] = dt.timedelta(days=s.number("lead_time_days") or 0.0)
        if s.has("code"):
            supplier["code"] = s.text("code")
        if s.has("price"):
            supplier["prices"] = [["create", [{"quantity": 0.0, "unit_price": s.decimal("price")}]]]
        suppliers.append(supplier)
    if template is None:
        unit = _unit(client, p)
        values.update(code=code, type=p.text("type") or "goods", default_uom=unit, sale_uom=unit, purchase_uom=unit,
                      salable=True, purchasable=True, account_category=_account_category(client, p),
                      products=[["create", [{}]]])
        values.setdefault("name", code)
        values.setdefault("list_price", p.decimal("list_price") or 0)
        if suppliers:
            values["product_suppliers"] = [["create", suppliers]]
        template = client.create("product.template", [values])[0]
        product = client.read("product.template", [template], ["products"])[0]["products"][0]
        created = True
    else:
        if suppliers:
            # Update by party: a supplier already listed keeps what the payload does not name (its lead time,
            # owned by the SRM, survives the SCM's update), a new one is added.
            existing = {row["party"]: row["id"] for row in client.search_read(
                "purchase.product_supplier", [["template", "=", template],
                                              ["party", "in", [s["party"] for s in suppliers]]], ["party"])}
            commands: list[Any] = []
            for supplier in suppliers:
                known = existing.get(supplier["party"])
                if known is None:
                    commands.append(["create", [supplier]])
                    continue
                changes = {k: v for k, v in supplier.items() if k != "party"}
                if "prices" in changes:
                    old_prices = client.search("purchase.product_supplier.price", [["product_supplier", "=", known]])
                    changes["prices"] = ([["delete", old_prices]] if old_prices else []) + changes["prices"]
                if changes:
                    commands.append(["write", [known], changes])
            if commands:
                values["product_suppliers"] = commands
        if values:
            _write_keeping_active_last(client, "product.template", template, values)
        created = False
    assert product is not None
    row = client.read("product.product", [product], ["code", "name"])[0]
    return Outcome(result={"id": product, "template": template, "code": row["code"], "name": row["name"],
                           "created": created}, reference=str(product))
