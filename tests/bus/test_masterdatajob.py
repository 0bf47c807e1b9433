"""The scheduled master-data check: one event per run whose data is the report and a readable text."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from adapters.base import Adapter, MasterRecord
from bus.envelope import Event
from bus.journal.records import XrefRow
from bus.masterdatajob import EVENT_TYPE, MasterDataCheck
from bus.ownership import EntityOwnership


class Holder(Adapter):
    name = "holder"

    def __init__(self, system: str, settings: Mapping[str, Any]) -> None:
        super().__init__(system, settings)
        self.records = [MasterRecord(str(settings["id"]), "C-1", str(settings["label"]),
                                     {"name": settings["label"], "active": True})]

    def master_data(self, entity: str) -> list[MasterRecord] | None:
        return self.records if entity == "customer" else None


def test_a_run_emits_the_report_with_drift_in_plain_words() -> None:
    adapters = {"crm": Holder("crm", {"id": 1, "label": "ACME"}), "scm": Holder("scm", {"id": 7, "label": "Acme!"})}
    links = [XrefRow("customer", "crm", "1", "C-1"), XrefRow("customer", "scm", "7", "C-1")]
    emitted: list[Event] = []
    job = MasterDataCheck("0 6 * * *", adapters, lambda: links,
                          {"customer": EntityOwnership("customer", "crm", ("crm", "scm"), "customer")},
                          emitted.extend, threading.Event(), entities=["customer"])
    event = job.run_once()
    assert emitted == [event] and event.type == EVENT_TYPE
    assert event.data["problems_total"] == 1
    assert event.data["problems"][0]["kind"] == "drift"
    assert event.data["text"].splitlines() == [
        "customer: 2 records in 2 systems, 1 canonical ids, 1 problem(s)",
        "- customer drift C-1 scm 7: name is 'Acme!' in scm, 'ACME' in its owner crm",
        "next: 'ironbus xref check --repair' shows what pushing the owners' values would change"]


def test_the_loop_waits_for_its_schedule_and_stops_at_once() -> None:
    stop = threading.Event()
    emitted: list[Event] = []
    job = MasterDataCheck("0 6 * * *", {}, lambda: [], {}, emitted.extend, stop)
    thread = threading.Thread(target=job.run)
    thread.start()
    started = time.monotonic()
    stop.set()
    thread.join(5)
    assert not thread.is_alive() and time.monotonic() - started < 5
    assert emitted == []  # 06:00 did not come
