"""Writing to SAP: request bodies in OData V2 form, deep inserts, ETag-guarded updates, ``$batch`` groups.

Mappings produce documents with SAP's field names; :func:`encode` puts values in the form the OData V2 JSON
format wants, following SAP's naming convention for types: a number becomes an ``Edm.Decimal`` string (the
amounts and quantities of these APIs are decimals; item numbers and keys are strings already), a
``…Date`` field given as ``YYYY-MM-DD`` becomes ``/Date(ms)/`` and a ``…DateTime`` field given as an ISO
timestamp ``/Date(ms+0000)/``. Values already in OData form pass unchanged.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from adapters.sap.odata import format_date, format_datetimeoffset
from bus.errors import PermanentError

__all__ = ["Document", "DOCUMENTS", "encode", "repeatability_id", "split_keys"]

_ISO_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_ISO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}")
#: Repeatability-Request-ID values are UUIDs; the bus's idempotency key is mapped onto one, stably.
_REPEAT_NS = uuid.UUID("0b8e3c55-6f1e-4a53-9d0f-5b3f3f6c2a71")


def repeatability_id(idempotency_key: str) -> str:
    """The ``Repeatability-Request-ID`` of a delivery: the same key always gives the same UUID, so SAP
    (where the API honours OData repeatability) answers a repeated create with the first one's result."""
    return str(uuid.uuid5(_REPEAT_NS, idempotency_key))


def _value(name: str, value: Any, where: str) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float | Decimal):
        if isinstance(value, float) and value != value:  # NaN
            raise PermanentError(f"{where}.{name}: NaN is not a decimal")
        return format(Decimal(str(value)), "f")
    if isinstance(value, str) and name.endswith("DateTime") and _ISO_TIME.match(value):
        try:
            stamp = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise PermanentError(f"{where}.{name}: {value!r} is not an ISO timestamp") from None
        return format_datetimeoffset(stamp)
    if isinstance(value, str) and name.endswith("Date") and _ISO_DAY.match(value):
        try:
            return format_date(dt.date.fromisoformat(value))
        except ValueError:
            raise PermanentError(f"{where}.{name}: {value!r} is not a date") from None
    return value


def encode(doc: Any, where: str) -> Any:
    """A document in OData V2 JSON form (see the module docstring); navigation given as ``{"results": [...]}``
    becomes the plain list a deep insert takes."""
    if not isinstance(doc, Mapping):
        raise PermanentError(f"{where}: expected an object with SAP field names, got {type(doc).__name__}")
    out: dict[str, Any] = {}
    for name, value in doc.items():
        if name == "__metadata":
            continue
        if isinstance(value, Mapping) and set(value) == {"results"}:
            value = value["results"]
        if isinstance(value, list):
            out[name] = [encode(v, f"{where}.{name}[{i}]") for i, v in enumerate(value)]
        elif isinstance(value, Mapping):
            out[name] = encode(value, f"{where}.{name}")
        else:
            out[name] = _value(name, value, where)
    return out


class Document:
    """A document type the operations write: service, entity set, key fields and its items' navigation."""

    def __init__(self, service: str, entity_set: str, keys: tuple[str, ...], items: str | None = None,
                 item_set: str | None = None, item_key: str | None = None) -> None:
        self.service, self.entity_set, self.keys, self.items = service, entity_set, keys, items
        self.item_set, self.item_key = item_set, item_key


DOCUMENTS: dict[str, Document] = {
    "sales_order": Document("API_SALES_ORDER_SRV", "A_SalesOrder", ("SalesOrder",), "to_Item",
                            "A_SalesOrderItem", "SalesOrderItem"),
    "purchase_order": Document("API_PURCHASEORDER_PROCESS_SRV", "A_PurchaseOrder", ("PurchaseOrder",),
                               "to_PurchaseOrderItem", "A_PurchaseOrderItem", "PurchaseOrderItem"),
    "purchase_requisition": Document("API_PURCHASEREQ_PROCESS_SRV", "A_PurchaseRequisitionHeader",
                                     ("PurchaseRequisition",), "to_PurchaseReqnItem", "A_PurchaseRequisitionItem",
                                     "PurchaseRequisitionItem"),
    "product": Document("API_PRODUCT_SRV", "A_Product", ("Product",), "to_Description"),
    "business_partner": Document("API_BUSINESS_PARTNER", "A_BusinessPartner", ("BusinessPartner",)),
}


def split_keys(doc: Document, payload: Any, what: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(keys, the other fields)`` of an update/read payload; PermanentError naming a missing key."""
    if not isinstance(payload, Mapping):
        raise PermanentError(f"{what}: expected an object with {', '.join(doc.keys)}, got {type(payload).__name__}")
    keys: dict[str, Any] = {}
    for name in doc.keys:
        value = payload.get(name)
        if value is None or value == "":
            raise PermanentError(f"{what}: the payload has no {name!r} (the document to change)")
        keys[name] = str(value)
    rest = {k: v for k, v in payload.items() if k not in doc.keys}
    return keys, rest
