"""The records this adapter's own operations wrote, and for which bus transaction: so a poll that reports such a
record in the state the bus left it continues that transaction (``PollResult.correlations``) rather than starting a
new one, and ``ironbus trace`` shows a change as one tree across the round trip through Tryton.

Kept in the adapter store (the journal) as ``wrote:<model>:<id>`` = ``<epoch>|<correlation id>``. A polled record
belongs to the bus's write when its newest change date is not later than that write (plus a little slack for the
server's commit): a later change is someone else's and starts its own story.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable

from adapters.base import AdapterStore, Call, PollResult

__all__ = ["WriteLog"]

_SLACK = 2.0  # seconds between the operation's return and a write date the server gave during it


class WriteLog:
    """Which Tryton records the bus wrote, per transaction."""

    def __init__(self, store: AdapterStore) -> None:
        self.store = store

    def record(self, model: str, ids: Iterable[int | None], call: Call) -> None:
        """Remember that the delivery ``call`` wrote these records (now)."""
        correlation = call.event.correlationid
        if not correlation:
            return
        stamp = f"{time.time():.3f}|{correlation}"
        for record in {i for i in ids if i}:
            self.store.put(f"wrote:{model}:{record}", stamp)

    def correlate(self, model: str, result: PollResult) -> PollResult:
        """``result`` with the correlation ids of the records the bus's own writes produced."""
        found: dict[str, str] = {}
        for key, _ in result.records:
            ident, _, date = key.partition("@")
            entry = self.store.get(f"wrote:{model}:{ident.split(':', 1)[0]}")
            if entry is None:
                continue
            written, _, correlation = entry.partition("|")
            try:
                changed = dt.datetime.fromisoformat(date).replace(tzinfo=dt.UTC).timestamp()
            except ValueError:
                continue
            if changed <= float(written) + _SLACK:
                found[key] = correlation
        return PollResult(records=result.records, watermark=result.watermark, correlations=found)
