"""End-to-end benchmark: webhook -> journal -> queue -> map/validate -> HTTP delivery to a local sink.

The processes share this machine, as they would on one host: a load generator (this process, raw asyncio
HTTP/1.1 with keep-alive), ``ironbus run`` with its defaults (webhook server + workers; it picks its own
processes, workers and batch size), an HTTP sink (uvicorn), and, as the baseline measured in the same run, a
minimal non-durable Python flow (uvicorn -> signature check -> map -> aiohttp POST to the same sink; nothing
stored). Figures:

* **throughput** — signed webhook events pushed as fast as accepted (32 connections); events/s from the first
  request to the last delivery seen by the sink, for the baseline and the bus in interleaved pairs
  (``--rounds``), with the CPU time per delivered event of all the flow's processes (from ``/proc``);
* **latency at 1,000 events/s** — paced load; p50/p99 from the 202 reaching the client to the sink receiving
  the delivery (both clocks are this host's);
* **RabbitMQ + PostgreSQL** — the same throughput and latency, and the ratio to the embedded default;
* **drain vs raw kombu** — N events pre-queued, then drained by ``ironbus run`` into the sink, against raw kombu
  consuming (and acking) the same number of persistent messages from the same broker.

Targets (issue 18): the defaults >= 0.6x the minimal flow; bus CPU <= 220 us per delivered event; p99
accepted -> delivered <= 10 ms at 1,000 events/s; RabbitMQ + PostgreSQL >= 0.8x embedded; drain >= 0.75x raw
kombu. Usage: ``python bench/e2e.py [--events N] [--rounds R] [--skip-rabbitmq] [--only embedded|rabbitmq|drain]
[--bus-processes N|auto] [--workers N] [--bus-arg=--batch=N]`` (the layout flags are passed only when given).
Queues and the PostgreSQL schema it creates are deleted at the end. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SECRET = "bench-secret"
PER_REQUEST = 1  # events per webhook request (HubSpot-style arrays when > 1); set from --per-request
BUS_ARGS: list[str] = []  # extra `ironbus run` arguments (--bus-arg)
BUS_PROCESSES: int | None = None  # `ironbus run --processes N` (--bus-processes); None: the bus's default
WORKERS: int | None = None  # `ironbus run --workers N` (--workers); None: the bus's default

SINK_APP = '''
import time, orjson
seen = {}
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    if scope["path"] in ("/stats", "/count"):
        out = orjson.dumps(seen if scope["path"] == "/stats" else len(seen))
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": out})
        return
    if scope["path"] == "/reset":
        seen.clear()
    else:
        key = dict(scope["headers"]).get(b"idempotency-key", b"").decode()
        seen.setdefault(key.split(":", 1)[0], time.time())
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"ok":true}'})
'''

# The baseline: a minimal non-durable flow in plain Python, as one would write it by hand: uvicorn receives the
# signed webhook, checks the signature, maps the same fields as the bus's mapping, POSTs the result to the sink
# with aiohttp and answers 202 once the sink has answered. Nothing is stored: a crash loses what is in flight.
BASELINE_APP = '''
import hashlib, hmac, os, uuid
from datetime import date, datetime
import aiohttp, orjson
SINK = os.environ["BENCH_SINK"] + "/demand"
SECRET = os.environ["BENCH_SECRET"].encode()
STATUS = {"quotation": "open", "confirmed": "confirmed", "processing": "processing"}
session = None

def mapped(doc):
    return {"order_id": doc["number"], "source_system": "shop",
            "changed_at": datetime.fromisoformat(doc["write_date"]).isoformat(), "change_kind": "updated",
            "status": STATUS.get(doc["state"]), "customer": {"id": doc["party"]["code"], "name": doc["party"]["name"]},
            "currency": doc["currency"], "requested_date": date.fromisoformat(doc["sale_date"]).isoformat(),
            "lines": [{"line_no": l["id"], "material_id": l["product"]["code"],
                       "quantity": float(l["quantity"].replace(",", ".")), "unit": l["unit"]["symbol"]}
                      for l in doc["lines"]]}

async def app(scope, receive, send):
    global session
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                if session is not None:
                    await session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    headers = dict(scope["headers"])
    expected = hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, headers.get(b"x-signature", b"").decode()):
        await send({"type": "http.response.start", "status": 401, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})
        return
    event_id = uuid.uuid4().hex
    if session is None:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=16))
    async with session.post(SINK, data=orjson.dumps(mapped(orjson.loads(body))),
                            headers={"content-type": "application/json", "idempotency-key": event_id}) as r:
        await r.read()
    out = orjson.dumps({"accepted": [event_id]})
    await send({"type": "http.response.start", "status": 202,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())]})
    await send({"type": "http.response.body", "body": out})
'''


def process_ticks(pid: int | str) -> tuple[str, int] | None:
    """A process's name and the user + system clock ticks it has used so far (/proc/<pid>/stat), or None when
    it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return text[text.index("(") + 1:text.rindex(")")], int(fields[11]) + int(fields[12])  # stat fields 14, 15


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes have used so far (gone processes count 0)."""
    total = sum(found[1] for found in map(process_ticks, pids) if found is not None)
    return total / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout}s")


def order_doc(i: int) -> dict[str, Any]:
    """A ~1 KB CRM order change, the same shape bench/pipeline.py uses."""
    return {
        "number": f"SO-{i:07d}", "state": "confirmed", "sale_date": "2026-11-24",
        "write_date": "2026-11-24T10:15:00.123456",
        "party": {"id": 42, "name": "Acme Retail GmbH", "code": "C-ACME"},
        "currency": "EUR", "total_amount": "1.234,50", "comment": "Please deliver to gate 4 before noon." * 2,
        "lines": [{"id": n, "product": {"id": 100 + n, "code": f"W-{100 + n}", "name": f"Widget {n}"},
                   "quantity": f"{n + 1},5", "unit": {"symbol": "u"}, "unit_price": "12,50",
                   "shipping_date": "2026-12-01"} for n in range(5)],
    }


def write_config(folder: Path, sink_port: int) -> Path:
    (folder / "mappings").mkdir(parents=True, exist_ok=True)
    (folder / "mappings" / "order.yaml").write_text(textwrap.dedent("""\
        output: order.changed
        fields:
          order_id: number
          source_system: {value: shop}
          changed_at: "datetime(write_date)"
          change_kind: {value: updated}
          status: "value_map('status', state)"
          customer.id: party.code
          customer.name: party.name
          currency: currency
          requested_date: "date(sale_date)"
          lines:
            each: lines
            fields:
              line_no: id
              material_id: product.code
              quantity: "number(quantity)"
              unit: unit.symbol
        value_maps:
          status: {quotation: open, confirmed: confirmed, processing: processing}
        """))
    routes = folder / "routes.yaml"
    routes.write_text(textwrap.dedent(f"""\
        systems:
          shop:
            adapter: webhook
            settings:
              signature: {{scheme: hmac-sha256, secret: {SECRET}, header: X-Signature, encoding: hex}}
              key: number
              {'split: "[*]"' if PER_REQUEST > 1 else ''}
          sink:
            adapter: http
            settings:
              base_url: http://127.0.0.1:{sink_port}
              pool: {{max_connections: 16}}
              operations:
                update_demand: {{method: POST, path: /demand}}
        routes:
          - name: shop-orders
            from: shop.received
            map: mappings/order.yaml
            validate: order.changed
            key: order_id
            to: [sink.update_demand]
        """))
    return routes


class Client:
    """A minimal keep-alive HTTP/1.1 client: fast enough not to be the bottleneck of this benchmark."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
            sock = self.writer.get_extra_info("socket")
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        assert self.reader is not None
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.writer.write(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
                          f"{head}\r\n".encode() + body)
        status_line = await self.reader.readline()
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        payload = await self.reader.readexactly(length) if length else b""
        return int(status_line.split()[1]), payload


