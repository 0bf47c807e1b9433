"""OData V2 on the wire, as SAP Gateway speaks it: values, keys, filters, response envelopes and paging.

* ``Edm.DateTime`` is ``/Date(ms)/`` (milliseconds since the epoch, UTC, no offset); ``Edm.DateTimeOffset`` is
  ``/Date(ms+0000)/`` (an offset in minutes, ``+hhmm``); both appear JSON-escaped as ``\\/Date(…)\\/``.
* ``Edm.Decimal`` (amounts, quantities) travels as a string so no digit is lost: read it as
  :class:`decimal.Decimal`, write it back as a plain string.
* A collection is ``{"d": {"results": [...], "__next": "..."}}``; one entity is ``{"d": {...}}``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

from bus.errors import PermanentError

__all__ = ["entity_path", "filter_datetimeoffset", "format_date", "format_datetimeoffset", "key_literal",
           "next_link", "parse_date", "parse_decimal", "plain", "results", "single"]

_DATE = re.compile(r"^/Date\((-?\d+)(?:([+-])(\d{2}):?(\d{2}))?\)/$")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def parse_date(value: str) -> dt.datetime:
    """``/Date(ms)/`` or ``/Date(ms+hhmm)/`` as an aware UTC datetime (ValueError when it is neither).

    The offset only says in which zone the instant was recorded; the milliseconds are UTC already (as
    the OData V2 JSON format defines them), so it does not move the instant.
    """
    match = _DATE.match(value.strip())
    if not match:
        raise ValueError(f"{value!r} is not an OData V2 date (expected /Date(milliseconds)/)")
    return _EPOCH + dt.timedelta(milliseconds=int(match.group(1)))


def format_date(value: dt.date | dt.datetime) -> str:
    """An ``Edm.DateTime`` literal for a request body: a date is its midnight UTC."""
    if not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    elif value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return f"/Date({_millis(value)})/"


def format_datetimeoffset(value: dt.datetime) -> str:
    """An ``Edm.DateTimeOffset`` literal for a request body (``/Date(ms+0000)/``)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return f"/Date({_millis(value)}+0000)/"


def _millis(value: dt.datetime) -> int:
    delta = value.astimezone(dt.UTC) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def parse_decimal(value: Any, field: str = "value") -> Decimal:
    """An ``Edm.Decimal`` (a string on the wire; a number is accepted) without float rounding."""
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise ValueError(f"{field}: expected a decimal string, got {type(value).__name__}")
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"{field}: {value!r} is not a decimal number") from None
    if not number.is_finite():
        raise ValueError(f"{field}: {value!r} is not a finite decimal number")
    return number


def filter_datetimeoffset(value: dt.datetime) -> str:
    """A ``$filter`` literal: ``datetimeoffset'2024-01-01T00:00:00.123Z'`` (milliseconds, UTC)."""
    utc = value.astimezone(dt.UTC) if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return "datetimeoffset'" + utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z'"


def key_literal(value: Any) -> str:
    """A key value as it stands in a resource path: strings quoted (``'`` doubled), numbers as they are."""
    if isinstance(value, bool) or value is None:
        raise PermanentError(f"an OData key cannot be {value!r}")
    if isinstance(value, int | Decimal):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def entity_path(entity_set: str, keys: Mapping[str, Any]) -> str:
    """``A_SalesOrder('4711')`` or ``A_SalesOrderItem(SalesOrder='4711',SalesOrderItem='10')``, URL-safe."""
    if not keys:
        raise PermanentError(f"{entity_set}: no key given")
    if len(keys) == 1:
        inner = key_literal(next(iter(keys.values())))
    else:
        inner = ",".join(f"{name}={key_literal(value)}" for name, value in keys.items())
    return f"{entity_set}({quote(inner, safe=chr(39) + '=,')})"


def _d(doc: Any, what: str) -> Any:
    if not isinstance(doc, Mapping) or "d" not in doc:
        raise PermanentError(f"{what}: the answer is not an OData V2 JSON document (no 'd')")
    return doc["d"]


def results(doc: Any, what: str) -> list[dict[str, Any]]:
    """The entities of a collection answer (``d.results``; an OData V1-style bare ``d`` list is accepted)."""
    d = _d(doc, what)
    rows = d.get("results") if isinstance(d, Mapping) else d
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise PermanentError(f"{what}: 'd.results' is not a list of entities")
    return rows


def single(doc: Any, what: str) -> dict[str, Any]:
    """The entity of a single-entity answer (``d``)."""
    d = _d(doc, what)
    if not isinstance(d, dict):
        raise PermanentError(f"{what}: 'd' is not an entity")
    return d


def next_link(doc: Any) -> str | None:
    """The server's next-page link (``d.__next``), or None on the last page."""
    d = doc.get("d") if isinstance(doc, Mapping) else None
    link = d.get("__next") if isinstance(d, Mapping) else None
    return link if isinstance(link, str) and link else None


def plain(entity: Any) -> Any:
    """An entity as SAP sent it, less the ``__deferred`` links of navigation that was not expanded (they only
    repeat the entity's URL). Expanded navigation keeps its ``{"results": [...]}`` shape and ``__metadata``
    keeps the ETag, so a mapping written against SAP's documented payloads reads polled records unchanged."""
    if isinstance(entity, list):
        return [plain(e) for e in entity]
    if not isinstance(entity, dict):
        return entity
    return {name: plain(value) for name, value in entity.items()
            if not (isinstance(value, dict) and "__deferred" in value)}
