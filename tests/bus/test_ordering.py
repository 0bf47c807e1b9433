"""Per-key ordering across processes: events with one key arrive in order; unrelated keys run in parallel.

Given 20 orders with 8 versions each, published interleaved, when two ``ironbus run`` processes with four
workers each deliver them to a slow-ish sink, then every order's versions reach the sink in publication order.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from bus.envelope import Event
from bus.ingest import Ingestor
from bus.journal import Journal
from bus.queue.open import open_queue
from tests.helpers.backends import Backend
from tests.helpers.routes import write_routes
from tests.helpers.sink import Sink

KEYS, VERSIONS = 20, 8


def test_one_key_in_order_across_two_processes(tmp_path: Path, backend: Backend) -> None:
    with Sink("ok", slow=0.005) as sink:
        routes = write_routes(tmp_path, sink.url)
        journal = Journal(backend.journal)
        queue = open_queue(backend.broker, journal)
        ingestor = Ingestor(journal, queue)
        events = [(Event(type="crm.order_changed", source="t", key=f"SO-{k}",
                         data={"number": f"SO-{k}", "qty": str(v), "rev": v}), "send")
                  for v in range(VERSIONS) for k in range(KEYS)]
        ingestor.ingest(events)
        ingestor.close()
        queue.close()
        journal.close()
        cmd = [sys.executable, "-m", "cli", "run", "--routes", str(routes), "--journal", backend.journal,
               "--no-http", "--no-triggers", "--workers", "4", "--until-idle", "--max-seconds", "120"]
        if backend.broker:
            cmd += ["--broker", backend.broker]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(2)]
        for proc in procs:
            _, err = proc.communicate(timeout=180)
            assert proc.returncode == 0, err.decode()[-1500:]
        arrived: dict[str, list[int]] = defaultdict(list)
        for key in sink.arrival_order:
            if key.endswith(":demand:scm.update_demand"):
                body = sink.bodies[key]
                arrived[body["order_id"]].append(body["revision"])
        assert len(arrived) == KEYS
        for order, versions in arrived.items():
            assert versions == sorted(versions), f"{order} applied out of order: {versions}"
            assert set(versions) == set(range(VERSIONS))
