"""Polling Salesforce with SOQL on ``SystemModstamp``, for orgs (or objects) without Change Data Capture.

``SystemModstamp`` changes on every write, including system ones, and is indexed. A poll selects the rows at
or after the watermark (minus a small overlap for transactions that committed late), oldest first, and follows
``nextRecordsUrl`` until ``max_records``. SOQL datetime literals take whole seconds, so the watermark is kept
to the second and the bus's dedup keys (``Id@SystemModstamp``) drop rows read twice.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["parse_modstamp", "soql_for", "soql_literal"]


def parse_modstamp(value: Any) -> datetime | None:
    """A Salesforce datetime (``2024-05-01T10:00:00.000+0000``) as an aware datetime; None if unreadable."""
    if not isinstance(value, str) or not value:
        return None
    text = value.replace("Z", "+00:00")
    if len(text) >= 5 and text[-5] in "+-" and text[-3] != ":":
        text = text[:-2] + ":" + text[-2:]  # +0000 -> +00:00
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def soql_literal(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def soql_for(sobject: str, fields: list[str], since: datetime | None, overlap: float, where: str | None,
             limit: int) -> str:
    """The poll's SOQL: every field asked for plus Id and SystemModstamp, oldest change first."""
    select = ["Id", "SystemModstamp", *[f for f in fields if f not in ("Id", "SystemModstamp")]]
    conditions = []
    if since is not None:
        conditions.append(f"SystemModstamp >= {soql_literal(since - timedelta(seconds=overlap))}")
    if where:
        conditions.append(f"({where})")
    clause = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    return f"SELECT {', '.join(select)} FROM {sobject}{clause} ORDER BY SystemModstamp ASC, Id ASC LIMIT {limit}"
