"""What an EDI system remembers in its :class:`~adapters.base.AdapterStore` (the journal at run time).

Names (values are JSON unless said otherwise):

* ``ctl:<partner>:<kind>`` — control-number counters (interchange, group, message), one series per partner;
* ``sent:<idempotency key>`` — the numbers and time an outbound delivery used, so a retry of the same
  delivery writes the same bytes (the partner sees a resend, not a second order);
* ``awaiting:<standard>:<partner>:<interchange>`` — an interchange sent and not yet acknowledged, with its
  text for resending; ``ironbus status`` lists every ``awaiting:`` name (the core reads nothing else of it);
* ``seen:<partner>:<interchange>`` — a received interchange (digest, where it came from), to recognise a
  duplicate; ``ack:<partner>:<interchange>`` — how the partner acknowledged one we sent.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from typing import Any

from adapters.base import AdapterStore
from adapters.edi.standard import Numbers

__all__ = ["Awaiting", "Ledger"]

WRAP = {"interchange": 999_999_999, "group": 999_999_999, "message": 999_999_999}


@dataclass
class Awaiting:
    standard: str
    partner: str
    interchange: str
    group: str
    document: str
    filename: str
    sent_at: float
    attempts: int
    body: str
    detail: str = ""
    overdue: bool = False


class Ledger:
    def __init__(self, store: AdapterStore, standard: str) -> None:
        self.store = store
        self.standard = standard

    # -- outbound -------------------------------------------------------------------------------------
    def take(self, partner: str, kind: str) -> int:
        return self.store.next_number(f"ctl:{partner}:{kind}", start=1, wrap=WRAP[kind])

    def numbers_for(self, key: str, partner: str) -> tuple[Numbers, float]:
        """The numbers (and time) of delivery ``key``: the same on every retry of it, new for a new one."""
        found = self.store.get(f"sent:{key}")
        if found:
            doc = json.loads(found)
            return Numbers(doc["interchange"], doc["group"], doc["message"]), float(doc["when"])
        numbers = Numbers(self.take(partner, "interchange"), self.take(partner, "group"), self.take(partner, "message"))
        when = time.time()
        self.store.put(f"sent:{key}", json.dumps({**asdict(numbers), "when": when, "partner": partner}))
        return numbers, when

    def await_ack(self, entry: Awaiting) -> None:
        name = f"awaiting:{entry.standard}:{entry.partner}:{entry.interchange}"
        if self.store.get(f"ack:{entry.partner}:{entry.interchange}") is None:
            self.store.put(name, json.dumps(asdict(entry)))

    def forget(self, partner: str, interchange: str) -> None:
        self.store.put(f"awaiting:{self.standard}:{partner}:{interchange}", None)

    def awaiting(self) -> list[Awaiting]:
        return [Awaiting(**json.loads(v)) for _, v in self.store.items(f"awaiting:{self.standard}:")]

    def update(self, entry: Awaiting) -> None:
        self.store.put(f"awaiting:{entry.standard}:{entry.partner}:{entry.interchange}", json.dumps(asdict(entry)))

    def acknowledged(self, partner: str, interchange: str | None, group: str | None, accepted: bool,
                     detail: str) -> Awaiting | None:
        """Settle the awaiting entry an acknowledgement names; None when it names nothing we wait for."""
        for entry in self.awaiting():
            if entry.partner != partner:
                continue
            if (interchange is not None and entry.interchange.lstrip("0") == interchange.lstrip("0")) or \
                    (group is not None and entry.group.lstrip("0") == group.lstrip("0")):
                self.store.put(f"ack:{partner}:{entry.interchange}", json.dumps(
                    {"accepted": accepted, "detail": detail, "at": time.time()}))
                if accepted:
                    self.store.put(f"awaiting:{entry.standard}:{partner}:{entry.interchange}", None)
                else:
                    entry.detail = f"rejected by the partner: {detail}"
                    entry.overdue = True
                    self.update(entry)
                return entry
        return None

    # -- inbound --------------------------------------------------------------------------------------
    def duplicate_of(self, partner: str, control: str, body: bytes, reference: str) -> dict[str, Any] | None:
        """The earlier receipt of interchange ``control`` from ``partner`` when this is a duplicate of it:
        same control number from another carrier message or file. Reading the same file again (a crash before
        the bus stored the watermark) is not a duplicate."""
        found = self.store.get(f"seen:{partner}:{control}")
        if not found:
            return None
        earlier: dict[str, Any] = json.loads(found)
        digest = hashlib.sha256(body).hexdigest()
        if reference and earlier.get("reference") == reference and earlier.get("digest") == digest:
            return None
        return earlier

    def remember(self, partner: str, control: str, body: bytes, reference: str) -> None:
        """Record an applied interchange (a rejected one is not: the partner resends it corrected, often under
        the same control number)."""
        if self.store.get(f"seen:{partner}:{control}") is None:
            self.store.put(f"seen:{partner}:{control}", json.dumps(
                {"digest": hashlib.sha256(body).hexdigest(), "reference": reference, "at": time.time()}))

    def ack_sent(self, partner: str, control: str, body: bytes) -> bool:
        """Whether these very bytes were acknowledged already (read again after a crash)."""
        return self.store.get(self._ack_name(partner, control, body)) is not None

    def mark_ack_sent(self, partner: str, control: str, body: bytes) -> None:
        self.store.put(self._ack_name(partner, control, body), str(time.time()))

    @staticmethod
    def _ack_name(partner: str, control: str, body: bytes) -> str:
        return f"acksent:{partner}:{control}:{hashlib.sha256(body).hexdigest()[:16]}"
