"""The ``cxml`` adapter: purchase orders to suppliers as cXML OrderRequests over HTTPS, and the suppliers'
confirmations, ship notices and status updates received on a webhook and answered with a cXML Response."""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, ClassVar

import httpx
import structlog

from adapters.base import (
    Adapter,
    Call,
    Health,
    Outcome,
    Refused,
    WebhookAnswer,
    WebhookRequest,
    operation,
    trigger,
)
from adapters.cxml.document import (
    Invalid,
    check_request,
    check_with_dtd,
    credentials,
    load_dtd,
    payload_id,
    read_cxml,
    render,
    request_of,
    text,
    timestamp,
    without_secrets,
)
from adapters.cxml.profiles import PROFILES, Profile
from adapters.cxml.refused import masked
from adapters.cxml.settings import SETTINGS_SCHEMA
from bus.errors import ConfigError, DecodeError, PermanentError, TransientError, WebhookRejected
from bus.mediatypes import MEDIA_TYPES

__all__ = ["CxmlAdapter"]

log = structlog.get_logger(__name__)

# The DTD's content model of OrderRequestHeader (cXML 1.2.0xx), in order: mappings may write the children in any
# order, the document gets them in this one.
_HEADER_ORDER = ("Total", "ShipTo", "BillTo", "BusinessPartner", "LegalEntity", "OrganizationalUnit", "Shipping",
                 "Tax", "Payment", "PaymentTerm", "Contact", "Comments", "Followup", "ControlKeys",
                 "DocumentReference", "SupplierOrderInfo", "TermsOfDelivery", "DeliveryPeriod", "IdReference",
                 "OrderRequestHeaderIndustry", "Extrinsic")
_CXML_STATUS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 405: "Method Not Allowed",
                406: "Not Acceptable", 409: "Conflict", 413: "Request Entity Too Large", 415: "Unsupported Media Type"}


def _retry_after(response: httpx.Response, default: float | None) -> float | None:
    value = response.headers.get("retry-after")
    if value and value.strip().isdigit():
        return float(value)
    return default


