"""The SAP S/4HANA adapter (registry name ``sap``): the published OData V2 APIs of sales, purchasing and
master data, polled on ``LastChangeDateTime`` or pushed as business events.

Payloads use SAP's own field names (``SoldToParty``, ``to_Item``): mappings translate between them and the
canonical model. See ``docs/adapters/sap.md``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from email.utils import format_datetime
from typing import Any, ClassVar

from adapters.base import (
    Adapter,
    Call,
    Health,
    MasterRecord,
    Outcome,
    PollResult,
    WebhookRequest,
    operation,
    trigger,
)
from adapters.http.settings import validate_settings
from adapters.http.transport import Timeouts
from adapters.sap.batch import BatchRequest, BatchResponse
from adapters.sap.client import SapClient, auth_for
from adapters.sap.inbound import FEEDS, Poller, parse_events, parse_watermark, verify_basic
from adapters.sap.odata import entity_path, plain, results, single
from adapters.sap.outbound import DOCUMENTS, Document, encode, repeatability_id, split_keys
from adapters.sap.settings import SETTINGS_SCHEMA
from adapters.signatures import SignatureError
from bus.config import parse_duration
from bus.errors import ConfigError, DeliveryError, PermanentError, TransientError

__all__ = ["SapAdapter"]

_SERVICES = ("API_SALES_ORDER_SRV", "API_PURCHASEORDER_PROCESS_SRV", "API_PURCHASEREQ_PROCESS_SRV", "API_PRODUCT_SRV",
             "API_BUSINESS_PARTNER")
_MASTER = {
    "customer": ("API_BUSINESS_PARTNER", "A_BusinessPartner", "Customer", "BusinessPartnerFullName"),
    "supplier": ("API_BUSINESS_PARTNER", "A_BusinessPartner", "Supplier", "BusinessPartnerFullName"),
    "material": ("API_PRODUCT_SRV", "A_Product", "Product", None),
}


class SapAdapter(Adapter):
    """Sales orders, purchase requisitions and orders, products and business partners in SAP S/4HANA."""

    name: ClassVar[str] = "sap"
    summary: ClassVar[str] = ("SAP S/4HANA OData V2: sales orders, purchase requisitions/orders, products, "
                              "business partners; LastChangeDateTime polling and Event Mesh business events")
    settings_schema: ClassVar[Mapping[str, Any]] = SETTINGS_SCHEMA

    def __init__(self, system: str, settings: Mapping[str, Any]) -> None:
        super().__init__(system, settings)
        validate_settings(system, self.settings, SETTINGS_SCHEMA)
        start = (self.settings.get("poll") or {}).get("start")
        if start is not None:
            try:
                parse_watermark(str(start), "start")
            except PermanentError:
                raise ConfigError(f"system {system!r}: settings/poll/start: {start!r} is not an ISO timestamp "
                                  "(e.g. 2026-01-01T00:00:00Z)") from None
        seconds = parse_duration(self.settings.get("timeout", 60))
        timeouts = Timeouts(connect=min(seconds, 10.0), read=seconds, pool=seconds)
        verify = self.settings.get("verify_tls", True)
        self.client = SapClient(
            str(self.settings["url"]), auth_for(self.settings["auth"], timeouts, verify),
            service_root=str(self.settings.get("service_root", "/sap/opu/odata/sap")),
            sap_client=self.settings.get("sap_client"), timeouts=timeouts, verify=verify,
            lock_messages=frozenset(self.settings.get("lock_messages") or ()), language=self.settings.get("language"))
        poll = self.settings.get("poll") or {}
        self.poller = Poller(self.client, overlap=parse_duration(poll.get("overlap", 5)),
                             page_size=int(poll.get("page_size", 200)), max_records=int(poll.get("max_records", 5000)),
                             start=poll.get("start"))
        self.update_method = str(self.settings.get("update_method", "PATCH"))

    # -- lifecycle -------------------------------------------------------------------------------------
    def health(self) -> Health:
        """Reads a service document: the first service this user may use answers (a communication user is
        often granted only some of the scenarios); a refused logon or no connection is unhealthy at once."""
        last = ""
        for service in _SERVICES:
            try:
                self.client.get(service, "")
            except DeliveryError as exc:
                last = str(exc)
                if isinstance(exc, TransientError) or "HTTP 401" in last:
                    return Health(False, last)
                continue
            except Exception as exc:  # health() must never raise
                return Health(False, f"{type(exc).__name__}: {exc}")
            return Health(True, f"{self.client.root}/{service} reachable")
        return Health(False, last)

    def close(self) -> None:
        if not self.closed:
            self.client.close()
        super().close()

    # -- operations: sales -------------------------------------------------------------------------------
    @operation(description="Create a sales order with its items (deep insert into A_SalesOrder)")
    def create_sales_order(self, call: Call) -> Outcome:
        return self._create(DOCUMENTS["sales_order"], "sales_order", call)

    @operation(description="Change a sales order's header and items (ETag-guarded, one change set)")
    def update_sales_order(self, call: Call) -> Outcome:
        return self._update(DOCUMENTS["sales_order"], call)

    @operation(description="Read a sales order with its items ({SalesOrder}); the result is the order")
    def read_sales_order(self, call: Call) -> Outcome:
        return self._read(DOCUMENTS["sales_order"], call)

    # -- operations: purchasing ----------------------------------------------------------------------------
    @operation(description="Create a purchase requisition with its items (A_PurchaseRequisitionHeader)")
    def create_purchase_requisition(self, call: Call) -> Outcome:
        return self._create(DOCUMENTS["purchase_requisition"], "purchase_requisition", call)

    @operation(description="Create a purchase order with its items (deep insert into A_PurchaseOrder)")
    def create_purchase_order(self, call: Call) -> Outcome:
        return self._create(DOCUMENTS["purchase_order"], "purchase_order", call)

    @operation(description="Change a purchase order's header and items (ETag-guarded, one change set)")
    def update_purchase_order(self, call: Call) -> Outcome:
        return self._update(DOCUMENTS["purchase_order"], call)

    @operation(description="Read a purchase order with its items ({PurchaseOrder})")
    def read_purchase_order(self, call: Call) -> Outcome:
        return self._read(DOCUMENTS["purchase_order"], call)

    # -- operations: master data -------------------------------------------------------------------------
    @operation(description="Read a product with its descriptions ({Product})")
    def read_product(self, call: Call) -> Outcome:
        return self._read(DOCUMENTS["product"], call)

    @operation(description="Read a business partner ({BusinessPartner})")
    def read_business_partner(self, call: Call) -> Outcome:
        return self._read(DOCUMENTS["business_partner"], call)

    # -- several creates at once ---------------------------------------------------------------------------
    def call_many(self, operation_name: str, calls: Sequence[Call]) -> list[Outcome | Exception]:
        """Creates of one worker batch travel in one ``$batch``, each in its own change set: one round trip,
        and each document still succeeds or fails on its own. Other operations go one by one."""
        kinds = {"create_sales_order": "sales_order", "create_purchase_order": "purchase_order",
                 "create_purchase_requisition": "purchase_requisition"}
        kind = kinds.get(operation_name)
        if kind is None or len(calls) < 2:
            return super().call_many(operation_name, calls)
        doc = DOCUMENTS[kind]
        built: list[BatchRequest | Exception] = []
        for one in calls:
            try:
                built.append(BatchRequest("POST", doc.entity_set, self._body(doc, kind, one), self._headers(one)))
            except PermanentError as exc:
                built.append(exc)
        requests = [b for b in built if isinstance(b, BatchRequest)]
        try:
            answers = iter(self.client.batch(doc.service, [[r] for r in requests]) if requests else [])
        except DeliveryError as exc:
            return [b if isinstance(b, Exception) else exc for b in built]
        out: list[Outcome | Exception] = []
        for item in built:
            if isinstance(item, Exception):
                out.append(item)
                continue
            answer = next(answers, None)
            if answer is None:
                out.append(TransientError(f"{self.system}: {doc.service}/$batch: the server stopped before this "
                                          "change set (an earlier one failed); sending it again"))
                continue
            part = answer[0] if isinstance(answer, list) and answer else answer
            out.append(self._created(doc, part) if isinstance(part, BatchResponse)
                       else PermanentError(f"{doc.service}/$batch: an empty change set answer"))
        return out

    def _created(self, doc: Document, part: BatchResponse) -> Outcome | Exception:
        what = f"{self.system}: POST {doc.service}/{doc.entity_set} (in $batch)"
        if not 200 <= part.status < 300:
            return self.client.fail(part.status, part.body, part.headers.get("retry-after"), what)
        try:
            entity = single(part.json(), what)
        except (PermanentError, ValueError) as exc:
            return exc if isinstance(exc, PermanentError) else PermanentError(f"{what}: {exc}")
        return Outcome(result=plain(entity), reference=str(entity.get(doc.keys[0])), detail=f"HTTP {part.status}")

    # -- the work -------------------------------------------------------------------------------------------
    def _headers(self, call: Call) -> dict[str, str]:
        # OData repeatability (SAP's RAP-based APIs honour it): a repeated create returns the first result.
        return {"Repeatability-Request-ID": repeatability_id(call.idempotency_key),
                "Repeatability-First-Sent": imf_date(call.event.time)}

    def _body(self, doc: Document, kind: str, call: Call) -> dict[str, Any]:
        what = f"{self.system}: {doc.entity_set} create"
        payload = encode(call.payload, what)
        defaults = ((self.settings.get("defaults") or {}).get(kind)) or {}
        body = {**encode(defaults, f"settings.defaults.{kind}"), **payload}
        for key in doc.keys:
            body.setdefault(key, "")  # internal numbering: SAP assigns the document number
        if body.get(doc.keys[0]) == "" and doc.entity_set != "A_PurchaseOrder":
            body.pop(doc.keys[0])  # only the purchase order API wants the empty key spelled out
        return body

    def _create(self, doc: Document, kind: str, call: Call) -> Outcome:
        body = self._body(doc, kind, call)
        response = self.client.write("POST", doc.service, doc.entity_set, body, self._headers(call))
        what = f"{self.system}: POST {doc.service}/{doc.entity_set}"
        entity = single(SapClient.json_of(response, what), what)
        reference = entity.get(doc.keys[0]) or _key_from_location(response.headers.get("location"))
        return Outcome(result=plain(entity), reference=str(reference) if reference else None,
                       detail=f"HTTP {response.status_code}")

    def _read(self, doc: Document, call: Call) -> Outcome:
        keys, _ = split_keys(doc, call.payload, f"{self.system}: read {doc.entity_set}")
        params = {"$expand": doc.items} if doc.items else None
        what = f"{self.system}: GET {doc.entity_set}"
        entity = single(self.client.get(doc.service, entity_path(doc.entity_set, keys), params), what)
        return Outcome(result=plain(entity), reference=keys[doc.keys[0]])

    def _update(self, doc: Document, call: Call) -> Outcome:
        """Read the current ETags, then PATCH the header (If-Match) and any items in one change set."""
        what = f"{self.system}: update {doc.entity_set}"
        keys, fields = split_keys(doc, call.payload, what)
        items = fields.pop(doc.items, None) if doc.items else None
        if isinstance(items, Mapping) and set(items) == {"results"}:
            items = items["results"]
        if items is not None and not isinstance(items, list):
            raise PermanentError(f"{what}: {doc.items} must be a list of items")
        path = entity_path(doc.entity_set, keys)
        expand = {"$expand": doc.items} if items and doc.items else None
        current = single(self.client.get(doc.service, path, expand), what)
        changes: list[BatchRequest] = []
        headers = self._headers(call)
        header_fields = encode(fields, what)
        if header_fields:
            changes.append(BatchRequest(self.update_method, path, header_fields, {**headers, **_if_match(current)}))
        known = {str(i.get(str(doc.item_key))): i
                 for i in results({"d": current.get(str(doc.items)) or {"results": []}}, what)} if items else {}
        for n, item in enumerate(items or []):
            if not isinstance(item, Mapping) or not item.get(doc.item_key):
                raise PermanentError(f"{what}: {doc.items}[{n}] has no {doc.item_key!r}")
            number = str(item[doc.item_key])
            item_keys = {**keys, str(doc.item_key): number}
            changed = encode({k: v for k, v in item.items() if k not in item_keys}, f"{what}.{doc.items}[{n}]")
            if number in known:
                changes.append(BatchRequest(self.update_method, entity_path(str(doc.item_set), item_keys), changed,
                                            _if_match(known[number])))
            else:  # a new item: created under its header
                changes.append(BatchRequest("POST", f"{path}/{doc.items}", {str(doc.item_key): number, **changed}))
        if not changes:
            return Outcome(result=plain(current), reference=keys[doc.keys[0]], detail="nothing to change")
        if len(changes) == 1:
            only = changes[0]
            response = self.client.write(only.method, doc.service, only.path, only.body, only.headers)
            return Outcome(result=None, reference=keys[doc.keys[0]], detail=f"HTTP {response.status_code}")
        answers = self.client.batch(doc.service, [changes])
        if not answers:
            raise TransientError(f"{what}: the $batch answer has no change set answer")
        for part in answers[0] if isinstance(answers[0], list) else [answers[0]]:
            if not 200 <= part.status < 300:
                raise self.client.fail(part.status, part.body, part.headers.get("retry-after"), f"{what} (change set)")
        return Outcome(result=None, reference=keys[doc.keys[0]], detail=f"{len(changes)} changes in one change set")

    # -- master data ---------------------------------------------------------------------------------------
    def master_data(self, entity: str) -> list[MasterRecord] | None:
        """Customers and suppliers (business partners with that role, API_BUSINESS_PARTNER) and materials
        (API_PRODUCT_SRV), for ``ironbus xref check``. The id is SAP's customer/supplier/product number; the
        code is the property ``master_data.<entity>.code`` names (what the other systems call the code: a
        search term, an old material number), none by default; the name is the partner's full name or the
        product description in ``language``."""
        found = _MASTER.get(entity)
        if found is None:
            return None
        service, entity_set, key, name = found
        spec = (self.settings.get("master_data") or {}).get(entity) or {}
        params: dict[str, str] = {"$orderby": f"{key} asc"}
        filters = [f"{key} ne null and {key} ne ''"] if entity_set == "A_BusinessPartner" else []
        if spec.get("filter"):
            filters.append(f"({spec['filter']})")
        if filters:
            params["$filter"] = " and ".join(filters)
        if entity == "material":
            params["$expand"] = "to_Description"
        rows = self.client.get_all(service, entity_set, params)
        language = str(self.settings.get("language", "EN"))[:2].upper()
        code_field = spec.get("code")
        out = []
        for row in rows:
            label = row.get(name) if name else _description(row, language)
            code = row.get(code_field) if code_field else None
            out.append(MasterRecord(id=str(row[key]), code=str(code) if code else None, name=label or None))
        return out

    # -- triggers ------------------------------------------------------------------------------------------
    @trigger(kind="poll", interval=30.0)
    def sales_orders_changed(self, watermark: str | None) -> PollResult:
        """Sales orders changed since the watermark (LastChangeDateTime), with items."""
        return self.poller.poll("sales_orders_changed", FEEDS["sales_orders_changed"], watermark)

    @trigger(kind="poll", interval=30.0)
    def purchase_orders_changed(self, watermark: str | None) -> PollResult:
        """Purchase orders changed since the watermark (LastChangeDateTime), with items."""
        return self.poller.poll("purchase_orders_changed", FEEDS["purchase_orders_changed"], watermark)

    @trigger(kind="poll", interval=30.0)
    def purchase_requisitions_changed(self, watermark: str | None) -> PollResult:
        """Purchase requisitions changed since the watermark, with items."""
        return self.poller.poll("purchase_requisitions_changed", FEEDS["purchase_requisitions_changed"], watermark)

    @trigger(kind="poll", interval=300.0)
    def products_changed(self, watermark: str | None) -> PollResult:
        """Products changed since the watermark, with descriptions."""
        return self.poller.poll("products_changed", FEEDS["products_changed"], watermark)

    @trigger(kind="webhook")
    def business_events(self, request: WebhookRequest) -> list[Any]:
        """Business events (CloudEvents) pushed by an SAP Event Mesh webhook subscription."""
        events = self.settings.get("events")
        if not events:
            raise SignatureError("missing", f"system {self.system!r} has no events settings: business events are "
                                            "refused until settings.events holds the webhook's credentials")
        verify_basic(request, str(events["username"]), str(events["password"]))
        return parse_events(request, tuple(events.get("types") or ("sap.s4.beh.",)))

    def webhook_key(self, trigger_name: str) -> Callable[[Any], str | None] | None:
        """Business events are keyed by the document they name (SalesOrder, PurchaseOrder …)."""
        if trigger_name != "business_events":
            return None
        return lambda payload: payload.get("key") if isinstance(payload, dict) else None

    def webhook_content_types(self, trigger_name: str) -> tuple[str, ...]:
        return ("application/json", "+json")


def _if_match(entity: Mapping[str, Any]) -> dict[str, str]:
    etag = (entity.get("__metadata") or {}).get("etag") if isinstance(entity.get("__metadata"), Mapping) else None
    return {"If-Match": str(etag)} if etag else {}


def _description(row: Mapping[str, Any], language: str) -> str | None:
    texts = (row.get("to_Description") or {}).get("results") or []
    for text in texts:
        if str(text.get("Language", "")).upper() == language:
            return str(text.get("ProductDescription") or "") or None
    return str(texts[0].get("ProductDescription") or "") or None if texts else None


def _key_from_location(location: str | None) -> str | None:
    if not location or "('" not in location:
        return None
    return location.rsplit("('", 1)[1].split("')", 1)[0]


def imf_date(iso: str) -> str:
    """An IMF-fixdate (``Sun, 06 Nov 1994 08:49:37 GMT``) from the event's ISO time, for Repeatability-First-Sent."""
    try:
        when = dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        when = dt.datetime.now(dt.UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return format_datetime(when.astimezone(dt.UTC), usegmt=True)
