"""How many signed webhook requests per second does the ironbus webhook server accept?

Runs the real server (``WebhookServer`` + ``WebhookApp``, uvicorn in a thread, as ``ironbus run`` does) with
a HubSpot-v3-verifying ``WebhookAdapter`` endpoint and a no-op async ingest, and drives it from a load
generator in ANOTHER process (raw asyncio keep-alive HTTP/1.1 connections, so the client costs little).
Scenarios:

* ``ping``            — ``GET /ping``: the HTTP stack alone; the baseline the others are compared with;
* ``hook``            — ``POST /hooks/crm/received``: v3 signature check, JSON parse, split, key, event
                        creation, ingest, 202 with the event ids; handler in the thread pool (the default);
* ``hook_inline``     — the same with ``blocking=False`` (handler on the event loop, no thread hop).

Each request carries a JSON array of ``--batch`` HubSpot-style events (default 1), so requests/s equals
events/s at the default. Usage: ``python bench/webhooks.py [--seconds 3] [--connections 32] [--batch 1]``.
Prints one line per scenario with the ratio to the baseline, then one JSON line with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SECRET = "bench-client-secret"


# -- load generator (child process) --------------------------------------------------------------------
def _request(port: int, path: str, batch: int) -> bytes:
    from adapters.signatures import hubspot_v3_signature

    if path == "/ping":
        return f"GET /ping HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    body = json.dumps([{"objectId": 1000 + i, "propertyName": "dealstage", "propertyValue": "closedwon",
                        "eventId": i, "subscriptionType": "deal.propertyChange", "occurredAt": 1556094637139}
                       for i in range(batch)]).encode()
    # One signature per run: its timestamp stays within HubSpot's 5-minute window for the whole benchmark.
    ts = str(int(time.time() * 1000))
    host = f"127.0.0.1:{port}"
    sig = hubspot_v3_signature(SECRET, "POST", f"http://{host}{path}", body, ts)
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"X-HubSpot-Signature-v3: {sig}\r\nX-HubSpot-Request-Timestamp: {ts}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def _connection(port: int, request: bytes, deadline: float, latencies: list[float],
                      statuses: dict[int, int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            lower = head.lower()
            marker = lower.find(b"content-length:")
            length = int(lower[marker + 15: lower.find(b"\r\n", marker)]) if marker >= 0 else 0
            if length:
                await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


def _load(port: int, path: str, connections: int, seconds: float, batch: int) -> None:
    request = _request(port, path, batch)
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    async def main() -> float:
        started = time.perf_counter()
        deadline = started + seconds
        await asyncio.gather(*(_connection(port, request, deadline, latencies, statuses)
                               for _ in range(connections)))
        return time.perf_counter() - started

    elapsed = asyncio.run(main())
    latencies.sort()
    print(json.dumps({"requests": len(latencies), "elapsed": elapsed, "statuses": statuses,
                      "p50_ms": latencies[len(latencies) // 2] * 1000 if latencies else None,
                      "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000 if latencies else None}))


# -- server (this process) -----------------------------------------------------------------------------
def _serve(http: str, loop: str) -> tuple[Any, dict[str, int]]:
    from adapters.webhook import WebhookAdapter
    from bus.envelope import Event
    from bus.metrics import Metrics
    from bus.webhooks import Endpoint, WebhookApp, WebhookServer, endpoints_for

    counts = {"events": 0}

    async def ingest(events: list[Event]) -> None:
        counts["events"] += len(events)

    adapter = WebhookAdapter("crm", {"signature": {"scheme": "hubspot-v3", "secret": SECRET}, "split": "[*]",
                                     "key": "to_string(objectId)"})
    endpoints = endpoints_for("crm", adapter)
    threaded = endpoints[("crm", "received")]
    endpoints[("crm", "inline")] = Endpoint("crm", "inline", threaded.handler, "crm.inline", key=threaded.key,
                                            content_types=threaded.content_types, blocking=False)
    server = WebhookServer(WebhookApp(endpoints, ingest, lambda: (True, "ok"), metrics=Metrics()), port=0,
                           http=http, loop=loop)
    server.start()
    return server, counts


def _run(port: int, path: str, args: argparse.Namespace) -> dict[str, Any]:
    # CPU time of THIS process (the server; the load generator is a child and not counted) per request is
    # the figure that survives a busy machine: wall-clock rates swing with whatever else runs on the cores.
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    out = subprocess.run([sys.executable, __file__, "--load", str(port), path, str(args.connections),
                          str(args.seconds), str(args.batch)], check=True, capture_output=True, text=True)
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["rps"] = result["requests"] / result["elapsed"]
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    result["cpu_us"] = cpu / max(result["requests"], 1) * 1e6
    return result


def _installed(module: str) -> str | None:
    """``module`` when uvicorn can use it (uvicorn picks httptools and uvloop automatically when present)."""
    try:
        __import__(module)
    except ImportError:
        return None
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--batch", type=int, default=1, help="events per request")
    parser.add_argument("--http", default="auto", help="uvicorn HTTP implementation: auto, h11, httptools")
    parser.add_argument("--loop", default="auto", help="uvicorn event loop: auto, asyncio, uvloop")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions; the best run counts")
    parser.add_argument("--load", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        port, path, connections, seconds, batch = args.load
        _load(int(port), path, int(connections), float(seconds), int(batch))
        return

    import logging

    import structlog

    # The benchmark measures the server, not the console renderer of rejected requests (there are none).
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    server, counts = _serve(args.http, args.loop)
    figures: dict[str, Any] = {"connections": args.connections, "batch": args.batch, "seconds": args.seconds,
                               "http": args.http if args.http != "auto" else _installed("httptools") or "h11",
                               "loop": args.loop if args.loop != "auto" else _installed("uvloop") or "asyncio"}
    scenarios = [("ping", "/ping"), ("hook", "/hooks/crm/received"), ("hook_inline", "/hooks/crm/inline")]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in scenarios}
    try:
        # Interleaved rounds, so a burst of load from elsewhere on the machine hits every scenario alike.
        for _ in range(args.rounds):
            for name, path in scenarios:
                runs[name].append(_run(server.port, path, args))
    finally:
        server.stop()
    best = {name: max(rs, key=lambda r: r["rps"]) for name, rs in runs.items()}
    cpu = {name: statistics.median(r["cpu_us"] for r in rs) for name, rs in runs.items()}
    base = best["ping"]["rps"]
    for name, r in best.items():
        events = r["rps"] * (1 if name == "ping" else args.batch)
        print(f"{name:12s} best {r['rps']:7.0f} req/s ({events:7.0f} events/s)  p50 {r['p50_ms']:6.2f} ms  "
              f"p99 {r['p99_ms']:6.2f} ms  server CPU {cpu[name]:6.0f} us/req (~{1e6 / cpu[name]:6.0f} req/s per "
              f"core)  ratio to ping {r['rps'] / base:.2f}  all runs {[round(x['rps']) for x in runs[name]]}  "
              f"statuses {r['statuses']}")
        figures[f"{name}_rps"] = round(r["rps"], 1)
        figures[f"{name}_p50_ms"] = round(r["p50_ms"], 3)
        figures[f"{name}_p99_ms"] = round(r["p99_ms"], 3)
        figures[f"{name}_cpu_us_per_request"] = round(cpu[name], 1)
        figures[f"{name}_ratio_to_ping"] = round(r["rps"] / base, 3)
    figures["events_ingested"] = counts["events"]
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
