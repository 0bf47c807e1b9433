"""The ``erpnext`` adapter: Sales Orders, Purchase Orders, Material Requests, Items, Customers and Suppliers in
one ERPNext (Frappe) site over the REST API, with its submit / cancel / amend lifecycle, ``modified`` polling
and signed webhooks. Payload shapes are in ``docs/adapters/erpnext.md``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from adapters.base import Adapter, Call, Health, MasterRecord, Outcome, PollResult, WebhookRequest, operation, trigger
from adapters.erpnext import documents
from adapters.erpnext.client import FrappeClient
from adapters.erpnext.inbound import Poller, explode_items, parse_webhook
from adapters.http.settings import SETTINGS_SCHEMA, validate_settings
from adapters.signatures import Verifier
from bus.errors import ConfigError, DeliveryError

__all__ = ["ErpnextAdapter"]

_SHARED = {k: SETTINGS_SCHEMA["properties"][k] for k in ("timeout", "pool", "errors", "verify_tls", "transport")}

#: What ``ironbus xref check`` lists: (doctype, code field, name field).
MASTER_DEFAULTS: dict[str, tuple[str, str, str]] = {
    "customer": ("Customer", "name", "customer_name"),
    "supplier": ("Supplier", "name", "supplier_name"),
    "material": ("Item", "item_code", "item_name"),
}
_MASTER_ENTRY = {"type": "object", "additionalProperties": False, "properties": {
    "filters": {"type": "array", "description": "Frappe filters, e.g. [[disabled, '=', 0]]."},
    "code_field": {"type": "string", "minLength": 1}, "name_field": {"type": "string", "minLength": 1}}}


class ErpnextAdapter(Adapter):
    """ERPNext / Frappe over /api/resource and /api/method with token auth."""

    name: ClassVar[str] = "erpnext"
    summary: ClassVar[str] = ("ERPNext (Frappe REST): sales/purchase orders, material requests, items, customers, "
                              "suppliers; submit/cancel/amend; modified polling; signed webhooks")
    webhook_blocking: ClassVar[bool] = False
    settings_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object", "additionalProperties": False, "required": ["url", "api_key", "api_secret"],
        "properties": {
            "url": {"type": "string", "pattern": "^https?://", "description": "Site URL, e.g. https://erp.example.com"},
            "api_key": {"type": "string", "minLength": 1, "description": "The integration user's API Key."},
            "api_secret": {"type": "string", "minLength": 1, "description": "Its API Secret (${ERPNEXT_API_SECRET})."},
            "webhook_secret": {"type": "string", "minLength": 1,
                               "description": "The Webhook's secret: verifies X-Frappe-Webhook-Signature."},
            "company": {"type": "string", "description": "Company set on new documents (default: the user's)."},
            "order_change": {"enum": ["update_items", "amend"], "default": "update_items",
                             "description": "How a submitted order is changed: Update Items in place, or cancel "
                                            "and amend."},
            "reference_fields": {"type": "object", "additionalProperties": {"type": "string"},
                                 "description": "Field holding the bus's reference per doctype (default: Sales "
                                                "Order po_no), e.g. {Purchase Order: custom_ironbus_ref}."},
            "poll": {"type": "object", "additionalProperties": False, "properties": {
                "page_size": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                "max_records": {"type": "integer", "minimum": 1, "default": 1000},
                "overlap": {"type": "number", "minimum": 0, "default": 2,
                            "description": "Seconds a poll looks back before the watermark."},
                "start": {"type": "string", "description": "First watermark, 'YYYY-MM-DD HH:MM:SS' site time."},
                "filters": {"type": "object", "additionalProperties": {"type": "array"},
                            "description": "Extra filters per doctype: {Sales Order: [[company, '=', ACME]]}."}}},
            "master_data": {"type": "object", "additionalProperties": False,
                            "description": "Which entities `ironbus xref check` lists here, and how; without this "
                                           "block all three (Customer, Supplier, Item). {} lists none.",
                            "properties": {e: _MASTER_ENTRY for e in MASTER_DEFAULTS}},
            "triggers": {"type": "object", "description": "Poll timing per trigger: {sales_orders_changed: "
                                                          "{interval: 30s}}."},
            **_SHARED,
        },
    }

    def __init__(self, system: str, settings: Mapping[str, Any]) -> None:
        super().__init__(system, settings)
        validate_settings(system, self.settings, self.settings_schema)
        self.client = FrappeClient(system, self.settings)
        self.poller = Poller(self.client, self.settings.get("poll") or {})
        self._references = {"Sales Order": "po_no", **(self.settings.get("reference_fields") or {})}

    def health(self) -> Health:
        try:
            user = self.client.http.request("GET", "/api/method/frappe.auth.get_logged_user",
                                            what=f"{self.system}: health").json()
        except Exception as exc:  # health() must never raise
            return Health(False, str(exc) if isinstance(exc, DeliveryError) else f"{type(exc).__name__}: {exc}")
        return Health(True, f"logged in as {user.get('message') if isinstance(user, dict) else user}")

    def close(self) -> None:
        if not self.closed:
            self.client.close()
        super().close()

    # -- master data -----------------------------------------------------------------------------------
    def master_data(self, entity: str) -> list[MasterRecord] | None:
        default = MASTER_DEFAULTS.get(entity)
        if default is None:
            return None
        declared = self.settings.get("master_data")
        if declared is not None and entity not in declared:
            return None  # the system declares which entities it holds; others are not its business
        own = (declared or {}).get(entity) or {}
        doctype, code_field, name_field = default
        code_field, name_field = own.get("code_field", code_field), own.get("name_field", name_field)
        out: list[MasterRecord] = []
        start, size = 0, 500
        while True:
            page = self.client.get_list(doctype, fields=list(dict.fromkeys(["name", code_field, name_field])),
                                        filters=own.get("filters") or [], order_by="name asc", limit_start=start,
                                        limit_page_length=size)
            out.extend(MasterRecord(id=str(r["name"]), code=str(r[code_field]) if r.get(code_field) else None,
                                    name=r.get(name_field) or None) for r in page)
            start += len(page)
            if len(page) < size:
                return out

    # -- triggers --------------------------------------------------------------------------------------
    @trigger(kind="poll", interval=30.0)
    def sales_orders_changed(self, watermark: str | None) -> PollResult:
        """Sales Orders created, saved, submitted, updated or cancelled (modified), with items."""
        return self.poller.poll("Sales Order", watermark)

    @trigger(kind="poll", interval=30.0)
    def purchase_orders_changed(self, watermark: str | None) -> PollResult:
        """Purchase Orders created or changed (modified), with items."""
        return self.poller.poll("Purchase Order", watermark)

    @trigger(kind="poll", interval=30.0)
    def material_requests_changed(self, watermark: str | None) -> PollResult:
        """Material Requests (what planning wants bought) created or changed, with items."""
        return self.poller.poll("Material Request", watermark)

    @trigger(kind="poll", interval=30.0)
    def material_request_items_changed(self, watermark: str | None) -> PollResult:
        """One record per Material Request row (with its header, Sales Order reference and default supplier)."""
        return explode_items(self.client, self.poller.poll("Material Request", watermark))

    @functools.cached_property
    def _verifier(self) -> Verifier:
        secret = self.settings.get("webhook_secret")
        if not secret:
            raise ConfigError(f"system {self.system!r}: settings/webhook_secret is needed to verify Frappe webhooks "
                              "(turn on 'Enable Security' on the Webhook and copy its secret)")
        return Verifier(scheme="frappe", secret=secret)

    @trigger(kind="webhook")
    def document_events(self, request: WebhookRequest) -> list[Any]:
        """Documents pushed by a Frappe Webhook (X-Frappe-Webhook-Signature verified)."""
        self._verifier.verify(request)
        return parse_webhook(request)

    def webhook_key(self, trigger_name: str) -> Callable[[Any], str | None] | None:
        return lambda doc: str(doc["name"]) if isinstance(doc, dict) and doc.get("name") else None

    # -- operations ------------------------------------------------------------------------------------
    def _upsert(self, doctype: str, op: str, call: Call) -> Outcome:
        return documents.upsert_order(self.client, documents.ORDERS[doctype], op, call,
                                      reference_field=self._references.get(doctype),
                                      order_change=str(self.settings.get("order_change", "update_items")),
                                      company=self.settings.get("company"))

    @operation()
    def upsert_sales_order(self, call: Call) -> Outcome:
        """Create or change a Sales Order by reference (po_no): draft edit, Update Items or amend; cancel."""
        return self._upsert("Sales Order", "upsert_sales_order", call)

    @operation()
    def reschedule_sales_order(self, call: Call) -> Outcome:
        """Move a Sales Order's delivery dates (Update Items when submitted) and note why; payload
        {reference | name, date, reason?}."""
        return documents.reschedule_order(self.client, documents.ORDERS["Sales Order"], "reschedule_sales_order",
                                          call, reference_field=self._references.get("Sales Order"))

    @operation()
    def upsert_purchase_order(self, call: Call) -> Outcome:
        """Create or change a Purchase Order (by name, or by the reference field configured)."""
        return self._upsert("Purchase Order", "upsert_purchase_order", call)

    @operation()
    def upsert_material_request(self, call: Call) -> Outcome:
        """Create or change a Material Request (by name, or by the reference field configured)."""
        return self._upsert("Material Request", "upsert_material_request", call)

    @operation()
    def submit_document(self, call: Call) -> Outcome:
        """Submit a draft document (frappe.client.submit); payload {doctype, name}."""
        return documents.change_state(self.client, "submit_document", call, "submitted")

    @operation()
    def cancel_document(self, call: Call) -> Outcome:
        """Cancel a submitted document (frappe.client.cancel); payload {doctype, name}."""
        return documents.change_state(self.client, "cancel_document", call, "cancelled")

    @operation()
    def upsert_customer(self, call: Call) -> Outcome:
        """Create or update a Customer by code (its name)."""
        return documents.upsert_master(self.client, "Customer", "upsert_customer", call,
                                       {"customer_type": "Company"})

    @operation()
    def upsert_supplier(self, call: Call) -> Outcome:
        """Create or update a Supplier by code (its name)."""
        return documents.upsert_master(self.client, "Supplier", "upsert_supplier", call, {})

    @operation()
    def upsert_item(self, call: Call) -> Outcome:
        """Create or update an Item by code (item_code)."""
        return documents.upsert_master(self.client, "Item", "upsert_item", call,
                                       {"item_group": "All Item Groups", "stock_uom": "Nos"})
