"""``ironbus status`` shows a stall: work waiting and a process that finishes no batch (issue 12, item 11)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

from bus.envelope import Event
from bus.runtime import Runtime, RuntimeOptions
from tests.helpers.sink import Sink
from tests.helpers.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]


def status(journal: str) -> dict:  # type: ignore[type-arg]
    result = subprocess.run([sys.executable, "-m", "cli", "status", "--json", "--journal", journal], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "IRONBUS_STALL_SECONDS": "3"},
                            capture_output=True, text=True, timeout=60, check=True)
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_a_worker_stuck_on_a_call_shows_as_stalled(tmp_path: Path) -> None:
    # the call stays in flight until the test has read the status (a fixed delay raced a slow `status` start)
    gate = threading.Event()
    with Sink("ok", gate=gate) as sink:
        routes = tmp_path / "routes.yaml"
        routes.write_text(textwrap.dedent(f"""\
            systems:
              crm: {{adapter: stub}}
              stuck:
                adapter: http
                settings: {{base_url: {sink.url}, timeout: {{connect: 1, read: 120}},
                           operations: {{put: {{method: POST, path: /put}}}}}}
            routes:
              - {{name: r, from: crm.changed, to: [stuck.put]}}
            """))
        journal = f"sqlite:///{tmp_path}/j.sqlite"
        runtime = Runtime(routes, journal=journal, options=RuntimeOptions(workers=1, port=None, triggers=False))
        runtime.start()
        try:
            runtime.ingest([(Event(type="crm.changed", source="t", data={"n": n}, key="K"), "send")
                            for n in range(2)])
            wait_until(lambda: any(p["stalled"] for p in status(journal)["processes"]), timeout=30,
                       what="status to show the stalled process")
            seen = status(journal)
            assert seen["oldest_ready_age"] is not None  # the second message of key K waits behind the first
            text = subprocess.run([sys.executable, "-m", "cli", "status", "--journal", journal], cwd=ROOT,
                                  env={**os.environ, "PYTHONPATH": str(ROOT), "IRONBUS_STALL_SECONDS": "3"},
                                  capture_output=True, text=True, timeout=60, check=True).stdout
            assert "STALLED" in text and "oldest waiting" in text
        finally:
            gate.set()
            runtime.stop()
        # once the call returned, the work went on
        assert len(sink.delivered) >= 1