def signed(i: int) -> tuple[bytes, dict[str, str]]:
    """Request i: one order, or PER_REQUEST orders as a JSON array."""
    if PER_REQUEST > 1:
        body = json.dumps([order_doc(i * PER_REQUEST + k) for k in range(PER_REQUEST)]).encode()
    else:
        body = json.dumps(order_doc(i)).encode()
    sig = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return body, {"Content-Type": "application/json", "X-Signature": sig}


# Bodies of warm-up requests are numbered from here: the bus derives an inbound event's id from its body
# (resends within the dedup window are one event), so a warm-up must not send the bodies measured after it.
WARM_UP = 10_000_000


async def blast(port: int, n: int, connections: int, first: int = 0) -> dict[str, float]:
    """Send n events (bodies numbered from ``first``) as fast as accepted; returns {event_id: accepted_at}."""
    accepted: dict[str, float] = {}
    requests = max(1, n // PER_REQUEST)
    bodies = [signed(first + i) for i in range(requests)]
    counter = iter(range(requests))

    async def run() -> None:
        client = Client(port)
        for i in counter:
            body, headers = bodies[i]
            status, payload = await client.post("/hooks/shop/received", body, headers)
            if status != 202:
                raise RuntimeError(f"webhook answered {status}: {payload[:200]!r}")
            for event_id in json.loads(payload)["accepted"]:
                accepted[event_id] = time.time()

    await asyncio.gather(*(run() for _ in range(connections)))
    return accepted


# Bodies of paced requests are numbered from here: the latency scenario on RabbitMQ + PostgreSQL shares the
# throughput scenario's journal, and bodies it had sent already would be answered as resends, never delivered.
PACED = 20_000_000


async def paced(port: int, rate: float, seconds: float) -> dict[str, float]:
    accepted: dict[str, float] = {}
    total = int(rate * seconds / PER_REQUEST)
    rate = rate / PER_REQUEST
    clients = [Client(port) for _ in range(16)]
    free: asyncio.Queue[Client] = asyncio.Queue()
    for c in clients:
        free.put_nowait(c)
    start = time.monotonic()

    async def one(i: int) -> None:
        client = await free.get()
        try:
            body, headers = signed(PACED + i)
            status, payload = await client.post("/hooks/shop/received", body, headers)
            if status == 202:
                for event_id in json.loads(payload)["accepted"]:
                    accepted[event_id] = time.time()
        finally:
            free.put_nowait(client)

    tasks = []
    for i in range(total):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return accepted


def sink_stats(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=30) as r:  # noqa: S310 - loopback
        stats: dict[str, float] = json.loads(r.read())
        return stats


def sink_reset(port: int) -> None:
    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/reset", data=b"{}"),  # noqa: S310
                           timeout=10).read()


