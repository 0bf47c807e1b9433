"""Salesforce REST writes: one call becomes one sObject request, several become ``/composite`` requests.

Payload of an operation (after the route's mapping)::

    {"sobject": "Order",                       # or the target's args: {sobject: Order}
     "id": "8015g00000AbCdE",                   # update: the record id
     "external_id_field": "ERP_Number__c",      # upsert: the field (or args.external_id_field) …
     "external_id": "SO-1001",                  # … and its value (or fields[external_id_field])
     "fields": {"Status": "Activated"}}         # the record's fields; without "fields", every other key is one

A create with ``idempotency_field`` (args or settings) is sent as an upsert on that external-id field with the
delivery's idempotency key as its value, so a retry after a lost answer finds the record instead of making a
second one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from adapters.base import Call, Outcome
from adapters.salesforce.errors import error_for_items, error_items
from bus.errors import DeliveryError, PermanentError

__all__ = ["COMPOSITE_LIMIT", "Write", "outcome_for", "plan_write"]

#: Subrequests one /composite request may hold (Salesforce's documented limit).
COMPOSITE_LIMIT = 25
_RESERVED = ("sobject", "id", "external_id_field", "external_id")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_ID = re.compile(r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$")


@dataclass(frozen=True)
class Write:
    """One planned write: method and path under ``/services/data/vXX.X``, body, and how to name the record."""

    kind: str  # create | update | upsert
    sobject: str
    method: str
    path: str
    body: dict[str, Any]
    record_id: str | None = None  # update: known up front
    key: str | None = None  # upsert: "<field>/<value>"


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise PermanentError(f"{what} must be a Salesforce API name such as 'Order' or 'ERP_Number__c', "
                             f"got {value!r}")
    return value


def _fields(payload: Mapping[str, Any]) -> dict[str, Any]:
    fields = payload.get("fields")
    if fields is None:
        fields = {k: v for k, v in payload.items() if k not in _RESERVED}
    if not isinstance(fields, Mapping) or not fields:
        raise PermanentError("payload needs the record's fields: 'fields': {...} (or field keys beside 'sobject')")
    for key in fields:
        _name(key, f"field name {key!r}")
    return dict(fields)


def plan_write(kind: str, call: Call, api: str, idempotency_field: str | None) -> Write:
    """The request for one call of operation ``kind``; PermanentError naming what the payload lacks."""
    payload = call.payload
    if not isinstance(payload, Mapping):
        raise PermanentError(f"{kind}: payload must be an object, got {type(payload).__name__}")
    sobject = _name(payload.get("sobject") or call.args.get("sobject"), f"{kind}: 'sobject' (payload or args)")
    fields = _fields(payload)
    base = f"/services/data/v{api}/sobjects/{sobject}"
    if kind == "update":
        record_id = payload.get("id") or fields.pop("Id", None)
        if not isinstance(record_id, str) or not _ID.match(record_id):
            raise PermanentError(f"update: payload 'id' must be a 15 or 18 character Salesforce id, got {record_id!r}")
        return Write(kind, sobject, "PATCH", f"{base}/{record_id}", fields, record_id=record_id)
    if kind == "create":
        field = call.args.get("idempotency_field") or idempotency_field
        if not field:
            return Write(kind, sobject, "POST", base, fields)
        field = _name(field, "idempotency_field")
        fields.pop(field, None)
        return Write("upsert", sobject, "PATCH", f"{base}/{field}/{quote(call.idempotency_key, safe='')}", fields,
                     key=f"{field}/{call.idempotency_key}")
    field = _name(payload.get("external_id_field") or call.args.get("external_id_field"),
                  "upsert: 'external_id_field' (payload or args)")
    value = payload.get("external_id", fields.get(field))
    fields.pop(field, None)
    if value in (None, "") or isinstance(value, dict | list | bool):
        raise PermanentError(f"upsert: no value for external id field {field!r} ('external_id' or fields.{field})")
    if not fields:
        raise PermanentError(f"upsert: nothing to write besides the external id {field!r}")
    return Write(kind, sobject, "PATCH", f"{base}/{field}/{quote(str(value), safe='')}", fields, key=f"{field}/{value}")


def outcome_for(write: Write, status: int, body: Any, what: str) -> Outcome | DeliveryError:
    """What one answer (a plain response or a composite subresponse) means for its write."""
    if status == 300:
        return PermanentError(f"{what}: HTTP 300: external id {write.key} matches several {write.sobject} records")
    if not 200 <= status < 300:
        return error_for_items(status, error_items(body), what)
    doc = body if isinstance(body, dict) else {}
    if doc.get("success") is False:
        return error_for_items(400, error_items(doc.get("errors")), what)
    record_id = doc.get("id") or write.record_id
    created = bool(doc.get("created", status == 201))
    result = {"id": record_id, "sobject": write.sobject, "created": created}
    if write.key:
        result["external_id"] = write.key
    return Outcome(result=result, reference=str(record_id) if record_id else write.key,
                   detail=f"{write.sobject} {'created' if created else 'updated'}")
