"""The Tryton ERP adapter (registry name ``tryton``): one system = one Tryton database over JSON-RPC.

Triggers poll on create/write dates (Tryton has no webhooks); operations take canonical payloads whose
record references are Tryton ids already resolved by the mapping (``xref_to``). Payload shapes are in
``docs/adapters/tryton.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from adapters.base import Adapter, Call, Health, MasterRecord, Outcome, PollResult, operation, trigger
from adapters.tryton import confirmation, demand, masterdata, orders, procurement, purchases, sales, supplierterms
from adapters.tryton.client import TrytonClient
from adapters.tryton.echo import WriteGate, WriteLog
from adapters.tryton.inbound import Poller
from bus.errors import DeliveryError

__all__ = ["TrytonAdapter"]


class TrytonAdapter(Adapter):
    """Sales, supply planning, purchases and master data in one Tryton database."""

    name: ClassVar[str] = "tryton"
    summary: ClassVar[str] = "Tryton ERP over JSON-RPC: sales, supply planning, purchases, parties, products"
    settings_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["url", "database", "user", "password"],
        "properties": {
            "url": {"type": "string", "pattern": "^https?://", "description": "Server base URL, e.g. "
                    "http://127.0.0.1:8000 (without the database)."},
            "database": {"type": "string", "minLength": 1, "description": "Database name."},
            "user": {"type": "string", "minLength": 1},
            "password": {"type": "string"},
            "timeout": {"type": "number", "exclusiveMinimum": 0, "default": 30,
                        "description": "Seconds per HTTP request."},
            "company": {"type": "integer", "minimum": 1,
                        "description": "Company id to work in; default: the user's current company."},
            "poll_overlap": {"type": "number", "minimum": 0, "default": 2,
                             "description": "Seconds polls look back before the watermark (dedup drops repeats)."},
            "master_data": {
                "type": "object", "additionalProperties": False,
                "description": "Which records are customers, materials and suppliers here, for `ironbus xref "
                               "check`: {customer: {model: party.party, domain: [[code, like, 'C-%']]}}.",
                "properties": {entity: {
                    "type": "object", "additionalProperties": False, "required": ["model"],
                    "properties": {"model": {"enum": ["party.party", "product.product"]},
                                   "domain": {"type": "array", "description": "A Tryton search domain."},
                                   "name_field": {"type": "string", "minLength": 1, "default": "name",
                                                  "description": "Field reported as the record's name "
                                                                 "(e.g. 'rec_name' for Tryton's '[code] name')."}}}
                    for entity in ("customer", "material", "supplier")},
            },
            "triggers": {"type": "object", "description": "Poll timing per trigger: {sales_changed: {interval: "
                                                          "'5s'}} or a cron schedule: {sales_changed: {schedule: "
                                                          "'*/5 * * * *'}}."},
        },
    }

    def __init__(self, system: str, settings: Mapping[str, Any]) -> None:
        super().__init__(system, settings)
        self.client = TrytonClient(str(self.settings["url"]), str(self.settings["database"]),
                                   str(self.settings["user"]), str(self.settings.get("password", "")),
                                   timeout=float(self.settings.get("timeout", 30)),
                                   company=self.settings.get("company"))
        self.poller = Poller(self.client, float(self.settings.get("poll_overlap", 2)))
        # polls that report the bus's own writes wait for the writing operations of this process (echo.WriteGate)
        self.gate = WriteGate()

    @property
    def writes(self) -> WriteLog:
        """What this adapter's operations wrote, per bus transaction (in the store the runtime binds)."""
        return WriteLog(self.store)

    def _wrote_sale(self, outcome: Outcome, call: Call) -> Outcome:
        self.writes.record("sale.sale", [(outcome.result or {}).get("id")], call)
        return outcome

    # -- lifecycle -------------------------------------------------------------------------------------
    def open(self) -> None:
        self.client.login()

    def health(self) -> Health:
        try:
            version = self.client.server("common.server.version")
        except DeliveryError as exc:
            return Health(False, str(exc))
        return Health(True, f"trytond {version}, database {self.client.database}")

    def close(self) -> None:
        if not self.closed:
            self.client.close()
        super().close()

    # -- master data -----------------------------------------------------------------------------------
    def master_data(self, entity: str) -> list[MasterRecord] | None:
        """The records ``settings.master_data`` declares for ``entity`` (None when it declares none)."""
        spec = (self.settings.get("master_data") or {}).get(entity)
        if not spec:
            return None
        model = str(spec["model"])
        name_field = str(spec.get("name_field") or "name")
        product = model == "product.product"
        extra = ["default_uom.symbol"] if product else []
        # archived records too: a record deactivated in its owner but active elsewhere is drift to report
        rows = self.client.search_read(model, [*(spec.get("domain") or []), ["active", "in", [True, False]]],
                                       ["code", name_field, "active", *extra], order=[("id", "ASC")])
        records = []
        for r in rows:
            attributes: dict[str, Any] = {"name": r.get(name_field), "active": bool(r.get("active"))}
            if product:
                attributes["unit"] = (r.get("default_uom.") or {}).get("symbol")
            records.append(MasterRecord(id=str(r["id"]), code=r.get("code") or None,
                                        name=r.get(name_field) or None, attributes=attributes))
        return records

    # -- triggers --------------------------------------------------------------------------------------
    @trigger(kind="poll", interval=5.0)
    def sales_changed(self, watermark: str | None) -> PollResult:
        """Sales created or changed (with lines, party, dates, state, number, reference); a sale that belongs to an
        order of several sales (supplementary sales, :mod:`adapters.tryton.orders`) carries the whole ``order``."""
        self.gate.settled()
        polled = self.poller.poll("sale.sale", Poller.SALE_FIELDS, watermark, self.poller.sales)
        polled = orders.with_orders(self.client, polled, self.poller.sales,
                                    [*Poller.SALE_FIELDS, "create_date", "write_date"])
        return self.writes.correlate("sale.sale", polled)

    @trigger(kind="poll", interval=5.0)
    def purchase_requests_changed(self, watermark: str | None) -> PollResult:
        """Purchase requests created or changed (supply planning's output; origin sale included)."""
        self.gate.settled()
        return self.writes.correlate("purchase.request", self.poller.poll(
            "purchase.request", Poller.REQUEST_FIELDS, watermark, self.poller.requests))

    @trigger(kind="poll", interval=5.0)
    def purchases_changed(self, watermark: str | None) -> PollResult:
        """Purchase orders created or changed (with lines and delivery dates)."""
        return self.poller.poll("purchase.purchase", Poller.PURCHASE_FIELDS, watermark, self.poller.purchases)

    @trigger(kind="poll", interval=5.0)
    def served_orders_changed(self, watermark: str | None) -> PollResult:
        """Purchases the bus placed, once per customer order they serve (only that order's lines, with what the
        incoming moves still promise): where a supplier issue fans out to every affected order."""
        self.gate.settled()
        return self.writes.correlate("purchase.purchase", procurement.served_orders(self.purchases_changed(watermark)))

    @trigger(kind="poll", interval=5.0)
    def grouped_purchases_due(self, watermark: str | None) -> PollResult:
        """Grouped purchases whose collection window has passed and that wait to be released (confirmed)."""
        return procurement.grouped_purchases_due(self.client, self.store, watermark)

    @trigger(kind="poll", interval=30.0)
    def parties_changed(self, watermark: str | None) -> PollResult:
        """Parties (customers, suppliers) created or changed, with addresses."""
        return self.poller.poll("party.party", Poller.PARTY_FIELDS, watermark, self.poller.parties, archived=True)

    @trigger(kind="poll", interval=30.0)
    def products_changed(self, watermark: str | None) -> PollResult:
        """Products created or changed (variant or template), with suppliers."""
        return self.poller.poll("product.product", Poller.PRODUCT_FIELDS, watermark, self.poller.products,
                                dates=("create_date", "write_date", "template.write_date"), archived=True)

    # -- operations ------------------------------------------------------------------------------------
    @operation()
    def upsert_sale(self, call: Call) -> Outcome:
        """Create or update a sale by reference (optionally quote and confirm it)."""
        return sales.upsert_sale(self.client, call)

    @operation()
    def update_demand(self, call: Call) -> Outcome:
        """SCM: make the sale(s) for a customer order match its demand and confirm them."""
        with self.gate.writing():
            outcome = demand.update_demand(self.client, call)
            result = outcome.result or {}
            self.writes.record("sale.sale", result.get("sales") or [], call)
            self.writes.record("purchase.request", result.get("purchase_requests") or [], call)
            return outcome

    @operation()
    def add_sale_note(self, call: Call) -> Outcome:
        """CRM: append a note to a sale's comment (once per idempotency key)."""
        with self.gate.writing():
            return self._wrote_sale(sales.add_sale_note(self.client, call), call)

    @operation()
    def update_promised_date(self, call: Call) -> Outcome:
        """CRM: record a new promised date on a sale."""
        with self.gate.writing():
            return self._wrote_sale(sales.update_promised_date(self.client, call), call)

    @operation()
    def run_supply_planning(self, call: Call) -> Outcome:
        """SCM: run stock supply planning (creates purchase requests for shortages)."""
        return purchases.run_supply_planning(self.client, call)

    @operation()
    def create_purchase(self, call: Call) -> Outcome:
        """SRM: create, quote and confirm a purchase order (once per reference)."""
        return purchases.create_purchase(self.client, call)

    @operation()
    def procure(self, call: Call) -> Outcome:
        """SRM: make the purchase line serving one request of a customer order match it (create, group, amend;
        args ``grouping: order|supplier``, ``window``)."""
        with self.gate.writing():
            outcome = procurement.procure(self.client, self.store, call)
            self.writes.record("purchase.purchase", [(outcome.result or {}).get("id")], call)
            return outcome

    @operation()
    def release_purchase(self, call: Call) -> Outcome:
        """SRM: confirm a grouped purchase whose collection window has passed."""
        with self.gate.writing():
            outcome = procurement.release_purchase(self.client, self.store, call)
            self.writes.record("purchase.purchase", [(outcome.result or {}).get("id")], call)
            return outcome

    @operation()
    def record_supplier_confirmation(self, call: Call) -> Outcome:
        """SRM: record that the supplier confirmed a purchase (on firm terms its lines can then not be reduced)."""
        with self.gate.writing():
            return supplierterms.record_supplier_confirmation(self.client, call)

    @operation()
    def update_purchase(self, call: Call) -> Outcome:
        """SRM: move a purchase's delivery date, change quantities, or cancel it."""
        # Several calls (the incoming moves, then the note): this process's polls wait for the last, so a supplier
        # issue is reported once, whole, not first with the moves and the old note.
        with self.gate.writing():
            return purchases.update_purchase(self.client, call)

    @operation()
    def confirm_purchase(self, call: Call) -> Outcome:
        """SRM: apply a supplier's confirmation: lines down to the confirmed quantities (amended), new dates."""
        with self.gate.writing():
            outcome = confirmation.confirm_purchase(self.client, call)
            self.writes.record("purchase.purchase", [(outcome.result or {}).get("id")], call)
            return outcome

    @operation()
    def upsert_party(self, call: Call) -> Outcome:
        """Create or update a party by id or code."""
        return masterdata.upsert_party(self.client, call)

    @operation()
    def upsert_product(self, call: Call) -> Outcome:
        """Create or update a product by id or code, with its suppliers."""
        return masterdata.upsert_product(self.client, call)
