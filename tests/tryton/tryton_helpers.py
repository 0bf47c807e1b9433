"""Helpers for the Tryton tests: adapter settings, unique names, calls and master data."""

from __future__ import annotations

import uuid
from typing import Any

from adapters.base import Call
from adapters.tryton import TrytonAdapter
from bus.envelope import Event
from tryton import tryton_env


def settings(server: tryton_env.TrytonServer, db: str, **extra: Any) -> dict[str, Any]:
    return {"url": server.url, "database": db, "user": tryton_env.ADMIN_USER,
            "password": tryton_env.ADMIN_PASSWORD, "timeout": 30, **extra}



def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def call(payload: Any, key: str | None = None) -> Call:
    """A Call as the bus would deliver it; the same ``key`` means a redelivery of the same event."""
    event = Event(type="test.event", source="tests", data=payload)
    return Call(event=event, payload=payload, idempotency_key=key or event.id, route="test")


def master_data(adapter: TrytonAdapter, *, supply_on_sale: str | None = "always",
                price: str = "4.00") -> dict[str, int]:
    """A customer, a supplier (lead time 3 days, given price) and a product, all with unique codes."""
    customer = adapter.call("upsert_party", call({"name": unique("Customer"), "code": unique("C"),
                                                  "addresses": [{"street": "1 Main St", "city": "Liège"}]}))
    supplier = adapter.call("upsert_party", call({"name": unique("Supplier"), "code": unique("S")}))
    product = adapter.call("upsert_product", call({
        "code": unique("P"), "name": "Widget", "list_price": "10.00", "supply_on_sale": supply_on_sale,
        "suppliers": [{"party": supplier.result["id"], "lead_time_days": 3, "price": price}]}))
    return {"customer": customer.result["id"], "supplier": supplier.result["id"], "product": product.result["id"]}
