"""The ``hubspot`` adapter: HubSpot CRM deals over the CRM v3 API, built on the generic HTTP client."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog

from adapters.base import Adapter, Call, Health, Outcome, PollResult, WebhookRequest, operation, trigger
from adapters.http import BearerAuth, HttpClient, Response, auth_from_settings
from adapters.http.settings import (
    AUTH_SCHEMA,
    SETTINGS_SCHEMA,
    make_transport,
    parse_client_settings,
    validate_settings,
)
from adapters.hubspot.errors import HubspotErrors
from adapters.hubspot.inbound import EventDeduper, event_key, parse_events, search_body, to_epoch_ms
from adapters.signatures import Verifier
from bus.errors import ConfigError, DeliveryError, PartialFailure, PermanentError, TransientError

__all__ = ["BulkFailure", "HubspotAdapter", "hubspot_properties"]

log = structlog.get_logger(__name__)

DEALS = "/crm/v3/objects/deals"
NOTE_TO_DEAL = 214  # HubSpot-defined association type "note to deal"
BATCH_LIMIT = 100  # inputs per batch request

_SHARED = {k: SETTINGS_SCHEMA["properties"][k] for k in ("timeout", "pool", "errors", "verify_tls", "transport")}


class BulkFailure(PartialFailure):
    """Some inputs of a batch failed. ``results`` has, in call order, an Outcome or the error for each call."""

    def __init__(self, message: str, results: list[Outcome | DeliveryError]) -> None:
        super().__init__(message, results)


def _string(value: Any) -> str:
    if value is None:
        return ""  # HubSpot clears a property set to ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format(Decimal(repr(value)), "f")  # never "1e-05": HubSpot would store the text
    if isinstance(value, list):
        return ";".join(_string(v) for v in value)  # multi-select checkboxes
    return str(value)


def hubspot_properties(properties: Any) -> dict[str, str]:
    """HubSpot properties are all strings: numbers, booleans, lists (``a;b``) and nulls (``""``) converted."""
    if not isinstance(properties, Mapping) or not properties:
        raise PermanentError("payload 'properties' must be a non-empty object of HubSpot property values")
    return {str(k): _string(v) for k, v in properties.items()}


def _object(response: Response) -> dict[str, Any]:
    """The JSON object of a successful answer; {} when HubSpot (or a proxy) sent something else."""
    try:
        doc = response.json()
    except ValueError:
        log.warning("hubspot_answer_not_json", status=response.status, url=response.url)
        return {}
    return doc if isinstance(doc, dict) else {}


def _deal_id(payload: Any) -> str:
    deal_id = payload.get("id") if isinstance(payload, Mapping) else None
    if deal_id in (None, ""):
        raise PermanentError("payload has no deal 'id'")
    return str(deal_id)


class HubspotAdapter(Adapter):
    """HubSpot CRM: update deals (one or in batches), note a deal, poll changed deals, receive deal webhooks."""

    name: ClassVar[str] = "hubspot"
    #: verifying and parsing a webhook is quick CPU work: the server runs it on its event loop
    webhook_blocking: ClassVar[bool] = False
    summary: ClassVar[str] = "HubSpot CRM v3: deals, notes, search polling, v3-signed webhooks"
    settings_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object", "additionalProperties": False,
        "anyOf": [{"required": ["token"]}, {"required": ["auth"]}],
        "properties": {
            "base_url": {"type": "string", "pattern": "^https?://", "default": "https://api.hubapi.com"},
            "token": {"type": "string", "minLength": 1, "description": "Private-app access token (Bearer)."},
            "auth": AUTH_SCHEMA,
            "client_secret": {"type": "string", "minLength": 1,
                              "description": "App client secret: verifies webhook v3 signatures."},
            "allow_legacy_signatures": {"type": "boolean", "default": False},
            "account_timezone": {"type": "string", "default": "UTC",
                                 "description": "IANA zone of the account: the daily limit resets at its midnight."},
            "poll": {"type": "object", "additionalProperties": False, "properties": {
                "properties": {"type": "array", "items": {"type": "string"},
                               "description": "Deal properties to fetch (hs_lastmodifieddate is always added)."},
                "page_size": {"type": "integer", "minimum": 1, "maximum": 200, "default": 100},
                "max_records": {"type": "integer", "minimum": 1, "maximum": 9900, "default": 1000,
                                "description": "Stop a poll after this many deals (search stops at 10,000)."},
                "start": {"type": ["string", "integer"],
                          "description": "First watermark: epoch ms or ISO time (default: the beginning)."}}},
            **_SHARED,
        },
    }

    def __init__(self, system: str, settings: Mapping[str, Any],
                 now: Callable[[], datetime] | None = None) -> None:
        super().__init__(system, settings)
        validate_settings(system, self.settings, self.settings_schema)
        zone_name = self.settings.get("account_timezone", "UTC")
        try:
            zone = ZoneInfo(zone_name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"system {system!r}: settings/account_timezone: unknown time zone {zone_name!r} "
                              "(expected an IANA name such as 'Europe/Berlin')") from None
        self._now = now or (lambda: datetime.now(UTC))
        client_settings = parse_client_settings(self.settings)
        transport = make_transport(client_settings)
        auth = (BearerAuth(self.settings["token"]) if "token" in self.settings
                else auth_from_settings(self.settings["auth"], transport))
        self.client = HttpClient(self.settings.get("base_url", "https://api.hubapi.com"), transport, auth,
                                 client_settings.policy, {"Accept": "application/json"},
                                 classify=HubspotErrors(client_settings.policy, zone, self._now))
        self._deduper = EventDeduper()

    def health(self) -> Health:
        try:
            self.client.request("GET", DEALS, params={"limit": "1"}, what="HubSpot health check")
        except Exception as exc:  # health() must never raise, whatever went wrong
            return Health(False, str(exc) if isinstance(exc, DeliveryError) else f"{type(exc).__name__}: {exc}")
        return Health(True, "deals readable")

    def close(self) -> None:
        if not self.closed:
            self.client.close()
        super().close()

    def _headers(self, call: Call) -> dict[str, str]:
        # HubSpot ignores these, but they let its support and our logs find one delivery.
        return {"Idempotency-Key": call.idempotency_key, "X-Correlation-Id": call.event.correlationid}

    # -- operations ------------------------------------------------------------------------------------
    @operation(description="PATCH a deal's properties; payload {id, properties: {...}}")
    def update_deal(self, call: Call) -> Outcome:
        deal_id = _deal_id(call.payload)
        body = {"properties": hubspot_properties(call.payload.get("properties"))}
        response = self.client.request("PATCH", f"{DEALS}/{deal_id}", json=body, headers=self._headers(call),
                                       what=f"{self.system}.update_deal {deal_id}")
        doc = _object(response)
        return Outcome(result=doc or None, reference=str(doc.get("id", deal_id)))

    @operation(description="Create a note on a deal; payload {deal_id, body, timestamp?}")
    def create_note(self, call: Call) -> Outcome:
        payload = call.payload if isinstance(call.payload, Mapping) else {}
        deal_id, text = payload.get("deal_id"), payload.get("body")
        if deal_id in (None, "") or not isinstance(text, str) or not text:
            raise PermanentError("create_note needs payload {deal_id, body} (body: the note text or HTML)")
        timestamp = payload.get("timestamp") or call.event.time
        body = {
            "properties": {"hs_note_body": text, "hs_timestamp": str(timestamp)},
            "associations": [{"to": {"id": str(deal_id)}, "types": [
                {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": NOTE_TO_DEAL}]}],
        }
        response = self.client.request("POST", "/crm/v3/objects/notes", json=body, headers=self._headers(call),
                                       what=f"{self.system}.create_note on deal {deal_id}")
        doc = _object(response)
        return Outcome(result=doc or None, reference=str(doc["id"]) if "id" in doc else None)

    @operation(description="Update many deals with batch/update (100 per request)", bulk=True)
    def batch_update_deals(self, calls: Sequence[Call]) -> list[Outcome]:
        results: list[Outcome | DeliveryError] = []
        for start in range(0, len(calls), BATCH_LIMIT):
            results.extend(self._batch(calls[start: start + BATCH_LIMIT]))
        failed = [r for r in results if isinstance(r, DeliveryError)]
        if failed:
            kind = "transient" if all(isinstance(e, TransientError) for e in failed) else "permanent"
            raise BulkFailure(f"{self.system}.batch_update_deals: {len(failed)} of {len(calls)} deals failed "
                              f"({kind}): {failed[0]}", results)
        return [r for r in results if isinstance(r, Outcome)]

    def _batch(self, calls: Sequence[Call]) -> list[Outcome | DeliveryError]:
        ids = [_deal_id(c.payload) for c in calls]
        # objectWriteTraceId comes back on each result: it ties a result to its call even when the payload
        # names a deal twice, and shows the idempotency key in HubSpot's own traces.
        inputs = [{"id": deal, "properties": hubspot_properties(call.payload.get("properties")),
                   "objectWriteTraceId": call.idempotency_key} for deal, call in zip(ids, calls, strict=True)]
        response = self.client.request("POST", f"{DEALS}/batch/update", json={"inputs": inputs},
                                       headers=self._headers(calls[0]), success={200, 207},
                                       what=f"{self.system}.batch_update_deals ({len(inputs)} deals)")
        doc = _object(response)
        results = [r for r in doc.get("results") or [] if isinstance(r, dict)]
        by_trace = {str(r["objectWriteTraceId"]): r for r in results if r.get("objectWriteTraceId")}
        by_id = {str(r.get("id")): r for r in results}
        errors: dict[str, DeliveryError] = {}
        for error in doc.get("errors") or []:
            message = f"HubSpot batch item: {error.get('message')} (category={error.get('category')})"
            kind = TransientError if error.get("category") == "RATE_LIMITS" else PermanentError
            for deal in (error.get("context") or {}).get("id") or []:
                errors[str(deal)] = kind(message)
        out: list[Outcome | DeliveryError] = []
        for deal, call in zip(ids, calls, strict=True):
            found = by_trace.get(call.idempotency_key) or by_id.get(deal)
            if found is not None:
                out.append(Outcome(result=found, reference=str(found.get("id", deal))))
            else:
                out.append(errors.get(deal) or PermanentError(f"HubSpot batch answer does not mention deal {deal}"))
        return out

    # -- triggers --------------------------------------------------------------------------------------
    @trigger(kind="poll", interval=60.0, description="Deals modified since the watermark (search API)")
    def deals_changed(self, watermark: str | None) -> PollResult:
        poll = self.settings.get("poll") or {}
        since = to_epoch_ms(watermark if watermark is not None else poll.get("start", 0)) or 0
        page_size, cap = int(poll.get("page_size", 100)), int(poll.get("max_records", 1000))
        records: list[tuple[str, Any]] = []
        newest = since
        after: str | None = None
        while len(records) < cap:
            body = search_body(since, list(poll.get("properties") or []), min(page_size, cap - len(records)), after)
            doc = _object(self.client.request("POST", f"{DEALS}/search", json=body,
                                              what=f"{self.system}.deals_changed search"))
            for deal in doc.get("results") or []:
                modified = (deal.get("properties") or {}).get("hs_lastmodifieddate") or deal.get("updatedAt")
                ms = to_epoch_ms(modified)
                if ms is not None:
                    newest = max(newest, ms)
                records.append((f"{deal.get('id')}@{modified}", deal))
            after = ((doc.get("paging") or {}).get("next") or {}).get("after")
            if not after or not doc.get("results"):
                break
        log.info("hubspot_poll", system=self.system, records=len(records), watermark=newest)
        return PollResult(records=records, watermark=str(newest))

    @functools.cached_property
    def _verifier(self) -> Verifier:
        """Built on the first webhook (a system without a client secret may still poll and deliver)."""
        secret = self.settings.get("client_secret")
        if not secret:
            raise ConfigError(f"system {self.system!r}: settings/client_secret is needed to verify HubSpot webhooks")
        return Verifier(scheme="hubspot-v3", secret=secret,
                        allow_legacy=bool(self.settings.get("allow_legacy_signatures", False)),
                        clock=lambda: self._now().timestamp())

    @trigger(kind="webhook", description="Deal events pushed by HubSpot webhooks (v3 signature)")
    def deal_events(self, request: WebhookRequest) -> list[Any]:
        self._verifier.verify(request)
        payloads: list[Any] = []
        for event in parse_events(request.body):
            key = event_key(event)
            if self._deduper.first_time(key):
                payloads.append({**event, "dedup_key": key})
        return payloads
