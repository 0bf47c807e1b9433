"""The ``odoo`` adapter: sale and purchase orders, partners and products in one Odoo database.

JSON-2 (Odoo 19+, the default) or ``/jsonrpc`` (Odoo <= 18) by the ``protocol`` setting; polling on
``write_date`` (Odoo's automation webhooks are unsigned, fire-and-forget and time out after one second, so
polling is the dependable way in). Payload shapes are in ``docs/adapters/odoo.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from adapters.base import Adapter, Call, Health, MasterRecord, Outcome, PollResult, operation, trigger
from adapters.http.settings import SETTINGS_SCHEMA, validate_settings
from adapters.odoo import orders
from adapters.odoo.client import OdooClient
from adapters.odoo.inbound import Poller
from bus.errors import DeliveryError

__all__ = ["OdooAdapter"]

_SHARED = {k: SETTINGS_SCHEMA["properties"][k] for k in ("timeout", "pool", "errors", "verify_tls", "transport")}

#: What ``ironbus xref check`` lists by default: (model, domain, code field).
MASTER_DEFAULTS: dict[str, tuple[str, list[Any], str]] = {
    "customer": ("res.partner", [["customer_rank", ">", 0]], "ref"),
    "supplier": ("res.partner", [["supplier_rank", ">", 0]], "ref"),
    "material": ("product.product", [], "default_code"),
}

_MASTER_ENTRY = {"type": "object", "additionalProperties": False, "properties": {
    "domain": {"type": "array", "description": "An Odoo domain selecting the records, e.g. [[ref, '=like', 'C-%']]."},
    "code_field": {"type": "string", "minLength": 1, "description": "Field compared as the code (ref/default_code)."}}}


class OdooAdapter(Adapter):
    """Odoo ERP over JSON-2 or JSON-RPC: orders, partners, products, write_date polling."""

    name: ClassVar[str] = "odoo"
    summary: ClassVar[str] = "Odoo ERP (JSON-2 for 19+, /jsonrpc for <= 18): sale/purchase orders, partners, products"
    settings_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object", "additionalProperties": False, "required": ["url", "api_key"],
        "properties": {
            "url": {"type": "string", "pattern": "^https?://", "description": "Server URL, e.g. https://acme.odoo.com"},
            "database": {"type": "string", "minLength": 1,
                         "description": "Database name: sent as X-Odoo-Database (JSON-2), required for jsonrpc."},
            "api_key": {"type": "string", "minLength": 1,
                        "description": "API key of the integration user (${ODOO_API_KEY})."},
            "protocol": {"enum": ["json2", "jsonrpc"], "default": "json2",
                         "description": "json2 for Odoo 19+, jsonrpc for Odoo 18 and older."},
            "login": {"type": "string", "minLength": 1, "description": "jsonrpc only: the user's login."},
            "context": {"type": "object", "description": "Context sent with every call, e.g. {lang: en_US, tz: UTC}."},
            "poll": {"type": "object", "additionalProperties": False, "properties": {
                "page_size": {"type": "integer", "minimum": 1, "maximum": 5000, "default": 200},
                "max_records": {"type": "integer", "minimum": 1, "default": 2000,
                                "description": "Records per poll at most; the rest come on the next poll."},
                "overlap": {"type": "number", "minimum": 0, "default": 2,
                            "description": "Seconds a poll looks back before the watermark."},
                "start": {"type": "string",
                          "description": "First watermark, 'YYYY-MM-DD HH:MM:SS' UTC (default: all)."},
                "fields": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}},
                           "description": "Extra fields to read per model: {sale.order: [x_studio_field]}."},
                "domain": {"type": "object", "additionalProperties": {"type": "array"},
                           "description": "Extra domain per model: {purchase.order: [[state, '!=', draft]]}."}}},
            "master_data": {"type": "object", "additionalProperties": False,
                            "description": "Which entities `ironbus xref check` lists here, and how; without "
                                           "this block all three (customer_rank > 0, supplier_rank > 0, "
                                           "every product variant). {} lists none.",
                            "properties": {e: _MASTER_ENTRY for e in MASTER_DEFAULTS}},
            "triggers": {"type": "object", "description": "Poll timing per trigger: {purchase_orders_changed: "
                                                          "{interval: 30s}} or {…: {schedule: '*/5 * * * *'}}."},
            **_SHARED,
        },
        "if": {"properties": {"protocol": {"const": "jsonrpc"}}, "required": ["protocol"]},
        "then": {"required": ["database", "login"]},
    }

    def __init__(self, system: str, settings: Mapping[str, Any]) -> None:
        super().__init__(system, settings)
        validate_settings(system, self.settings, self.settings_schema)
        self.client = OdooClient(system, self.settings)
        poll = dict(self.settings.get("poll") or {})
        self.poller = Poller(self.client, poll, lambda: self.store)
        self._domains: Mapping[str, list[Any]] = poll.get("domain") or {}

    def open(self) -> None:
        self.client.login()

    def health(self) -> Health:
        try:
            version = self.client.version()
            self.client.call("res.partner", "search", domain=[], limit=1)
        except Exception as exc:  # health() must never raise
            return Health(False, str(exc) if isinstance(exc, DeliveryError) else f"{type(exc).__name__}: {exc}")
        shown = (version.get("server_version") or version.get("version")) if isinstance(version, dict) else version
        return Health(True, f"Odoo {shown}, {self.client.protocol}")

    def close(self) -> None:
        if not self.closed:
            self.client.close()
        super().close()

    # -- master data -----------------------------------------------------------------------------------
    def master_data(self, entity: str) -> list[MasterRecord] | None:
        default = MASTER_DEFAULTS.get(entity)
        if default is None:
            return None
        model, domain, code_field = default
        declared = self.settings.get("master_data")
        if declared is not None and entity not in declared:
            return None  # the system declares which entities it holds; others are not its business
        own = (declared or {}).get(entity) or {}
        domain = own.get("domain", domain)
        code_field = own.get("code_field", code_field)
        out: list[MasterRecord] = []
        offset, size = 0, 500
        while True:
            page = self.client.call(model, "search_read", domain=domain, fields=[code_field, "name"],
                                    offset=offset, limit=size, order="id asc")
            out.extend(MasterRecord(id=str(r["id"]), code=str(r[code_field]) if r.get(code_field) else None,
                                    name=r.get("name") or None) for r in page)
            offset += len(page)
            if len(page) < size:
                return out

    # -- triggers --------------------------------------------------------------------------------------
    def _poll(self, model: str, watermark: str | None) -> PollResult:
        return self.poller.poll(model, watermark, self._domains.get(model) or ())

    @trigger(kind="poll", interval=30.0)
    def sale_orders_changed(self, watermark: str | None) -> PollResult:
        """Sale orders created or changed (write_date), with their lines."""
        return self._poll("sale.order", watermark)

    @trigger(kind="poll", interval=30.0)
    def purchase_orders_changed(self, watermark: str | None) -> PollResult:
        """Purchase orders created or changed (write_date), with their lines."""
        return self._poll("purchase.order", watermark)

    @trigger(kind="poll", interval=300.0)
    def partners_changed(self, watermark: str | None) -> PollResult:
        """Contacts (customers, suppliers) created or changed."""
        return self._poll("res.partner", watermark)

    @trigger(kind="poll", interval=300.0)
    def products_changed(self, watermark: str | None) -> PollResult:
        """Product variants created or changed."""
        return self._poll("product.product", watermark)

    # -- operations ------------------------------------------------------------------------------------
    @operation()
    def upsert_sale_order(self, call: Call) -> Outcome:
        """Create or update a sale order by reference (client_order_ref); confirm or cancel it when asked."""
        return orders.upsert_order(self.client, orders.SALE, "upsert_sale_order", call, self.store)

    @operation()
    def confirm_sale_order(self, call: Call) -> Outcome:
        """Confirm a quotation (action_confirm); payload {id | reference}."""
        return orders.set_state(self.client, orders.SALE, "confirm_sale_order", call, "confirmed")

    @operation()
    def cancel_sale_order(self, call: Call) -> Outcome:
        """Cancel a sale order (action_cancel); payload {id | reference}."""
        return orders.set_state(self.client, orders.SALE, "cancel_sale_order", call, "cancelled")

    @operation()
    def upsert_purchase_order(self, call: Call) -> Outcome:
        """Create or update a purchase order by reference (origin); confirm or cancel it when asked."""
        return orders.upsert_order(self.client, orders.PURCHASE, "upsert_purchase_order", call, self.store)

    @operation()
    def confirm_purchase_order(self, call: Call) -> Outcome:
        """Confirm an RFQ into a purchase order (button_confirm); payload {id | reference}."""
        return orders.set_state(self.client, orders.PURCHASE, "confirm_purchase_order", call, "confirmed")

    @operation()
    def cancel_purchase_order(self, call: Call) -> Outcome:
        """Cancel a purchase order (button_cancel); payload {id | reference}."""
        return orders.set_state(self.client, orders.PURCHASE, "cancel_purchase_order", call, "cancelled")

    @operation()
    def upsert_partner(self, call: Call) -> Outcome:
        """Create or update a contact by id or code (ref)."""
        return orders.upsert_partner(self.client, call)

    @operation()
    def upsert_product(self, call: Call) -> Outcome:
        """Create or update a product variant by id or code (default_code)."""
        return orders.upsert_product(self.client, call)
