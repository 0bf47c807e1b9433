"""End-to-end benchmark: webhook -> journal -> queue -> map/validate -> HTTP delivery to a local sink.

Three processes share this 2-core machine, as they would on one host: a load generator (this process, raw
asyncio HTTP/1.1 with keep-alive), ``ironbus run`` (webhook server + workers), and an HTTP sink (uvicorn).
Figures:

* **throughput** — signed webhook events pushed as fast as the bus accepts them; events/s from the first
  request to the last delivery seen by the sink (embedded default; and RabbitMQ + PostgreSQL);
* **latency at 500 events/s** — paced load; p50/p99 from the 202 reaching the client to the sink receiving
  the delivery (both clocks are this host's);
* **consume vs raw kombu on RabbitMQ** — N events pre-queued, then drained by ``ironbus run`` into the sink,
  against raw kombu consuming (and acking) the same number of persistent messages from the same broker.

Targets (issue 4): >= 2,000 events/s end to end embedded; >= 0.5x raw kombu consume on RabbitMQ; p99
accepted -> delivered <= 20 ms at 500 events/s. Usage: ``python bench/e2e.py [--events N] [--skip-rabbitmq]
[--only embedded|rabbitmq|drain] [--bus-processes N|auto] [--workers N] [--bus-arg=--batch=N]``; the bus runs as
``ironbus run --processes N --workers N`` (defaults: the product's, one process with 4 workers and batches of
32). ``--bus-processes auto --workers 1 --bus-arg=--batch=128`` is the layout that carries most on this machine,
in all three scenarios (``make bench`` uses it). The last line is one JSON object of the figures, with the
process and worker counts.
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
BUS_PROCESSES = 1  # `ironbus run --processes N` (--bus-processes)
WORKERS = 4  # `ironbus run --workers N` (--workers): worker threads per bus process

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
    if scope["path"] == "/stats":
        out = orjson.dumps(seen)
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


async def blast(port: int, n: int, connections: int) -> dict[str, float]:
    """Send n events as fast as accepted; returns {event_id: accepted_at}."""
    accepted: dict[str, float] = {}
    requests = max(1, n // PER_REQUEST)
    bodies = [signed(i) for i in range(requests)]
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
            body, headers = signed(i)
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


def wait_delivered(port: int, ids: set[str], timeout: float) -> tuple[dict[str, float], float]:
    deadline = time.monotonic() + timeout
    while True:
        stats = sink_stats(port)
        if ids <= set(stats) or time.monotonic() > deadline:
            return stats, time.time()
        time.sleep(0.2)


class Bus:
    """``ironbus run`` (with ``--processes N``: its supervisor and N bus processes on one port)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc

    def pids(self) -> list[int]:
        """The processes doing the work: the supervisor's children, or the one process."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        found = [int(p) for p in children.read_text().split()] if children.exists() else []
        return found or [self.proc.pid]

    def send_signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> None:
        self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        for pid in self.pids():
            if pid != self.proc.pid:
                os.kill(pid, signal.SIGKILL)
        self.proc.kill()


def start_bus(routes: Path, journal: str, broker: str | None, port: int | None, workers: int | None = None) -> Bus:
    proc = _start_one(routes, journal, broker, port, WORKERS if workers is None else workers)
    if port:
        wait_port(port)
    return Bus(proc)


def _start_one(routes: Path, journal: str, broker: str | None, port: int | None,
               workers: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "cli", "run", "--routes", str(routes), "--journal", journal, "--workers",
           str(workers), "--processes", str(BUS_PROCESSES), "--no-triggers", *BUS_ARGS]
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


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def scenario_throughput(folder: Path, sink_port: int, journal: str, broker: str | None, n: int,
                        label: str) -> dict[str, Any]:
    port = free_port()
    routes = write_config(folder, sink_port)
    sink_reset(sink_port)
    bus = start_bus(routes, journal, broker, port)
    try:
        warm = asyncio.run(blast(port, 200, 8))  # warm-up: connections, imports, caches
        wait_delivered(sink_port, set(warm), 60)  # drained before the clock starts
        sink_reset(sink_port)
        t0 = time.time()
        accepted = asyncio.run(blast(port, n, 32))
        t_accepted = time.time()
        stats, _ = wait_delivered(sink_port, set(accepted), 300)
        delivered = [stats[i] for i in accepted if i in stats]
        t_last = max(delivered) if delivered else time.time()
        lat = [(stats[i] - accepted[i]) * 1000 for i in accepted if i in stats]
    finally:
        stop(bus)
    eps = len(delivered) / (t_last - t0)
    print(f"{label:<34} {eps:8.0f} events/s end to end ({len(delivered)}/{n} delivered; "
          f"accepted at {n / (t_accepted - t0):.0f}/s; p50 {pct(lat, .5):.0f} ms p99 {pct(lat, .99):.0f} ms "
          f"under saturation)")
    return {"eps": round(eps), "accept_eps": round(n / (t_accepted - t0)), "delivered": len(delivered)}


def scenario_latency(folder: Path, sink_port: int, journal: str, broker: str | None, rate: float,
                     seconds: float, label: str) -> dict[str, Any]:
    port = free_port()
    routes = write_config(folder, sink_port)
    bus = start_bus(routes, journal, broker, port)
    try:
        warm = asyncio.run(blast(port, 100, 4))
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
        stats, _ = wait_delivered(sink_port, {e.id for e, _ in events}, 300)
    finally:
        stop(bus)
    delivered = sorted(stats[e.id] for e, _ in events if e.id in stats)
    # steady state: from the first delivery to the last (process start-up and connecting are left out)
    eps = (len(delivered) - 1) / (delivered[-1] - delivered[0]) if len(delivered) > 1 else 0.0
    started = delivered[0] - t0 if delivered else 0.0
    print(f"{'bus drain (RabbitMQ + PostgreSQL)':<34} {eps:8.0f} events/s (first delivery {started:.1f}s "
          f"after start)")
    return {"eps": round(eps), "delivered": len(delivered), "startup_s": round(started, 2)}


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
        finally:
            bound = queue(conn.channel())
            bound.delete()
            bound.exchange.delete()
    rate = n / elapsed
    print(f"{'raw kombu consume+ack (RabbitMQ)':<34} {rate:8.0f} msg/s")
    return rate


def drop_topology(broker: str) -> None:
    """Delete the queues and exchanges the bus declared on the shared RabbitMQ for this run."""
    from urllib.parse import parse_qs, urlsplit, urlunsplit

    from bus.queue.amqp import AmqpQueue

    parts = urlsplit(broker)
    name = parse_qs(parts.query)["name"][-1]
    queue = AmqpQueue(urlunsplit(parts._replace(query="")), name=name)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=6000)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--skip-rabbitmq", action="store_true")
    parser.add_argument("--per-request", type=int, default=1,
                        help="events per webhook request (a JSON array, as HubSpot sends); default 1")
    parser.add_argument("--bus-processes", default="1",
                        help="ironbus run --processes: bus processes sharing the port and the work "
                             "(default 1; auto = one per core)")
    parser.add_argument("--workers", type=int, default=4, help="ironbus run --workers: threads per bus process "
                                                                "(default 4, the product default)")
    parser.add_argument("--only", choices=["embedded", "rabbitmq", "drain"],
                        help="run one part: the embedded scenarios, the RabbitMQ + PostgreSQL end-to-end scenarios, "
                             "or the RabbitMQ drain against raw kombu (default: all)")
    parser.add_argument("--drain-events", type=int, default=0,
                        help="events pre-queued for the drain (default: max(2000, events / 2))")
    parser.add_argument("--bus-arg", action="append", default=[],
                        help="extra argument for 'ironbus run', e.g. --bus-arg=--batch=8 (repeatable)")
    args = parser.parse_args()
    global PER_REQUEST
    PER_REQUEST = args.per_request
    BUS_ARGS.extend(args.bus_arg)
    global BUS_PROCESSES, WORKERS
    BUS_PROCESSES = (os.cpu_count() or 1) if args.bus_processes == "auto" else int(args.bus_processes)
    WORKERS = args.workers

    folder = Path(tempfile.mkdtemp(prefix="ironbus-e2e-"))
    sink_port = free_port()
    (folder / "sink_app.py").write_text(SINK_APP)
    sink = subprocess.Popen([sys.executable, "-m", "uvicorn", "sink_app:app", "--port", str(sink_port),
                             "--log-level", "warning", "--no-access-log"], cwd=folder)
    figures: dict[str, Any] = {"machine_cores": os.cpu_count(), "events_per_request": PER_REQUEST,
                               "bus_processes": BUS_PROCESSES, "workers_per_process": WORKERS}
    try:
        wait_port(sink_port)
        print(f"ironbus end-to-end benchmark ({os.cpu_count()} cores; load generator, bus and sink on this host; "
              f"{PER_REQUEST} event(s) per webhook request)")
        if args.only in (None, "embedded"):
            figures["embedded"] = scenario_throughput(folder, sink_port, f"sqlite:///{folder}/a.sqlite", None,
                                                      args.events, "embedded (SQLite)")
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
                    figures["rabbitmq_latency"] = scenario_latency(folder, sink_port, journal, broker, args.rate,
                                                                   args.seconds, "RabbitMQ + PostgreSQL latency")
                if args.only in (None, "drain"):
                    drain_n = args.drain_events or max(2000, args.events // 2)
                    figures["rabbitmq_drain"] = scenario_drain(folder, sink_port, journal, broker, drain_n)
                    raw = raw_kombu(amqp, drain_n)
                    figures["raw_kombu_consume"] = round(raw)
                    figures["drain_vs_raw_kombu"] = round(figures["rabbitmq_drain"]["eps"] / raw, 2)
                    print(f"ratio bus drain / raw kombu consume: {figures['drain_vs_raw_kombu']:.2f}x "
                          "(target >= 0.5x)")
            finally:
                drop_topology(broker)
                with admin.begin() as conn:
                    conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
                admin.dispose()
        if "embedded" in figures:
            print(f"embedded end to end: {figures['embedded']['eps']} events/s (target >= 2,000); "
                  f"p99 at {args.rate:.0f}/s: {figures['embedded_latency']['p99_ms']} ms (target <= 20 ms)")
    finally:
        sink.send_signal(signal.SIGTERM)
        sink.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
