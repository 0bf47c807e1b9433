"""One bus across processes: several real ``ironbus run`` processes on one RabbitMQ + PostgreSQL (issue 12, 10).

Two independent ``ironbus run`` processes (as on two hosts: no supervisor, both with triggers on, each serving
webhooks on its own port) share a PostgreSQL journal and a RabbitMQ queue. A file inbox polled by a trigger is
read by one of them only; the same webhook request sent to both is one delivery; when the trigger's runner is
killed (SIGKILL), the other takes the trigger over and nothing is lost or delivered twice.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import sqlalchemy as sa

from bus.election import leaders
from bus.journal.leaders import LeaderLeases
from tests.helpers.backends import Backend
from tests.helpers.sink import Sink
from tests.helpers.wait import wait_until

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "cluster-token-0123456"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def delivered_by_id(sink: Sink) -> Counter[str]:
    with sink.lock:
        out: Counter[str] = Counter()
        for key, body in sink.bodies.items():
            out[str(body.get("n"))] += sink.delivered[key]
        return out


def test_two_bus_processes_share_triggers_dedup_and_fail_over(tmp_path: Path, postgres_url: str,
                                                              rabbitmq_url: str) -> None:
    from tests.helpers.pg import pg_schema_url

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for journal in pg_schema_url(postgres_url, prefix="ibh_cluster"):
        backend = Backend("rabbitmq", journal, f"{rabbitmq_url}?name=ibt_{uuid.uuid4().hex[:10]}&partitions=4")
        with Sink("ok") as sink:
            routes = tmp_path / "routes.yaml"
            routes.write_text(textwrap.dedent(f"""\
                systems:
                  files:
                    adapter: file
                    settings: {{inbox: {inbox}, triggers: {{dropped: {{interval: 0.3}}}}}}
                  vendor: {{adapter: webhook, settings: {{signature: {{scheme: token, secret: {TOKEN}}}}}}}
                  scm:
                    adapter: http
                    settings: {{base_url: {sink.url}, operations: {{put: {{method: POST, path: /put}}}}}}
                routes:
                  - {{name: files, from: files.dropped, to: [scm.put]}}
                  - {{name: hooks, from: vendor.received, to: [scm.put]}}
                """))
            env = {**os.environ, "PYTHONPATH": str(ROOT), "IRONBUS_LEADER_LEASE": "2"}
            ports = [free_port(), free_port()]
            logs = [(tmp_path / f"bus{i}.log").open("wb") for i in range(2)]
            procs = [subprocess.Popen([sys.executable, "-m", "cli", "run", "--routes", str(routes), "--journal",
                                       journal, "--broker", backend.broker or "", "--port", str(port),
                                       "--workers", "2", "--processes", "1"],  # one process per `ironbus run`
                                      cwd=ROOT, env=env, stdout=log, stderr=log)
                     for port, log in zip(ports, logs, strict=True)]
            try:
                for port in ports:
                    wait_until(lambda p=port: ready(p), timeout=60, what="both bus processes to be ready")
                for n in range(5):
                    (inbox / f"f{n}.json").write_text(json.dumps({"n": n}))
                wait_until(lambda: len(delivered_by_id(sink)) == 5, timeout=60, what="five files delivered")
                for port in ports:  # the same request to both processes
                    answer = httpx.post(f"http://127.0.0.1:{port}/hooks/vendor/received/{TOKEN}",
                                        json={"n": "hook-1"}, timeout=10)
                    assert answer.status_code == 202
                wait_until(lambda: "hook-1" in delivered_by_id(sink), timeout=60, what="the webhook delivered")
                engine = sa.create_engine(journal)
                holder = leaders(LeaderLeases(engine))["files.dropped"][0]
                engine.dispose()
                runner = next(i for i, p in enumerate(procs) if f":{p.pid}:" in holder)
                procs[runner].send_signal(signal.SIGKILL)
                procs[runner].wait(timeout=10)
                killed = time.monotonic()
                (inbox / "late.json").write_text(json.dumps({"n": "late"}))
                wait_until(lambda: "late" in delivered_by_id(sink), timeout=60,
                           what="the surviving process to take the trigger over")
                failover = time.monotonic() - killed
                survivor = procs[1 - runner]
                time.sleep(1.0)  # noqa: TID251 - let any duplicate arrive before counting
                counts = delivered_by_id(sink)
                print(f"\ncluster test: delivered {len(counts)} distinct, duplicates "
                      f"{sum(c - 1 for c in counts.values())}, trigger fail-over after SIGKILL {failover:.1f}s")
                assert set(counts) == {*map(str, range(5)), "hook-1", "late"}
                assert set(counts.values()) == {1}
                assert survivor.poll() is None
            finally:
                for proc in procs:
                    if proc.poll() is None:
                        proc.terminate()
                for proc in procs:
                    try:
                        proc.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                for log in logs:
                    log.close()
                from bus.journal import Journal
                from bus.queue.open import open_queue

                store = Journal(journal)
                queue = open_queue(backend.broker, store)
                delete = getattr(queue, "delete_topology", None)
                if callable(delete):
                    delete()
                queue.close()
                store.close()