def sink_count(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/count", timeout=30) as r:  # noqa: S310 - loopback
        return int(json.loads(r.read()))


def wait_delivered(port: int, ids: set[str], timeout: float) -> tuple[dict[str, float], float]:
    """The sink's arrivals once it has all of ``ids`` (or at the deadline). It is polled for its count, not
    its arrivals: fetching tens of thousands of timestamps five times a second took CPU from the flow measured."""
    deadline = time.monotonic() + timeout
    while True:
        if sink_count(port) >= len(ids) or time.monotonic() > deadline:
            stats = sink_stats(port)
            if ids <= set(stats) or time.monotonic() > deadline:
                return stats, time.time()
        time.sleep(0.05)


class Bus:
    """``ironbus run`` (with ``--processes N``: its supervisor and N bus processes on one port)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc

    def pids(self) -> list[int]:
        """The processes doing the work: the supervisor's children, or the one process."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        found = [int(p) for p in children.read_text().split()] if children.exists() else []
        return found or [self.proc.pid]

    def all_pids(self) -> list[int]:
        """Every process of the bus (the supervisor too), for its CPU time."""
        return sorted({self.proc.pid, *self.pids()})

    def send_signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> None:
        self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        for pid in self.pids():
            if pid != self.proc.pid:
                os.kill(pid, signal.SIGKILL)
        self.proc.kill()


def start_bus(routes: Path, journal: str, broker: str | None, port: int | None) -> Bus:
    proc = _start_one(routes, journal, broker, port)
    if port:
        wait_port(port)
    return Bus(proc)


def _start_one(routes: Path, journal: str, broker: str | None, port: int | None) -> subprocess.Popen[bytes]:
    """``ironbus run`` with its defaults; --workers / --bus-processes / --bus-arg only when given."""
    cmd = [sys.executable, "-m", "cli", "run", "--routes", str(routes), "--journal", journal, "--no-triggers",
           *BUS_ARGS]
    if WORKERS is not None:
        cmd += ["--workers", str(WORKERS)]
    if BUS_PROCESSES is not None:
        cmd += ["--processes", str(BUS_PROCESSES)]
    cmd += ["--port", str(port)] if port else ["--no-http"]
    if broker:
        cmd += ["--broker", broker]
    return subprocess.Popen(cmd, cwd=routes.parent, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def stop(proc: Bus) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


#: The shared services' processes, by the name the kernel gives them: their CPU is part of an event's cost too.
SERVICES = {"beam.smp": "RabbitMQ", "postgres": "PostgreSQL"}


def service_ticks() -> dict[int, tuple[str, int]]:
    """Clock ticks used so far by each process of :data:`SERVICES` (pid -> (service, ticks))."""
    found: dict[int, tuple[str, int]] = {}
    for entry in Path("/proc").iterdir():
        stat = process_ticks(entry.name) if entry.name.isdigit() else None
        if stat is not None and stat[0] in SERVICES:
            found[int(entry.name)] = (SERVICES[stat[0]], stat[1])
    return found


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all cores so far (/proc/stat; idle and iowait are not busy)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(fields[:8])
    return total - fields[3] - fields[4], total


class Usage:
    """What the whole machine and the shared services spent between :meth:`start` and :meth:`stop`: whether
    a flow was bound by the cores (the machine busy ~100 %) or waited on something, and what the broker and
    the database cost per event beside the bus's own processes."""

    def __init__(self) -> None:
        self.services0 = service_ticks()
        self.machine0 = machine_ticks()

    def per_event(self, events: int) -> dict[str, float]:
        busy1, total1 = machine_ticks()
        busy = (busy1 - self.machine0[0]) / max(total1 - self.machine0[1], 1)
        spent: dict[str, int] = {}
        for pid, (service, ticks) in service_ticks().items():
            before = self.services0.get(pid)
            spent[service] = spent.get(service, 0) + ticks - (before[1] if before and before[0] == service else 0)
        tick = os.sysconf("SC_CLK_TCK")
        figures = {"machine_busy": round(busy, 2)}
        for service, ticks in sorted(spent.items()):
            figures[f"{service.lower()}_cpu_us_per_event"] = round(ticks / tick / max(events, 1) * 1e6, 1)
        return figures


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def measure(port: int, sink_port: int, pids: list[int], n: int, label: str) -> dict[str, Any]:
    """Warm up, then push ``n`` events as fast as accepted and wait for the sink to have them all: events/s from
    the first request to the last delivery, and the CPU the flow's processes (``pids``) used per event."""
    warm = asyncio.run(blast(port, 200, 8, WARM_UP))  # warm-up: connections, imports, caches
    wait_delivered(sink_port, set(warm), 60)  # drained before the clock starts
    sink_reset(sink_port)
    cpu0 = cpu_seconds(pids)
    usage = Usage()
    t0 = time.time()
    accepted = asyncio.run(blast(port, n, 32))
    t_accepted = time.time()
    stats, _ = wait_delivered(sink_port, set(accepted), 300)
    cpu = cpu_seconds(pids) - cpu0
    used = usage.per_event(n)
    delivered = [stats[i] for i in accepted if i in stats]
    t_last = max(delivered) if delivered else time.time()
    lat = [(stats[i] - accepted[i]) * 1000 for i in accepted if i in stats]
    eps = len(delivered) / (t_last - t0)
    cpu_us = cpu / max(len(delivered), 1) * 1e6
    print(f"{label:<34} {eps:8.0f} events/s end to end ({len(delivered)}/{n} delivered; accepted at "
          f"{n / (t_accepted - t0):.0f}/s; p99 {pct(lat, .99):.0f} ms under saturation); CPU {cpu_us:.0f} us/event "
          f"in {len(pids)} process(es)")
    services = ", ".join(f"{k.split('_')[0]} {v:.0f} us/event" for k, v in used.items() if k != "machine_busy")
    print(f"{'':<34} machine busy {used['machine_busy']:.0%} of its {os.cpu_count()} cores"
          + (f"; {services}" if services else ""))
    return {"eps": round(eps), "accept_eps": round(n / (t_accepted - t0)), "delivered": len(delivered),
            "cpu_us_per_event": round(cpu_us, 1), **used}


def scenario_throughput(folder: Path, sink_port: int, journal: str, broker: str | None, n: int,
                        label: str) -> dict[str, Any]:
    port = free_port()
    routes = write_config(folder, sink_port)
    sink_reset(sink_port)
    bus = start_bus(routes, journal, broker, port)
    try:
        wait_started(bus)
        return measure(port, sink_port, bus.all_pids(), n, label)
    finally:
        stop(bus)


def wait_started(bus: Bus, timeout: float = 60.0) -> None:
    """With several processes, every one of them up (the port answers as soon as the first is)."""
    deadline = time.monotonic() + timeout
    want = BUS_PROCESSES if BUS_PROCESSES is not None else len(os.sched_getaffinity(0))
    while len(bus.pids()) < want and want > 1 and time.monotonic() < deadline:
        time.sleep(0.05)


def scenario_baseline(folder: Path, sink_port: int, n: int) -> dict[str, Any]:
    """The minimal non-durable Python flow (BASELINE_APP), measured like the bus."""
    port = free_port()
    (folder / "baseline_app.py").write_text(BASELINE_APP)
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "baseline_app:app", "--port", str(port),
                             "--log-level", "warning", "--no-access-log"], cwd=folder,
                            env={**os.environ, "BENCH_SINK": f"http://127.0.0.1:{sink_port}", "BENCH_SECRET": SECRET})
    try:
        wait_port(port)
        return measure(port, sink_port, [proc.pid], n, "minimal Python flow (baseline)")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def scenario_latency(folder: Path, sink_port: int, journal: str, broker: str | None, rate: float,
                     seconds: float, label: str) -> dict[str, Any]:
    port = free_port()
    routes = write_config(folder, sink_port)
    bus = start_bus(routes, journal, broker, port)
    try:
        wait_started(bus)
        warm = asyncio.run(blast(port, 100, 4, WARM_UP))
        wait_delivered(sink_port, set(warm), 60)
        sink_reset(sink_port)
        accepted = asyncio.run(paced(port, rate, seconds))
        stats, _ = wait_delivered(sink_port, set(accepted), 60)
        lat = [(stats[i] - accepted[i]) * 1000 for i in accepted if i in stats]
    finally:
        stop(bus)
    p50, p99 = pct(lat, 0.5), pct(lat, 0.99)
    print(f"{label:<34} p50 {p50:6.1f} ms  p99 {p99:6.1f} ms accepted -> delivered ({len(lat)} events at "
          f"{rate:.0f}/s)")
    return {"p50_ms": round(p50, 1), "p99_ms": round(p99, 1), "events": len(lat)}


