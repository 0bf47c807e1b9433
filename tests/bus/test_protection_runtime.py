"""A failing target trips its circuit breaker, deliveries wait instead of burning retries, and the bus recovers.

Given a system with ``circuit_breaker: {failures: 3, reset: 1s}`` that answers 503, when events flow, then the
circuit opens (visible to ``ironbus status`` through the journal), the sink sees only a handful of attempts
rather than every retry of every event, and once the system is back every event is delivered.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from bus.envelope import Event
from bus.journal import Journal
from bus.runtime import Runtime, RuntimeOptions
from bus.systemstate import read_state
from tests.helpers.sink import Sink
from tests.helpers.wait import wait_until


def test_breaker_opens_on_a_failing_system_and_recovers(tmp_path: Path) -> None:
    with Sink("down") as sink:
        routes = tmp_path / "routes.yaml"
        routes.write_text(textwrap.dedent(f"""\
            systems:
              crm: {{adapter: stub}}
              erp:
                adapter: http
                circuit_breaker: {{failures: 3, reset: 1s}}
                rate_limit: {{requests: 200, per: 1s}}
                settings:
                  base_url: {sink.url}
                  operations: {{push: {{method: POST, path: /push}}}}
            routes:
              - name: push
                from: crm.changed
                to: [erp.push]
                retry: {{attempts: 3, initial_delay: 0.01, max_delay: 0.05, park: 0.3, max_parks: 50}}
            """))
        journal_url = f"sqlite:///{tmp_path}/j.sqlite"
        runtime = Runtime(routes, journal=journal_url,
                          options=RuntimeOptions(workers=2, port=None, triggers=False, lease_seconds=10))
        runtime.start()
        try:
            events = [(Event(type="crm.changed", source="t", data={"n": i}), "send") for i in range(30)]
            runtime.ingest(events)
            journal = Journal(journal_url)
            try:
                def circuit_open() -> bool:
                    return any((s.get("circuit") or {}).get("state") == "open" for s in read_state(journal))
                wait_until(circuit_open, 15, "the circuit to open (as seen by `ironbus status`)")
            finally:
                journal.close()
            # With the circuit open, deliveries are parked without calling the system: 30 events x 3 quick
            # attempts would be 90 calls; the breaker keeps it to a few probes.
            failed_while_down = sum(sink.failures.values())
            assert failed_while_down < 30, f"{failed_while_down} calls reached a system known to be down"
            sink.mode = "ok"
            wait_until(lambda: len(sink.keys()) == 30, 30, "all 30 deliveries once the system is back")
            assert runtime.wait_idle(timeout=15)
            closed = runtime.protections.snapshot()["erp"]["circuit"]
            assert closed["state"] == "closed" and closed["trips"] >= 1
        finally:
            runtime.stop()
