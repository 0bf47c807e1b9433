"""Tryton's typed JSON values, both ways, and their plain-JSON form for bus payloads.

Tryton's JSON-RPC wraps values JSON has no type for in ``{"__class__": …}`` objects: ``Decimal``
(``decimal``), ``date``, ``datetime`` and ``time`` (their fields), ``timedelta`` (``seconds``) and
``bytes`` (``base64``). :func:`encode` turns Python values into that form for requests, :func:`decode`
turns a response back into Python values, and :func:`plain` turns Python values into the stable, plain JSON
the bus carries in event payloads (Decimal → string so no precision is lost, date → ``YYYY-MM-DD``,
datetime → ISO 8601 naive UTC, timedelta → seconds, bytes → base64 text).
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

__all__ = ["decode", "encode", "plain"]


def _encode_one(value: Any) -> Any:
    # datetime is a subclass of date: test it first.
    if isinstance(value, dt.datetime):
        return {"__class__": "datetime", "year": value.year, "month": value.month, "day": value.day,
                "hour": value.hour, "minute": value.minute, "second": value.second,
                "microsecond": value.microsecond}
    if isinstance(value, dt.date):
        return {"__class__": "date", "year": value.year, "month": value.month, "day": value.day}
    if isinstance(value, dt.time):
        return {"__class__": "time", "hour": value.hour, "minute": value.minute, "second": value.second,
                "microsecond": value.microsecond}
    if isinstance(value, dt.timedelta):
        return {"__class__": "timedelta", "seconds": value.total_seconds()}
    if isinstance(value, Decimal):
        return {"__class__": "Decimal", "decimal": str(value)}
    if isinstance(value, bytes | bytearray):
        return {"__class__": "bytes", "base64": base64.b64encode(bytes(value)).decode("ascii")}
    return value


def encode(value: Any) -> Any:
    """A JSON-serialisable copy of ``value`` with Tryton's typed wrappers (for request params)."""
    if isinstance(value, Mapping):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [encode(v) for v in value]
    return _encode_one(value)


def _decode_one(obj: dict[str, Any]) -> Any:
    kind = obj.get("__class__")
    try:
        if kind == "Decimal":
            return Decimal(obj["decimal"])
        if kind == "datetime":
            return dt.datetime(obj["year"], obj["month"], obj["day"], obj["hour"], obj["minute"], obj["second"],
                               obj["microsecond"])
        if kind == "date":
            return dt.date(obj["year"], obj["month"], obj["day"])
        if kind == "time":
            return dt.time(obj["hour"], obj["minute"], obj["second"], obj["microsecond"])
        if kind == "timedelta":
            return dt.timedelta(seconds=obj["seconds"])
        if kind == "bytes":
            return base64.b64decode(obj["base64"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed Tryton {kind} value {obj!r}: {exc}") from None
    return obj


def decode(value: Any) -> Any:
    """Python values from a decoded JSON response: typed wrappers become Decimal, date, datetime …"""
    if isinstance(value, dict):
        decoded = {k: decode(v) for k, v in value.items()}
        return _decode_one(decoded) if "__class__" in decoded else decoded
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def plain(value: Any) -> Any:
    """Plain JSON for bus payloads: Decimal → str, date → ``YYYY-MM-DD``, datetime → ISO, bytes → base64."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    return value