def scenario_drain(folder: Path, sink_port: int, journal: str, broker: str, n: int) -> dict[str, Any]:
    """Pre-queue n events, then time ``ironbus run`` draining them into the sink."""
    from bus.envelope import Event
    from bus.ingest import Ingestor
    from bus.journal import Journal
    from bus.queue.open import open_queue

    routes = write_config(folder, sink_port)
    j = Journal(journal)
    q = open_queue(broker, j)
    ing = Ingestor(j, q)
    events = [(Event(type="shop.received", source="bench", data=order_doc(i), key=f"SO-{i:07d}"), "send")
              for i in range(n)]
    for k in range(0, n, 500):
        ing.ingest(events[k:k + 500])
    ing.close()
    q.close()
    j.close()
    sink_reset(sink_port)
    t0 = time.time()
    bus = start_bus(routes, journal, broker, None)
    try:
        # CPU from the first delivery on, as the rate: start-up (imports, connecting) is not draining
        deadline = time.monotonic() + 60
        while sink_count(sink_port) == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        usage, cpu0, first = Usage(), cpu_seconds(bus.all_pids()), sink_count(sink_port)
        stats, _ = wait_delivered(sink_port, {e.id for e, _ in events}, 300)
        used = usage.per_event(n - first)
        bus_cpu = (cpu_seconds(bus.all_pids()) - cpu0) / max(n - first, 1) * 1e6
    finally:
        stop(bus)
    delivered = sorted(stats[e.id] for e, _ in events if e.id in stats)
    # steady state: from the first delivery to the last (process start-up and connecting are left out)
    eps = (len(delivered) - 1) / (delivered[-1] - delivered[0]) if len(delivered) > 1 else 0.0
    started = delivered[0] - t0 if delivered else 0.0
    print(f"{'bus drain (RabbitMQ + PostgreSQL)':<34} {eps:8.0f} events/s (first delivery {started:.1f}s "
          f"after start); bus CPU {bus_cpu:.0f} us/event, machine busy {used['machine_busy']:.0%}, RabbitMQ "
          f"{used.get('rabbitmq_cpu_us_per_event', 0):.0f} us/event, PostgreSQL "
          f"{used.get('postgresql_cpu_us_per_event', 0):.0f} us/event")
    return {"eps": round(eps), "delivered": len(delivered), "startup_s": round(started, 2),
            "cpu_us_per_event": round(bus_cpu, 1), **used}


