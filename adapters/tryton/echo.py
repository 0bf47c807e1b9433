"""The records this adapter's own operations wrote, and for which bus transaction: so a poll that reports such a
record in the state the bus left it continues that transaction (``PollResult.correlations``) rather than starting a
new one, and ``ironbus trace`` shows a change as one tree across the round trip through Tryton.

Kept in the adapter store (the journal) as ``wrote:<model>:<id>`` = ``<epoch>|<correlation id>|<event id>``: the
event id is the event the writing delivery carried, and the polled record becomes its child
(``PollResult.causations``), so each round trip is one hop deeper in the same tree rather than a sibling at its
root. A polled record belongs to the bus's write when its newest change date is not later than that write (plus a
little slack for the server's commit): a later change is someone else's and starts its own story.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from adapters.base import AdapterStore, Call, PollResult

__all__ = ["WriteGate", "WriteLog"]

_SLACK = 2.0  # seconds between the operation's return and a write date the server gave during it


class WriteGate:
    """A poll of a database waits while this process's own operations are writing to it.

    An operation takes several calls (Tryton commits each): a poll between them would see a record the operation
    created but has not logged yet (it logs on return), and report it as someone else's change — a separate
    transaction, and a second delivery of a half-done state. Waiting for the operations in flight (bounded: a poll
    never waits longer than ``timeout``) lets every echo be recognised. Across processes the write log alone decides.
    """

    def __init__(self) -> None:
        self._settled = threading.Condition()
        self._busy = 0

    @contextmanager
    def writing(self) -> Iterator[None]:
        with self._settled:
            self._busy += 1
        try:
            yield
        finally:
            with self._settled:
                self._busy -= 1
                self._settled.notify_all()

    def settled(self, timeout: float = 10.0) -> bool:
        """Wait until no operation is writing (True), or ``timeout`` seconds (False)."""
        with self._settled:
            return self._settled.wait_for(lambda: self._busy == 0, timeout)


class WriteLog:
    """Which Tryton records the bus wrote, per transaction."""

    def __init__(self, store: AdapterStore) -> None:
        self.store = store

    def record(self, model: str, ids: Iterable[int | None], call: Call) -> None:
        """Remember that the delivery ``call`` wrote these records (now)."""
        correlation = call.event.correlationid
        if not correlation:
            return
        stamp = f"{time.time():.3f}|{correlation}|{call.event.id}"
        for record in {i for i in ids if i}:
            self.store.put(f"wrote:{model}:{record}", stamp)

    def correlate(self, model: str, result: PollResult) -> PollResult:
        """``result`` with the correlation (and causing event) ids of the records the bus's own writes produced."""
        found: dict[str, str] = {}
        causes: dict[str, str] = {}
        for key, _ in result.records:
            ident, _, date = key.partition("@")
            entry = self.store.get(f"wrote:{model}:{ident.split(':', 1)[0]}")
            if entry is None:
                continue
            written, _, rest = entry.partition("|")
            correlation, _, cause = rest.partition("|")  # entries written before causes were kept have none
            try:
                changed = dt.datetime.fromisoformat(date).replace(tzinfo=dt.UTC).timestamp()
            except ValueError:
                continue
            if changed <= float(written) + _SLACK:
                found[key] = correlation
                if cause:
                    causes[key] = cause
        return PollResult(records=result.records, watermark=result.watermark, correlations=found, causations=causes)
