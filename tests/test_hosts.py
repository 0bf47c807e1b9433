"""One bus across hosts: three ``ironbus run`` on three network namespaces, one RabbitMQ + PostgreSQL (issue 12, 10).

Three hosts (tests/helpers/netns.py: namespaces on a private /24, bridged to the root namespace) each run
``ironbus run`` with triggers on, on a PostgreSQL journal and a RabbitMQ queue of the test's own
(tests/helpers/private_services.py) that listen on the bridge address, beside an HTTP API the hosts poll (three
poll triggers) and an HTTP sink that records what arrives, from which host, under which idempotency key. The
test asserts, and prints as one JSON line:

* one runner per trigger: in a steady window each trigger is polled by exactly one host;
* fail-over when the runner dies (SIGKILL) and when it is cut off (its veth down: a partition) - records added
  meanwhile arrive through another host; once the link is back the cut-off host does not poll again while
  another holds the lease;
* a shared rate limit: a vendor allowing 5 requests/s gets at most that (plus its burst) from the three hosts
  together;
* inbound dedup across hosts: the same vendor event posted to two hosts is one event, one delivery;
* nothing lost, and no effect twice: every record and event (also those posted while a host was cut off, some
  of them queued to it) arrives, each under one idempotency key.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
import sqlalchemy as sa

from tests.helpers.netns import Hosts, namespace_hosts
from tests.helpers.private_services import private_postgres, private_rabbitmq
from tests.helpers.sink import Sink
from tests.helpers.wait import wait_until

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "hosts-token-0123456789"
TRIGGERS = ("t0", "t1", "t2")
INTERVAL = 0.5  # seconds between polls; a trigger's lease lasts max(IRONBUS_LEADER_LEASE, 2 x interval + 5 s)
LIMIT = 5  # requests per second the rate-limited vendor allows
BURSTS = 30  # webhook events sent to the rate-limited vendor through the three hosts
HEARTBEAT = 5  # AMQP heartbeat: the broker gives a cut-off host's partitions to a standby after about twice this
PORT = 8080  # every host serves webhooks on the same port: each has its own network stack


class Source:
    """The polled API: ``GET /records/<trigger>?since=<seq>`` lists the records after ``seq``; every poll is logged
    with the address of the host that made it."""

    def __init__(self, host: str) -> None:
        self.lock = threading.Lock()
        self.records: dict[str, list[dict[str, Any]]] = {t: [] for t in TRIGGERS}
        self.polls: list[tuple[float, str, str]] = []  # (wall time, host address, trigger)
        source = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                parts = urlsplit(self.path)
                trigger = parts.path.rsplit("/", 1)[-1]
                since = int(dict(parse_qsl(parts.query)).get("since") or 0)
                with source.lock:
                    source.polls.append((time.time(), self.client_address[0], trigger))
                    page = [r for r in source.records.get(trigger, []) if r["seq"] > since]
                body = json.dumps({"data": page}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a host cut off or killed mid-request is the point of the test

        self.server = Server((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> Source:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add(self, trigger: str) -> str:
        with self.lock:
            seq = len(self.records[trigger]) + 1
            self.records[trigger].append({"id": f"{trigger}-{seq}", "seq": seq})
            return f"{trigger}-{seq}"

    def all_ids(self) -> set[str]:
        with self.lock:
            return {r["id"] for records in self.records.values() for r in records}

    def pollers(self, trigger: str, since: float) -> dict[str, int]:
        """Host address -> polls of ``trigger`` after wall time ``since``."""
        out: dict[str, int] = defaultdict(int)
        with self.lock:
            for at, host, name in self.polls:
                if name == trigger and at > since:
                    out[host] += 1
        return dict(out)


def routes_yaml(source: Source, sink: Sink) -> str:
    triggers = ", ".join(f"{t}: {{interval: {INTERVAL}}}" for t in TRIGGERS)
    since = "'{{ watermark }}'"
    polls = "\n".join(f"        {t}: {{path: /records/{t}, query: {{since: {since}}}, records: data, key: id, "
                      f"watermark: {{field: seq}}}}" for t in TRIGGERS)
    routes = "\n".join(f"  - {{name: poll-{t}, from: source.{t}, to: [scm.put]}}" for t in TRIGGERS)
    return textwrap.dedent("""\
        systems:
          source:
            adapter: http
            settings:
              base_url: {source}
              timeout: {{connect: 1, read: 2}}
              triggers: {{{triggers}}}
              polls:
        {polls}
          vendor: {{adapter: webhook, settings: {{signature: {{scheme: token, secret: {token}}}, key: id}}}}
          scm:
            adapter: http
            settings:
              base_url: {sink}
              timeout: {{connect: 1, read: 5}}
              operations: {{put: {{method: POST, path: /put}}}}
          limited:
            adapter: http
            settings:
              base_url: {sink}
              timeout: {{connect: 1, read: 5}}
              operations: {{put: {{method: POST, path: /limited}}}}
            rate_limit: {{requests: {limit}, per: 1s}}
        routes:
        {routes}
          - {{name: hooks, from: vendor.received, to: [limited.put]}}
        """).format(source=source.url, sink=sink.url, triggers=triggers, polls=polls, routes=routes, token=TOKEN,
                    limit=LIMIT)


class Bus:
    """One ``ironbus run`` per host."""

    def __init__(self, hosts: Hosts, routes: Path, journal: str, broker: str, logs: Path) -> None:
        self.hosts = hosts
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * len(hosts.namespaces)
        self.logs = [logs / f"host{i}.log" for i in range(len(hosts.namespaces))]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "IRONBUS_LEADER_LEASE": "2"}
        for i, address in enumerate(hosts.addresses):
            # host i of 3 owns its share of the partitions; the broker drops a cut-off host after ~2 heartbeats
            queue = f"name=ibhosts&partitions=6&home={i}/{len(hosts.addresses)}&heartbeat={HEARTBEAT}"
            argv = [sys.executable, "-m", "cli", "run", "--routes", str(routes), "--journal", journal,
                    "--broker", f"{broker}?{queue}",
                    "--host", address, "--port", str(PORT), "--workers", "2", "--processes", "1",
                    "--log-level", "info", "--log-format", "json"]
            with self.logs[i].open("wb") as log:
                self.procs[i] = subprocess.Popen(hosts.command(i, argv), cwd=ROOT, env=env, stdout=log, stderr=log)

    def url(self, host: int) -> str:
        return f"http://{self.hosts.addresses[host]}:{PORT}"

    def ready(self, host: int) -> bool:
        try:
            return httpx.get(f"{self.url(host)}/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def post(self, host: int, event_id: str) -> int:
        answer = httpx.post(f"{self.url(host)}/hooks/vendor/received/{TOKEN}", json={"id": event_id}, timeout=10)
        return answer.status_code

    def kill(self, host: int) -> None:
        proc = self.procs[host]
        assert proc is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def stop(self) -> None:
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            if proc is None:
                continue
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def events(self, host: int) -> list[dict[str, Any]]:
        """The structured log lines host ``host`` wrote so far."""
        out = []
        for line in self.logs[host].read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass  # a line cut by the kill
        return out

    def tails(self) -> str:
        return "\n".join(f"--- host {i} ---\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:])
                         for i, log in enumerate(self.logs) if log.exists())


def effects(sink: Sink) -> dict[str, tuple[set[str], int]]:
    """Business id -> (idempotency keys it arrived under, deliveries)."""
    out: dict[str, tuple[set[str], int]] = {}
    with sink.lock:
        for key, body in sink.bodies.items():
            keys, count = out.get(str(body["id"]), (set(), 0))
            out[str(body["id"])] = (keys | {key}, count + sink.delivered[key])
    return out


def delivered(sink: Sink, ids: set[str]) -> bool:
    return ids <= set(effects(sink))


def runners(source: Source, since: float) -> dict[str, dict[str, int]]:
    return {t: source.pollers(t, since) for t in TRIGGERS}


def steady(source: Source, polls: int = 4) -> dict[str, dict[str, int]]:
    """Who polls each trigger over a window in which every trigger was polled ``polls`` times."""
    start = time.time()
    wait_until(lambda: all(sum(source.pollers(t, start).values()) >= polls for t in TRIGGERS), timeout=30,
               what=f"{polls} polls of every trigger")
    return runners(source, start)


def holder_of(hosts: Hosts, source: Source, trigger: str) -> int:
    polled = steady(source)[trigger]
    assert len(polled) == 1, f"{trigger} polled by several hosts at once: {polled}"
    return hosts.addresses.index(next(iter(polled)))


def running_leases(engine: sa.engine.Engine) -> dict[str, str]:
    """Trigger -> holder of the leases not run out (bus/election.py's table, read as an operator would)."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT name, holder FROM ib_leaders WHERE until > :now"), {"now": time.time()})
        return {str(name): str(holder) for name, holder in rows}


def max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def take_over(sink: Sink, source: Source, trigger: str, hosts: Hosts, gone: int, since: float) -> dict[str, Any]:
    """Add a record to ``trigger`` and wait until it arrives: the seconds from ``since`` (the host went away) until
    another host polled the trigger and until the record arrived, and the hosts that polled it meanwhile."""
    record = source.add(trigger)
    wait_until(lambda: delivered(sink, {record}), timeout=60, what=f"{record} delivered after host {gone} went away")
    arrived = time.time()
    with source.lock:
        first = min(at for at, host, name in source.polls
                    if name == trigger and at > since and host != hosts.addresses[gone])
    polled = source.pollers(trigger, since)
    assert hosts.addresses[gone] not in polled, polled
    return {"host": gone, "trigger_taken_over_s": round(first - since, 1),
            "record_delivered_s": round(arrived - since, 1),
            "polled_by": sorted(hosts.addresses.index(h) for h in polled)}


@pytest.mark.slow
def test_three_hosts_share_one_bus(tmp_path: Path) -> None:
    figures: dict[str, Any] = {}
    with namespace_hosts(3) as hosts, private_postgres(hosts.gateway, hosts.network) as pg, \
            private_rabbitmq(hosts.gateway) as rabbit, Sink(host=hosts.gateway) as sink, \
            Source(hosts.gateway) as source:
        routes = tmp_path / "routes.yaml"
        routes.write_text(routes_yaml(source, sink))
        bus = Bus(hosts, routes, pg.url, rabbit.url, tmp_path)
        engine = sa.create_engine(pg.url)
        try:
            for i in range(3):
                wait_until(lambda i=i: bus.ready(i), timeout=90, what=f"host {i}'s bus to be ready")
            # one runner per trigger
            first = {source.add(t) for t in TRIGGERS for _ in range(3)}
            wait_until(lambda: delivered(sink, first), timeout=60, what="the first records delivered")
            polled = steady(source)
            assert all(len(hosts_) == 1 for hosts_ in polled.values()), f"a trigger polled by several hosts: {polled}"
            assert sorted(running_leases(engine)) == [f"source.{t}" for t in TRIGGERS]
            figures["runners"] = {t: hosts.addresses.index(next(iter(p))) for t, p in polled.items()}

            # inbound dedup across hosts: one vendor event posted to two hosts
            assert [bus.post(0, "W-dup"), bus.post(1, "W-dup")] == [202, 202]
            # a shared rate limit: events through all three hosts to a vendor allowing LIMIT/s
            burst = {f"W-{n}" for n in range(BURSTS)}
            for n in range(BURSTS):
                assert bus.post(n % 3, f"W-{n}") == 202
            wait_until(lambda: delivered(sink, burst | {"W-dup"}), timeout=60, what="the webhook events delivered")
            with sink.lock:
                limited = [(at, host) for at, host, key in sink.arrivals if str(sink.bodies[key]["id"]) in burst]
            peak = max_in_window([at for at, _ in limited], 1.0)
            spread = sorted({host for _, host in limited})
            span = max(at for at, _ in limited) - min(at for at, _ in limited)
            figures["rate_limit"] = {"limit_per_s": LIMIT, "events": BURSTS, "max_in_any_1s": peak,
                                     "seconds": round(span, 1), "delivering_hosts": len(spread)}
            assert len(spread) >= 2, f"the deliveries came from one host only ({spread}): the limit was not shared"
            # Tokens taken in any 3 s: at most a full bucket (LIMIT) plus 3 s of refill. Arrivals are what the sink
            # sees: a host stalled on the loaded machine delivers calls whose tokens it took up to a second apart
            # together (13 in one second once, against 10 tokens), so the window allows 1 s of such jitter. Three
            # unshared buckets would let all BURSTS events through in about a second.
            assert max_in_window([at for at, _ in limited], 3.0) <= LIMIT + LIMIT * (3 + 1) < BURSTS
            assert span >= (BURSTS - LIMIT) / LIMIT * 0.9

            # fail-over when the runner dies
            victim = holder_of(hosts, source, "t0")
            killed_at = time.time()
            bus.kill(victim)
            figures["sigkill"] = take_over(sink, source, "t0", hosts, victim, killed_at)
            wait_until(lambda: all(hosts.addresses[victim] not in p for p in runners(source, killed_at + 8).values())
                       and all(runners(source, killed_at + 8).values()), timeout=30,
                       what="every trigger polled by a surviving host")

            # fail-over when the runner is cut off (a partition), then the link comes back
            cut = holder_of(hosts, source, "t0")
            hosts.cut(cut)
            cut_at = time.time()
            live = 3 - victim - cut
            during = {f"W-p{n}" for n in range(20)}  # traffic while cut: some of it queued to the cut-off host
            for n in range(20):
                assert bus.post(live, f"W-p{n}") == 202
            figures["partition"] = take_over(sink, source, "t0", hosts, cut, cut_at)
            assert figures["partition"]["polled_by"] == [live]
            hosts.mend(cut)
            mended = time.time()
            figures["partition"]["cut_s"] = round(mended - cut_at, 1)
            wait_until(lambda: bus.ready(cut), timeout=60, what="the cut-off host to answer again")
            back = time.time()
            after = steady(source, polls=8)
            # What the live host took over while the link was cut stays with it. A trigger whose lease the cut-off
            # host still held when the link came back (not yet run out, or run out with nobody taking it in those
            # seconds) may stay with the cut-off host: it never had two runners.
            taken = {t for t, p in runners(source, cut_at).items() if hosts.addresses[live] in p}
            assert "t0" in taken
            figures["partition"]["polls_by_cut_off_host_after_link_back"] = sum(
                p.get(hosts.addresses[cut], 0) for t, p in runners(source, back).items() if t in taken)
            assert all(len(p) == 1 for p in after.values()), f"two runners after the partition: {after}"
            assert figures["partition"]["polls_by_cut_off_host_after_link_back"] == 0, after
            # and it knows: its next renewal, answered once the link was back, found the lease taken
            wait_until(lambda: any(e.get("event") == "trigger.lease_lost" and e.get("trigger") == "source.t0"
                                   for e in bus.events(cut)), timeout=60,
                       what="the cut-off host to log that it lost the lease on source.t0")
            # the cut-off host serves again, and every trigger still delivers
            assert bus.post(cut, "W-after") == 202
            last = {source.add(t) for t in TRIGGERS} | {"W-after"} | during
            wait_until(lambda: delivered(sink, last), timeout=60, what="the last records delivered")
        except BaseException:
            print(bus.tails())
            print("figures so far:", json.dumps(figures), "\npolls since start:", runners(source, 0))
            with source.lock:
                print("last polls:", source.polls[-30:])
            raise
        finally:
            bus.stop()
            engine.dispose()

        seen = effects(sink)
        wanted = source.all_ids() | burst | during | {"W-dup", "W-after"}
        lost = sorted(wanted - set(seen))
        twice = sorted(i for i, (keys, _) in seen.items() if len(keys) > 1)
        redeliveries = sum(count - len(keys) for keys, count in seen.values())
        figures.update(hosts=3, records=len(source.all_ids()), webhook_events=len(burst | during) + 2, lost=len(lost),
                       effects_twice=len(twice), redeliveries_same_key=redeliveries,
                       dedup_w_dup_deliveries=seen["W-dup"][1])
        print("\nhosts test: " + json.dumps(figures, sort_keys=True))
        assert not lost, lost
        assert not twice, twice  # each record and event under one idempotency key: one effect
        assert seen["W-dup"][1] == 1  # one vendor event posted to two hosts: one delivery
