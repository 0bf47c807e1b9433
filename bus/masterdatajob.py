"""The scheduled master-data check: ``xref check`` run by the bus itself, its report an event like any other.

routes.yaml asks for it with ``master_data_check: {schedule: "0 6 * * *"}``; at each time the cron expression
names, the process that runs the triggers compares every system's master data with the xref and the owners
(:func:`bus.masterdata.check_master_data`) and puts one ``masterdata.checked`` event on the bus. Its data is
the report (summary, problems) plus a plain-text ``text`` an operator can read; integrators route it where they
want it (a file, an e-mail, a chat channel) like any event.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog
from croniter import croniter

from adapters.base import Adapter
from bus.envelope import Event
from bus.journal.records import XrefRow
from bus.masterdata import check_master_data
from bus.ownership import EntityOwnership

__all__ = ["EVENT_TYPE", "MasterDataCheck", "report_event", "report_text"]

log = structlog.get_logger(__name__)

EVENT_TYPE = "masterdata.checked"


def report_text(report: Mapping[str, Any]) -> str:
    """The report as lines an operator reads: one per entity, then one per problem."""
    lines = [f"{entity}: {c['records']} records in {c['systems']} systems, {c['canonical']} canonical ids, "
             f"{c['problems']} problem(s)" for entity, c in report["summary"].items()]
    for p in report["problems"]:
        where = " ".join(str(x) for x in (p.get("canonical_id"), p.get("system"), p.get("system_id")) if x)
        lines.append(f"- {p['entity']} {p['kind']} {where}: {p['detail']}")
    if report["problems"]:
        lines.append("next: 'ironbus xref check --repair' shows what pushing the owners' values would change")
    return "\n".join(lines)


def report_event(report: Mapping[str, Any], now: dt.datetime | None = None) -> Event:
    """The ``masterdata.checked`` event of one report."""
    at = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    data = {"report_id": f"masterdata-{at.strftime('%Y%m%dT%H%M%SZ')}", "checked_at": at.isoformat(),
            "problems_total": len(report["problems"]), "summary": report["summary"],
            "problems": report["problems"], "text": report_text(report)}
    return Event(type=EVENT_TYPE, source="ironbus/masterdata", data=data, key="masterdata")


class MasterDataCheck:
    """Runs the check at each time of ``schedule`` until ``stop`` is set; ``run_once`` does one check."""

    def __init__(self, schedule: str, adapters: Mapping[str, Adapter], links: Callable[[], Sequence[XrefRow]],
                 ownership: Mapping[str, EntityOwnership], emit: Callable[[list[Event]], None],
                 stop: threading.Event, entities: Sequence[str] | None = None) -> None:
        self.schedule = schedule
        self.adapters = adapters
        self.links = links
        self.ownership = ownership
        self.emit = emit
        self.stop = stop
        self.entities = entities

    def run_once(self) -> Event:
        report = check_master_data(self.adapters, self.links(), entities=self.entities, ownership=self.ownership)
        event = report_event(report)
        self.emit([event])
        log.info("master data checked", problems=len(report["problems"]), event_id=event.id)
        return event

    def run(self) -> None:
        while not self.stop.is_set():
            due = float(croniter(self.schedule, time.time()).get_next(float))
            if self.stop.wait(max(due - time.time(), 0.0)):
                return
            try:
                self.run_once()
            except Exception as exc:  # a system that is down makes this check fail; the next one runs as planned
                log.warning("master data check failed; next one at the next scheduled time", error=str(exc))
