"""Timestamps of ERPs that keep naive UTC strings (Odoo ``write_date``, Frappe ``modified``), for polling.

Both ERPs store "last changed" as a naive text timestamp — Odoo as ``YYYY-MM-DD HH:MM:SS`` in UTC, Frappe as
``YYYY-MM-DD HH:MM:SS.ffffff`` in the *site's* time zone — and take the same text in a domain or filter. A
poll watermark is that text; polls look back ``overlap`` seconds before it, because a transaction that
committed late can carry an older stamp than the newest one already seen (Odoo stamps the transaction's
start). The bus drops the records of the overlap it has seen (dedup key ``id@stamp``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from bus.errors import PermanentError

__all__ = ["look_back", "parse_stamp", "to_rfc3339"]

_FORMATS = ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S",
            "%Y-%m-%d")


def parse_stamp(text: str, *, what: str = "timestamp") -> datetime:
    """A naive ERP timestamp (or an ISO one; an offset is dropped after converting to UTC)."""
    value = text.strip()
    for fmt in _FORMATS:
        try:
            return datetime.strptime(value, fmt)
        except ValueError:
            continue
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise PermanentError(f"{what}: {text!r} is not a date-time (expected 'YYYY-MM-DD HH:MM:SS')") from None
    return parsed.astimezone(UTC).replace(tzinfo=None) if parsed.tzinfo else parsed


def look_back(watermark: str, overlap: float, *, micro: bool) -> str:
    """``watermark`` minus ``overlap`` seconds, in the ERP's own text form (with microseconds for Frappe)."""
    start = parse_stamp(watermark, what="watermark") - timedelta(seconds=overlap)
    return start.strftime("%Y-%m-%d %H:%M:%S.%f" if micro else "%Y-%m-%d %H:%M:%S")


def to_rfc3339(text: str | None, zone: str = "UTC") -> str | None:
    """A naive ERP timestamp in ``zone`` as an RFC 3339 UTC string (``2026-11-24T21:42:56Z``); None stays None."""
    if not text:
        return None
    stamp = parse_stamp(text).replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)
    spec = "milliseconds" if stamp.microsecond else "seconds"
    return stamp.isoformat(timespec=spec).replace("+00:00", "Z")