class CxmlAdapter(Adapter):
    """cXML with suppliers; see docs/adapters/cxml.md."""

    name = "cxml"
    summary = "cXML (Ariba, Coupa conventions): OrderRequest out; ConfirmationRequest, ShipNoticeRequest, " \
              "StatusUpdateRequest in with a cXML Response"
    settings_schema: ClassVar[dict[str, Any]] = SETTINGS_SCHEMA
    webhook_blocking: ClassVar[bool] = True  # reads the adapter store (the journal)

    def __init__(self, system: str, settings: Mapping[str, Any]) -> None:
        super().__init__(system, settings)
        self.profile: Profile = PROFILES[str(settings.get("profile", "generic"))]
        suppliers = settings.get("suppliers")
        if not isinstance(suppliers, Mapping) or not suppliers:
            raise ConfigError(f"{system}: settings 'suppliers' must name at least one supplier")
        self.suppliers: dict[str, Mapping[str, Any]] = {str(k): v for k, v in suppliers.items()}
        self.timeout = float(settings.get("timeout", self.profile.timeout))
        self.retry_after = settings.get("retry_after", self.profile.retry_after)
        self.max_bytes = int(settings.get("max_bytes", 10 * 1024 * 1024))
        self.domain = str(settings.get("payload_domain", "ironbus.local"))
        self.version = str(settings.get("version", "1.2.050"))
        self._client: httpx.Client | None = None
        # body digest -> "supplier:payloadID", until the bus says it stored the document
        self._pending: dict[str, str] = {}
        self._lock = threading.Lock()
        self._writer: ThreadPoolExecutor | None = None
        self._dtd: Any = None

    # -- lifecycle -------------------------------------------------------------------------------------
    def open(self) -> None:
        self._client = httpx.Client(timeout=self.timeout, verify=bool(self.settings.get("verify_tls", True)),
                                    follow_redirects=False)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"cxml-{self.system}")
        if self.settings.get("dtd"):
            self._dtd = load_dtd(str(self.settings["dtd"]))  # a bad path fails at start, not per document

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None
        super().close()

    def health(self) -> Health:
        missing = [name for name, s in self.suppliers.items() if not s.get("url") and not s.get("inbound")]
        if missing:
            return Health(False, f"suppliers without url or inbound credentials: {', '.join(missing)}")
        return Health(True, f"{len(self.suppliers)} supplier(s), profile {self.profile.name}")

    # -- outbound --------------------------------------------------------------------------------------
    def _header(self, supplier: Mapping[str, Any]) -> dict[str, Any]:
        ours = self.settings["from"]
        sender = self.settings.get("sender") or ours
        secret = supplier.get("shared_secret")
        sender_credential: dict[str, Any] = {"@domain": sender.get("domain", self.profile.credential_domain),
                                             "Identity": sender["identity"]}
        if secret:
            sender_credential["SharedSecret"] = secret
        return {
            "From": {"Credential": {"@domain": ours.get("domain", self.profile.credential_domain),
                                    "Identity": ours["identity"]}},
            "To": {"Credential": {"@domain": supplier["to"].get("domain", self.profile.credential_domain),
                                  "Identity": supplier["to"]["identity"]}},
            "Sender": {"Credential": sender_credential,
                       "UserAgent": self.settings.get("user_agent", self.profile.user_agent)},
        }

    def _supplier(self, name: Any) -> tuple[str, Mapping[str, Any]]:
        supplier = self.suppliers.get(str(name)) if name is not None else None
        if supplier is None:
            raise PermanentError(f"payload 'supplier' {name!r} is not a configured supplier; known: "
                                 f"{', '.join(sorted(self.suppliers))}")
        return str(name), supplier

    @operation("order", description="Send a purchase order (new, update or delete) as a cXML OrderRequest")
    def order(self, call: Call) -> Outcome:
        payload = call.payload
        if not isinstance(payload, Mapping):
            raise PermanentError("payload must be an object with 'supplier', 'type' and 'order'")
        name, supplier = self._supplier(payload.get("supplier"))
        url = supplier.get("url")
        if not url:
            raise PermanentError(f"supplier {name!r} has no 'url' to send orders to")
        kind = str(payload.get("type") or "new")
        if kind not in ("new", "update", "delete"):
            raise PermanentError(f"payload 'type' {kind!r} must be new, update or delete")
        order = payload.get("order")
        if not isinstance(order, Mapping) or not isinstance(order.get("OrderRequestHeader"), Mapping):
            raise PermanentError("payload 'order' must hold an OrderRequestHeader (and ItemOut lines)")
        head = dict(order["OrderRequestHeader"])
        order_id = head.get("@orderID")
        if not order_id:
            raise PermanentError("order/OrderRequestHeader/@orderID is required")
        if not head.get("@orderDate"):
            raise PermanentError("order/OrderRequestHeader/@orderDate is required")
        if kind != "delete" and not order.get("ItemOut"):
            raise PermanentError(f"a {kind} OrderRequest needs at least one ItemOut line")
        head["@type"] = kind
        if head.get("BillTo") is None and self.settings.get("bill_to"):
            head["BillTo"] = {"Address": self.settings["bill_to"]}
        for required in ("Total", "BillTo"):
            if head.get(required) is None:
                raise PermanentError(f"order/OrderRequestHeader/{required} is required by the cXML DTD"
                                     + (" (or set 'bill_to' in the settings)" if required == "BillTo" else ""))
        if kind != "new":
            # The DocumentReference names the most recent OrderRequest of the order (the update a delete follows).
            previous = payload.get("previous_payload_id") or self.store.get(f"order:{name}:{order_id}")
            if not previous:
                raise PermanentError(f"an {kind} of order {order_id} must reference the OrderRequest it changes, and "
                                     f"none was sent to {name} by this system; give 'previous_payload_id'")
            head["DocumentReference"] = {"@payloadID": str(previous)}
        head = _in_dtd_order(self._extrinsics(head, supplier, str(order_id)))
        pid = payload_id(call.idempotency_key, self.domain)
        document = {"cXML": {
            "@payloadID": pid, "@timestamp": timestamp(), "@xml:lang": "en-US",
            "Header": self._header(supplier),
            "Request": {"@deploymentMode": supplier.get("deployment_mode",
                                                        self.settings.get("deployment_mode", "production")),
                        "OrderRequest": {**order, "OrderRequestHeader": head}},
        }}
        body = render(document, version=str(supplier.get("version", self.version)))
        code, status_text = self._post(str(url), body, name)
        self.store.put(f"order:{name}:{order_id}", pid)
        log.info("cxml_order_sent", system=self.system, supplier=name, order_id=order_id, type=kind, status=code)
        return Outcome(result={"supplier": name, "order_id": str(order_id), "type": kind, "payload_id": pid,
                               "status": code, "status_text": status_text},
                       reference=pid, detail=f"{code} {status_text}".strip())

    def _extrinsics(self, head: dict[str, Any], supplier: Mapping[str, Any], order_id: str) -> dict[str, Any]:
        given = head.get("Extrinsic")
        extrinsics = [e for e in (given if isinstance(given, list) else [given] if given else [])]
        names = {str(e.get("@name")) for e in extrinsics if isinstance(e, Mapping)}
        for key, value in (supplier.get("extrinsics") or {}).items():
            if key not in names:
                extrinsics.append({"@name": key, "#text": value})
                names.add(key)
        missing = [n for n in supplier.get("required_extrinsics") or () if n not in names]
        if missing:
            raise PermanentError(f"order {order_id}: the supplier requires Extrinsic {', '.join(missing)}; add them "
                                 "in the mapping or the supplier's 'extrinsics' setting")
        head.pop("Extrinsic", None)
        if extrinsics:
            head["Extrinsic"] = extrinsics
        return head

    def _post(self, url: str, body: bytes, supplier: str) -> tuple[int, str]:
        if self._client is None:
            self.open()
        assert self._client is not None
        try:
            response = self._client.post(url, content=body, headers={"Content-Type": "text/xml; charset=UTF-8"})
        except httpx.TimeoutException:
            raise TransientError(f"supplier {supplier} did not answer within {self.timeout:g} s",
                                 retry_after=self.retry_after) from None
        except httpx.HTTPError as exc:
            raise TransientError(f"cannot reach supplier {supplier}: {type(exc).__name__}: {exc}") from None
        return self._classify(response, supplier)

    def _classify(self, response: httpx.Response, supplier: str) -> tuple[int, str]:
        """The supplier's cXML Status, or the error it means. The HTTP status is often 200 whatever happened,
        so the cXML Status code decides when there is one."""
        try:
            doc = read_cxml(response.content, source=f"{supplier} response", max_bytes=self.max_bytes)
            status = doc["cXML"]["Response"]["Status"]
            code = int(status["@code"]) if isinstance(status, Mapping) else 0
            status_text = str(status.get("@text") or text(status)) if isinstance(status, Mapping) else ""
        except (DecodeError, Invalid, KeyError, TypeError, ValueError):
            if response.status_code >= 500 or response.status_code == 429:
                raise TransientError(f"supplier {supplier} answered HTTP {response.status_code}",
                                     retry_after=_retry_after(response, self.retry_after)) from None
            if response.status_code >= 400:
                raise PermanentError(f"supplier {supplier} refused the order: HTTP {response.status_code}") from None
            raise TransientError(f"supplier {supplier} answered HTTP {response.status_code} without a cXML "
                                 "Response Status") from None
        if 200 <= code < 300:
            return code, status_text
        if code == 409:  # a duplicate payloadID: this very order was received before (a retry after a lost answer)
            return code, status_text or "already received"
        if 400 <= code < 500:
            raise PermanentError(f"supplier {supplier} refused the order: cXML status {code} {status_text}".strip())
        if code >= 500:
            raise TransientError(f"supplier {supplier} could not take the order now: cXML status {code} "
                                 f"{status_text}".strip(), retry_after=_retry_after(response, self.retry_after))
        raise PermanentError(f"supplier {supplier} answered an unknown cXML status {code} {status_text}".strip())

    # -- inbound ---------------------------------------------------------------------------------------
    def webhook_content_types(self, trigger_name: str) -> tuple[str, ...]:
        return MEDIA_TYPES["xml"]

    def webhook_key(self, trigger_name: str) -> Callable[[Any], str | None] | None:
        return _order_key

    @trigger("documents", kind="webhook",
             description="ConfirmationRequest, ShipNoticeRequest and StatusUpdateRequest posted by suppliers")
    def documents(self, request: WebhookRequest) -> list[Any]:
        supplier: str | None = None
        try:
            doc = self._parse(request.body)
            supplier = self._authenticate(doc)
            return self._accept(request.body, doc, supplier)
        except WebhookRejected as exc:  # the 4xx cXML Response goes out; the document becomes a dead letter
            self.refuse(Refused(trigger="documents", reason=f"{exc} ({exc.reason})", body=masked(request.body),
                                partner=supplier, document="cXML request",
                                meta={"supplier": supplier, "status": exc.status},
                                key=hashlib.sha256(request.body).hexdigest()))
            raise

    def _parse(self, body: bytes) -> dict[str, Any]:
        try:
            return read_cxml(body, source="cXML request", max_bytes=self.max_bytes)
        except DecodeError as exc:
            raise WebhookRejected(str(exc), status=400, reason="malformed_xml") from None
        except Invalid as exc:
            raise WebhookRejected(str(exc), status=400, reason="invalid_document") from None

    def _accept(self, body: bytes, doc: dict[str, Any], supplier: str, *, again: bool = False) -> list[Any]:
        try:
            if self._dtd is not None:  # the partner's own DTD, when configured, speaks first
                check_with_dtd(body, self._dtd, str(self.settings["dtd"]))
            name = check_request(doc, body)
        except Invalid as exc:
            raise WebhookRejected(str(exc), status=400, reason="invalid_document") from None
        pid = str(doc["cXML"].get("@payloadID") or "")
        if pid and self.store.get(f"received:{supplier}:{pid}") is not None:
            log.info("cxml_duplicate", system=self.system, supplier=supplier, payload_id=pid)
            if again:
                raise PermanentError(f"payloadID {pid} was received from {supplier} since; not applied again")
            return []  # stored before: answered 200, not applied twice
        if pid and again:
            self._remember(f"{supplier}:{pid}")
        elif pid:
            with self._lock:
                self._pending[hashlib.sha256(body).hexdigest()] = f"{supplier}:{pid}"
        log.info("cxml_received", system=self.system, supplier=supplier, document=name, payload_id=pid)
        return [{**without_secrets(doc), "document": name, "supplier": supplier, "payload_id": pid}]

    def reprocess(self, refused: Refused) -> list[Any]:
        """Check a refused request again (``ironbus dlq retry``) against the current settings and schema. Its
        copy has no secrets (see :mod:`adapters.cxml.refused`): only a request refused after its Sender was
        authenticated is read again, as that supplier's."""
        supplier = refused.meta.get("supplier")
        if not isinstance(supplier, str) or supplier not in self.suppliers:
            raise PermanentError("refused before its Sender was authenticated (or the supplier is gone); the copy "
                                 "holds no secret to check, so the supplier must send it again")
        return self._accept(refused.body, self._parse(refused.body), supplier, again=True)

    def _authenticate(self, doc: Mapping[str, Any]) -> str:
        header = doc["cXML"].get("Header")
        sender = header.get("Sender") if isinstance(header, Mapping) else None
        given = credentials(sender)
        for name, supplier in self.suppliers.items():
            inbound = supplier.get("inbound")
            if not isinstance(inbound, Mapping):
                continue
            for credential in given:
                if text(credential.get("Identity")) != inbound["identity"]:
                    continue
                domain = inbound.get("domain")
                if domain and str(credential.get("@domain", "")).lower() != str(domain).lower():
                    continue
                secret = text(credential.get("SharedSecret")).encode()
                if hmac.compare_digest(secret, str(inbound["shared_secret"]).encode()):
                    return name
        raise WebhookRejected("the Sender credential and shared secret match no configured supplier", status=401,
                              reason="bad_credentials")

    def webhook_answer(self, trigger_name: str, request: WebhookRequest | None, status: int, reason: str,
                       detail: str, accepted: Sequence[str]) -> WebhookAnswer | None:
        if trigger_name != "documents":
            return None
        pid = None
        if request is not None:
            with self._lock:
                pid = self._pending.pop(hashlib.sha256(request.body).hexdigest(), None)
        if status < 300:
            if pid and accepted and self._writer is not None:
                self._writer.submit(self._remember, pid)  # off the event loop: the store is the journal
            code, http, words = 200, 200, "OK"
            message = "" if accepted else "already received"
        elif status < 500:
            code, http, words, message = status, status, _CXML_STATUS.get(status, "Bad Request"), f"{reason}: {detail}"
        else:
            # cXML 560 is "temporary server error": the supplier's system retries, as it must.
            code, http, words, message = 560, status, "Temporary server error", "the document could not be " \
                                                                                "stored; retry later"
        body = render({"cXML": {"@payloadID": f"{datetime.now(UTC).timestamp():.6f}@{self.domain}",
                                "@timestamp": timestamp(), "@xml:lang": "en-US",
                                "Response": {"Status": {"@code": str(code), "@text": words,
                                                        "#text": message or None}}}},
                      version=self.version)
        return WebhookAnswer(status=http, body=body, content_type="text/xml; charset=UTF-8")

    def _remember(self, received: str) -> None:
        try:
            self.store.put(f"received:{received}", timestamp())
        except Exception as exc:  # losing this only weakens duplicate detection
            log.warning("cxml_remember_failed", system=self.system, error=str(exc))


def _in_dtd_order(head: Mapping[str, Any]) -> dict[str, Any]:
    """OrderRequestHeader with attributes first, then the children in the DTD's order (unknown ones last)."""
    rank = {name: i for i, name in enumerate(_HEADER_ORDER)}
    attributes = {k: v for k, v in head.items() if k.startswith("@")}
    children = sorted((k for k in head if not k.startswith("@")), key=lambda k: rank.get(k, len(rank)))
    return {**attributes, **{k: head[k] for k in children}}


def _order_key(payload: Any) -> str | None:
    """The purchase order an inbound document concerns, so the bus keeps one order's documents in sequence."""
    if not isinstance(payload, Mapping):
        return None
    try:
        name, request = request_of(payload)
    except (Invalid, KeyError):
        return None
    if name == "ConfirmationRequest":
        ref = request.get("OrderReference")
    elif name == "ShipNoticeRequest":
        portion = request.get("ShipNoticePortion")
        portion = portion[0] if isinstance(portion, list) and portion else portion
        ref = portion.get("OrderReference") if isinstance(portion, Mapping) else None
    else:
        ref = None
    if isinstance(ref, Mapping) and ref.get("@orderID"):
        return str(ref["@orderID"])
    return None
