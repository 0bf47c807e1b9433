"""``timing: {schedule}`` on an event route: deliveries wait for the schedule's window (issue 12, item 12).

A real runtime on an embedded journal; the step's clock is set by the test (a cron window is a minute of the
day, too long to wait for), and the parker is asked to re-drive as of the window's opening.
"""

from __future__ import annotations

import json
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from croniter import croniter

import bus.schedulehold
from bus.envelope import Event
from bus.lint import lint
from bus.runtime import Runtime, RuntimeOptions
from tests.helpers.wait import wait_until


def written(folder: Path) -> list[int]:
    return sorted(json.loads(p.read_text())["n"] for p in folder.glob("*.json"))


def test_a_scheduled_event_route_holds_deliveries_until_its_window_opens(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    now = time.time()
    cron = f"{(datetime.fromtimestamp(now, UTC).minute + 30) % 60} * * * *"  # a window half an hour away
    opens = float(croniter(cron, datetime.fromtimestamp(now, UTC)).get_next(float))
    nightly, at_once = tmp_path / "nightly", tmp_path / "at_once"
    routes = tmp_path / "routes.yaml"
    routes.write_text(textwrap.dedent(f"""\
        systems:
          nightly: {{adapter: file, settings: {{outbox: {nightly}, format: json}}}}
          at_once: {{adapter: file, settings: {{outbox: {at_once}, format: json}}}}
        routes:
          - {{name: batchy, from: order.changed, to: [nightly.write], timing: {{schedule: "{cron}"}}}}
          - {{name: live, from: order.changed, to: [at_once.write]}}
        """))
    assert [i for i in lint(routes) if i.severity == "error"] == []
    clock = {"now": now}
    monkeypatch.setattr(bus.schedulehold, "time", SimpleNamespace(time=lambda: clock["now"]))
    runtime = Runtime(routes, journal=f"sqlite:///{tmp_path}/j.sqlite",
                      options=RuntimeOptions(workers=1, port=None, triggers=False))
    runtime.start()
    try:
        runtime.ingest([(Event(type="order.changed", source="test", data={"n": n}), "send") for n in (1, 2)])
        wait_until(lambda: written(at_once) == [1, 2], timeout=30, what="the unscheduled route to deliver at once")
        wait_until(lambda: runtime.parker.parked() == 2, timeout=30, what="the scheduled deliveries to be held")
        assert written(nightly) == []
        held = runtime.journal.parked.due(opens + 1, 10)
        assert len(held) == 2
        assert runtime.journal.parked.due(opens - 1, 10) == []  # due exactly when the window opens

        clock["now"] = opens + 1  # the window is open
        assert runtime.parker.run_once(now=opens + 1) == 2
        wait_until(lambda: written(nightly) == [1, 2], timeout=30, what="the held deliveries once the window opened")
        runtime.ingest([(Event(type="order.changed", source="test", data={"n": 3}), "send")])
        wait_until(lambda: written(nightly) == [1, 2, 3], timeout=30, what="a delivery inside the window to go at once")
        assert runtime.parker.parked() == 0
    finally:
        runtime.stop()