def raw_kombu(url: str, n: int) -> float:
    """Raw kombu on the same broker: persistent messages with confirms, then consume + ack (prefetch 64)."""
    from kombu import Connection, Exchange, Queue

    name = f"bench_raw_{uuid.uuid4().hex[:8]}"
    body = json.dumps(order_doc(1)).encode()
    with Connection(url, transport_options={"confirm_publish": True}) as conn:
        queue = Queue(name, Exchange(name, type="direct", durable=True), routing_key=name, durable=True)
        with conn.Producer() as producer:
            for _ in range(n):
                producer.publish(body, exchange=queue.exchange, routing_key=name, declare=[queue],
                                 delivery_mode=2, content_type="application/json")
        got = 0
        usage = Usage()
        t0 = time.perf_counter()

        def on_message(_body: Any, message: Any) -> None:
            nonlocal got
            got += 1
            message.ack()

        try:
            with conn.Consumer(queue, callbacks=[on_message], prefetch_count=64):
                while got < n:
                    conn.drain_events(timeout=10)
            elapsed = time.perf_counter() - t0
            used = usage.per_event(n)
        finally:
            bound = queue(conn.channel())
            bound.delete()
            bound.exchange.delete()
    rate = n / elapsed
    print(f"{'raw kombu consume+ack (RabbitMQ)':<34} {rate:8.0f} msg/s; machine busy {used['machine_busy']:.0%}, "
          f"RabbitMQ {used.get('rabbitmq_cpu_us_per_event', 0):.0f} us/message")
    return rate


