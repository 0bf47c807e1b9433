"""Reading HubSpot's error answers.

HubSpot's error body is ``{status?, message, correlationId, category, subCategory?, errors[], context{}, links{}}``;
its 429 carries ``policyName``:

* ``DAILY`` — the account's daily quota is spent. It resets at midnight in the *account's* time zone, so we
  wait until the next midnight there (setting ``account_timezone``, default UTC) plus five minutes, because
  counters are not reset to the second and an early retry only burns an error (HubSpot wants errors under 5%
  of calls).
* ``SECONDLY`` / ``TEN_SECONDLY_ROLLING`` — the burst window: ``Retry-After`` when given, else
  ``X-HubSpot-RateLimit-Interval-Milliseconds``, else the documented 10 s window.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from adapters.http import ErrorPolicy, Response, parse_retry_after
from bus.errors import DeliveryError, PermanentError, TransientError

__all__ = ["DAILY_MARGIN", "HubspotErrors", "seconds_until_midnight"]

DAILY_MARGIN = 300.0
BURST_WINDOW = 10.0


def seconds_until_midnight(now: datetime, zone: ZoneInfo) -> float:
    """Seconds from ``now`` until the next midnight in ``zone``."""
    local = now.astimezone(zone)
    midnight = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), tzinfo=zone)
    return (midnight - local).total_seconds()


def _doc(response: Response) -> dict[str, Any]:
    try:
        doc = response.json()
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def describe(doc: dict[str, Any]) -> str:
    """One line from a HubSpot error body: message, category, and the correlation id support asks for."""
    parts = [str(doc.get("message") or "no message")]
    category = doc.get("category") or doc.get("errorType")
    if category:
        parts.append(f"category={category}" + (f"/{doc['subCategory']}" if doc.get("subCategory") else ""))
    if doc.get("correlationId"):
        parts.append(f"correlationId={doc['correlationId']}")
    return "; ".join(parts)


class HubspotErrors:
    """The ``classify`` hook HubSpot's HttpClient uses; the generic policy decides what HubSpot does not say."""

    def __init__(self, policy: ErrorPolicy, zone: ZoneInfo, now: Callable[[], datetime] | None = None) -> None:
        self.policy = policy
        self.zone = zone
        self.now = now or (lambda: datetime.now(UTC))

    def __call__(self, response: Response) -> DeliveryError | None:
        doc = _doc(response)
        if not doc:
            return None  # not HubSpot's JSON shape (a proxy's HTML page …): generic handling
        message = f"HubSpot HTTP {response.status}: {describe(doc)}"
        if response.status == 429:
            return TransientError(message, retry_after=self.rate_limit_wait(response, doc))
        if self.policy.is_transient(response.status):
            return TransientError(message, retry_after=parse_retry_after(response.header("retry-after")))
        return PermanentError(message)

    def rate_limit_wait(self, response: Response, doc: dict[str, Any]) -> float:
        if doc.get("policyName") == "DAILY":
            return seconds_until_midnight(self.now(), self.zone) + DAILY_MARGIN
        after = parse_retry_after(response.header("retry-after"))
        if after is not None:
            return after
        interval = response.header("x-hubspot-ratelimit-interval-milliseconds")
        try:
            return float(interval) / 1000.0 if interval else BURST_WINDOW
        except ValueError:
            return BURST_WINDOW
