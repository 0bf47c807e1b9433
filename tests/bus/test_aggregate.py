"""The aggregate step of a route: the events of one group go out as ONE delivery, on completion or after a quiet
period, durably (a group survives a restart of the bus) and traceably (the delivery is in the last event's tree).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from adapters.base import Adapter
from adapters.stub import StubAdapter
from bus.config import load_config
from bus.envelope import Event
from bus.journal import Journal
from bus.runtime import Runtime, RuntimeOptions, open_adapters
from tests.helpers.wait import wait_until

ROUTES = """\
systems:
  crm: {adapter: stub}
  mail: {adapter: stub}
routes:
  - name: notify
    from: notice.requested
    key: order
    aggregate:
      timeout: %s
      complete: "last.final == `true`"
      combine: "{order: last.order, texts: items[].text, count: count}"
    to: [mail.send]
"""


def bus(tmp_path: Path, timeout: str = "1s") -> tuple[Runtime, StubAdapter]:
    path = tmp_path / "routes.yaml"
    path.write_text(textwrap.dedent(ROUTES % timeout))
    adapters: dict[str, Adapter] = open_adapters(load_config(path))
    runtime = Runtime(path, journal=f"sqlite:///{tmp_path}/j.sqlite", adapters=adapters,
                      options=RuntimeOptions(workers=2, port=None, triggers=False, lease_seconds=10))
    mail = adapters["mail"]
    assert isinstance(mail, StubAdapter)
    return runtime, mail


def notice(order: str, text: str, final: bool = False, correlation: str | None = None) -> Event:
    event = Event(type="notice.requested", source="test", data={"order": order, "text": text, "final": final})
    return event.with_(correlationid=correlation) if correlation else event


def test_a_quiet_period_releases_each_group_as_one_delivery(tmp_path: Path) -> None:
    runtime, mail = bus(tmp_path)
    runtime.start()
    try:
        runtime.ingest([(notice("SO-1", "a"), "send"), (notice("SO-1", "b"), "send"), (notice("SO-2", "x"), "send")])
        assert runtime.wait_idle(timeout=30)
    finally:
        runtime.stop()
    payloads = sorted((call.payload for _, call in mail.calls), key=lambda p: p["order"])
    assert payloads == [{"order": "SO-1", "texts": ["a", "b"], "count": 2},
                        {"order": "SO-2", "texts": ["x"], "count": 1}]


def test_the_completion_condition_releases_at_once_in_the_last_events_tree(tmp_path: Path) -> None:
    runtime, mail = bus(tmp_path, timeout="1h")
    runtime.start()
    try:
        runtime.ingest([(notice("SO-3", "a", correlation="c-1"), "send")])
        wait_until(lambda: runtime.aggregator is not None and runtime.aggregator.pending() == 1, 10, "the open group")
        assert mail.calls == []
        last = notice("SO-3", "b", final=True, correlation="c-2")
        runtime.ingest([(last, "send")])
        wait_until(lambda: len(mail.calls) == 1, 20, "the released group")
    finally:
        runtime.stop()
    [(_, call)] = mail.calls
    assert call.payload["texts"] == ["a", "b"]
    assert call.event.correlationid == "c-2" and call.event.causationid == last.id
    journal = Journal(f"sqlite:///{tmp_path}/j.sqlite")
    try:
        statuses = {d.status for d in journal.deliveries_for_events([last.id])}
        assert statuses == {"aggregated"}
    finally:
        journal.close()


def test_an_open_group_survives_a_restart(tmp_path: Path) -> None:
    runtime, mail = bus(tmp_path, timeout="2s")
    runtime.start()
    try:
        runtime.ingest([(notice("SO-4", "before"), "send")])
        wait_until(lambda: runtime.aggregator is not None and runtime.aggregator.pending() == 1, 10, "the open group")
    finally:
        runtime.stop()
    assert mail.calls == []
    again, mail = bus(tmp_path, timeout="2s")
    again.start()
    try:
        assert again.wait_idle(timeout=30)
    finally:
        again.stop()
    assert [call.payload["texts"] for _, call in mail.calls] == [["before"]]