def drop_topology(broker: str) -> None:
    """Delete the queues and exchanges the bus declared on the shared RabbitMQ for this run."""
    from urllib.parse import parse_qs, urlsplit, urlunsplit

    from bus.queue.amqp import AmqpQueue
    from bus.queue.amqp_partitions import existing_partitions

    parts = urlsplit(broker)
    name = parse_qs(parts.query)["name"][-1]
    server = urlunsplit(parts._replace(query=""))
    queue = AmqpQueue(server, name=name, partitions=max(1, existing_partitions(server, name)))
    try:
        queue.delete_topology()
    finally:
        queue.close()


def reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _range(values: list[float]) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:.2f}" if round(lo, 2) == round(hi, 2) else f"{lo:.2f}-{hi:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=6000)
    parser.add_argument("--rounds", type=int, default=2,
                        help="interleaved (baseline, embedded) pairs; ratios are given per pair, as a range")
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--skip-rabbitmq", action="store_true")
    parser.add_argument("--per-request", type=int, default=1,
                        help="events per webhook request (a JSON array, as HubSpot sends); default 1")
    parser.add_argument("--bus-processes", default=None,
                        help="ironbus run --processes (default: not given, the bus chooses; auto = one per core)")
    parser.add_argument("--workers", type=int, default=None,
                        help="ironbus run --workers (default: not given, the bus chooses)")
    parser.add_argument("--only", choices=["embedded", "rabbitmq", "drain"],
                        help="run one part: the embedded scenarios (with the baseline), the RabbitMQ + PostgreSQL "
                             "end-to-end scenarios, or the RabbitMQ drain against raw kombu (default: all)")
    parser.add_argument("--drain-events", type=int, default=0,
                        help="events pre-queued for the drain (default: max(20000, events / 2): a shorter drain ends "
                             "before it is steady)")
    parser.add_argument("--bus-arg", action="append", default=[],
                        help="extra argument for 'ironbus run', e.g. --bus-arg=--batch=8 (repeatable)")
    args = parser.parse_args()
    global PER_REQUEST, BUS_PROCESSES, WORKERS
    PER_REQUEST = args.per_request
    BUS_ARGS.extend(args.bus_arg)
    if args.bus_processes is not None:
        BUS_PROCESSES = len(os.sched_getaffinity(0)) if args.bus_processes == "auto" else int(args.bus_processes)
    WORKERS = args.workers

    folder = Path(tempfile.mkdtemp(prefix="ironbus-e2e-"))
    sink_port = free_port()
    (folder / "sink_app.py").write_text(SINK_APP)
    sink = subprocess.Popen([sys.executable, "-m", "uvicorn", "sink_app:app", "--port", str(sink_port),
                             "--log-level", "warning", "--no-access-log"], cwd=folder)
    figures: dict[str, Any] = {"machine_cores": os.cpu_count(), "events_per_request": PER_REQUEST,
                               "bus_processes": BUS_PROCESSES or "default", "workers_per_process": WORKERS or "default",
                               "bus_args": BUS_ARGS}
    try:
        wait_port(sink_port)
        flags = [*BUS_ARGS, *([f"--processes {BUS_PROCESSES}"] if BUS_PROCESSES else []),
                 *([f"--workers {WORKERS}"] if WORKERS else [])]
        print(f"ironbus end-to-end benchmark ({os.cpu_count()} cores; load generator, bus and sink on this host; "
              f"{PER_REQUEST} event(s) per webhook request; ironbus run {' '.join(flags) or 'with its defaults'})")
        if args.only in (None, "embedded"):
            pairs: list[tuple[dict[str, Any], dict[str, Any]]] = []
            for r in range(args.rounds):  # interleaved pairs: a burst of load elsewhere hits both alike
                base = scenario_baseline(folder, sink_port, args.events)
                bus = scenario_throughput(folder, sink_port, f"sqlite:///{folder}/a{r}.sqlite", None, args.events,
                                          "embedded (SQLite), defaults")
                pairs.append((base, bus))
            ratios = [b["eps"] / a["eps"] for a, b in pairs]
            figures["baseline"] = {"eps": [a["eps"] for a, _ in pairs],
                                   "cpu_us_per_event": [a["cpu_us_per_event"] for a, _ in pairs]}
            figures["embedded"] = {"eps": [b["eps"] for _, b in pairs],
                                   "cpu_us_per_event": [b["cpu_us_per_event"] for _, b in pairs]}
            figures["embedded_vs_baseline"] = [round(x, 2) for x in ratios]
            figures["embedded_latency"] = scenario_latency(folder, sink_port, f"sqlite:///{folder}/b.sqlite",
                                                           None, args.rate, args.seconds, "embedded latency")
        if args.only != "embedded" and not args.skip_rabbitmq and reachable(5672) and reachable(5432):
            import sqlalchemy as sa

            pg = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
            schema = f"bench_{uuid.uuid4().hex[:8]}"
            admin = sa.create_engine(pg)
            with admin.begin() as conn:
                conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
            journal = f"{pg}?options=-csearch_path%3D{schema}"
            amqp = "amqp://guest:guest@127.0.0.1:5672//"
            broker = f"{amqp}?name=bench_{uuid.uuid4().hex[:8]}"
            try:
                if args.only in (None, "rabbitmq"):
                    figures["rabbitmq"] = scenario_throughput(folder, sink_port, journal, broker, args.events,
                                                              "RabbitMQ + PostgreSQL")
                    if "embedded" in figures:
                        figures["rabbitmq_vs_embedded"] = round(
                            figures["rabbitmq"]["eps"] / statistics.median(figures["embedded"]["eps"]), 2)
                    figures["rabbitmq_latency"] = scenario_latency(folder, sink_port, journal, broker, args.rate,
                                                                   args.seconds, "RabbitMQ + PostgreSQL latency")
                if args.only in (None, "drain"):
                    drain_n = args.drain_events or max(20000, args.events // 2)
                    figures["rabbitmq_drain"] = scenario_drain(folder, sink_port, journal, broker, drain_n)
                    raw = raw_kombu(amqp, drain_n)
                    figures["raw_kombu_consume"] = round(raw)
                    figures["drain_vs_raw_kombu"] = round(figures["rabbitmq_drain"]["eps"] / raw, 2)
            finally:
                drop_topology(broker)
                with admin.begin() as conn:
                    conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
                admin.dispose()
        print("-- figures against their baselines (issue 18 targets)")
        if "embedded" in figures:
            e, b = figures["embedded"], figures["baseline"]
            print(f"embedded defaults vs minimal flow: {_range(figures['embedded_vs_baseline'])}x "
                  f"({e['eps']} vs {b['eps']} events/s; target >= 0.6x)")
            cpu_ratio = [x / y for x, y in zip(e["cpu_us_per_event"], b["cpu_us_per_event"], strict=True)]
            print(f"bus CPU per delivered event: {e['cpu_us_per_event']} us (target <= 220; minimal flow "
                  f"{b['cpu_us_per_event']} us; ratio {_range(cpu_ratio)}x)")
            print(f"p99 accepted -> delivered at {args.rate:.0f}/s: {figures['embedded_latency']['p99_ms']} ms "
                  "(target <= 10 ms)")
        if "rabbitmq_vs_embedded" in figures:
            print(f"RabbitMQ + PostgreSQL end to end vs embedded: {figures['rabbitmq_vs_embedded']}x (target >= 0.8x)")
        if "drain_vs_raw_kombu" in figures:
            print(f"RabbitMQ drain vs raw kombu consume: {figures['drain_vs_raw_kombu']}x (target >= 0.75x)")
    finally:
        sink.send_signal(signal.SIGTERM)
        sink.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
