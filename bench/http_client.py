"""Which HTTP client design can carry >= 2,000 deliveries/s from the bus's worker THREADS?

Starts a minimal keep-alive HTTP/1.1 sink in a separate process (raw asyncio protocol, so the sink is not
the bottleneck), then measures requests/s and p50/p99 latency for:

* httpx sync ``Client`` shared by N threads (N = 1, 4, 8, 16) — the baseline is N = 1;
* httpx ``AsyncClient`` with 50 concurrent tasks;
* aiohttp ``ClientSession`` with 50 concurrent tasks;
* httpx ``AsyncClient`` on the ``httpx-aiohttp`` transport (when installed), 50 concurrent tasks;
* the ironbus ``http`` adapter itself (``HttpAdapter.call`` from N threads: templating, auth, classification
  and result extraction included), which is what the bus actually runs.

Usage: ``python bench/http_client.py [--requests 4000] [--only NAME ...]``. Prints one line per scenario,
the ratio against the baseline measured in the same run, and finally one JSON line with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

_BODY = b'{"id":"42","status":"ok"}'
_RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
             + str(len(_BODY)).encode() + b"\r\n\r\n" + _BODY)


# -- the sink ------------------------------------------------------------------------------------------
class _SinkProtocol(asyncio.Protocol):
    """Answers every request on a keep-alive connection with the same small JSON body."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        out = []
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head = self.buffer[:end].lower()
            length = 0
            marker = head.find(b"content-length:")
            if marker >= 0:
                line_end = head.find(b"\r\n", marker)
                length = int(head[marker + 15: line_end if line_end >= 0 else None])
            total = end + 4 + length
            if len(self.buffer) < total:
                break
            self.buffer = self.buffer[total:]
            out.append(_RESPONSE)
        if out:
            self.transport.write(b"".join(out))


def _run_sink() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_SinkProtocol, "127.0.0.1", 0, backlog=1024)
        port = server.sockets[0].getsockname()[1]
        sys.stdout.write(f"{port}\n")
        sys.stdout.flush()
        await server.serve_forever()

    asyncio.run(main())


def start_sink() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, __file__, "--sink"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port = proc.stdout.readline().strip()
    if not port:
        proc.kill()
        raise SystemExit("the sink did not start")
    return proc, f"http://127.0.0.1:{port}"


# -- measurement helpers ---------------------------------------------------------------------------------
def _summary(name: str, latencies: list[float], elapsed: float, errors: int) -> dict[str, Any]:
    latencies.sort()
    n = len(latencies)
    return {
        "name": name,
        "requests": n,
        "errors": errors,
        "rps": round(n / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(statistics.median(latencies) * 1000, 3) if n else None,
        "p99_ms": round(latencies[min(n - 1, int(n * 0.99))] * 1000, 3) if n else None,
    }


def _threaded(name: str, threads: int, total: int, one: Callable[[int], None]) -> dict[str, Any]:
    per_thread = total // threads
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors = [0] * threads
    start_gate = threading.Barrier(threads + 1)

    def work(index: int) -> None:
        mine = latencies[index]
        start_gate.wait()
        for i in range(per_thread):
            t0 = time.perf_counter()
            try:
                one(i)
            except Exception:
                errors[index] += 1
                continue
            mine.append(time.perf_counter() - t0)

    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    start_gate.wait()
    t0 = time.perf_counter()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - t0
    return _summary(name, [x for xs in latencies for x in xs], elapsed, sum(errors))


async def _concurrent(name: str, concurrency: int, total: int,
                      one: Callable[[], Any]) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    remaining = total

    async def worker() -> None:
        nonlocal remaining, errors
        while remaining > 0:
            remaining -= 1
            t0 = time.perf_counter()
            try:
                await one()
            except Exception:
                errors += 1
                continue
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return _summary(name, latencies, time.perf_counter() - t0, errors)


# -- scenarios -------------------------------------------------------------------------------------------
def httpx_sync(url: str, threads: int, total: int) -> dict[str, Any]:
    import httpx

    limits = httpx.Limits(max_connections=max(threads, 1), max_keepalive_connections=max(threads, 1))
    with httpx.Client(base_url=url, limits=limits) as client:
        client.post("/warm", json={"n": 0})

        def one(i: int) -> None:
            client.post("/orders/1", json={"n": i}).raise_for_status()

        return _threaded(f"httpx_sync_t{threads}", threads, total, one)


def httpx_async(url: str, total: int, concurrency: int = 50) -> dict[str, Any]:
    import httpx

    async def main() -> dict[str, Any]:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(base_url=url, limits=limits) as client:
            await client.post("/warm", json={"n": 0})

            async def one() -> None:
                (await client.post("/orders/1", json={"n": 1})).raise_for_status()

            return await _concurrent(f"httpx_async_c{concurrency}", concurrency, total, one)

    return asyncio.run(main())


def httpx_aiohttp_transport(url: str, total: int, concurrency: int = 50) -> dict[str, Any] | None:
    try:
        from httpx_aiohttp import HttpxAiohttpClient
    except ImportError:
        return None

    async def main() -> dict[str, Any]:
        async with HttpxAiohttpClient(base_url=url) as client:
            await client.post("/warm", json={"n": 0})

            async def one() -> None:
                (await client.post("/orders/1", json={"n": 1})).raise_for_status()

            return await _concurrent(f"httpx_aiohttp_c{concurrency}", concurrency, total, one)

    return asyncio.run(main())


def aiohttp_client(url: str, total: int, concurrency: int = 50) -> dict[str, Any] | None:
    try:
        import aiohttp
    except ImportError:
        return None

    async def main() -> dict[str, Any]:
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(base_url=url, connector=connector) as session:
            async def one() -> None:
                async with session.post("/orders/1", json={"n": 1}) as response:
                    response.raise_for_status()
                    await response.read()

            return await _concurrent(f"aiohttp_c{concurrency}", concurrency, total, one)

    return asyncio.run(main())


def pooled_transport(url: str, threads: int, total: int) -> dict[str, Any]:
    from adapters.http import PooledTransport, PoolLimits, Request

    transport = PooledTransport(limits=PoolLimits(max_connections=threads))
    request = Request("POST", url + "/orders/1", {"Content-Type": "application/json"}, b'{"n":1}')
    try:
        def one(i: int) -> None:
            if transport.send(request).status != 200:
                raise RuntimeError("unexpected status")

        return _threaded(f"ironbus_pooled_transport_t{threads}", threads, total, one)
    finally:
        transport.close()


def ironbus_adapter(url: str, threads: int, total: int) -> dict[str, Any]:
    from adapters.base import Call
    from adapters.http import HttpAdapter
    from bus.envelope import Event

    settings = {
        "base_url": url,
        "auth": {"type": "bearer", "token": "bench-token"},
        "pool": {"max_connections": threads},
        "operations": {"update_order": {"method": "PATCH", "path": "/orders/{{ order_id }}", "result": "status",
                                        "reference": "id"}},
    }
    adapter = HttpAdapter("bench", settings)
    adapter.open()
    event = Event(type="order.changed", source="bench", data={"order_id": "SO-1", "qty": 3})
    call = Call(event=event, payload=event.data, idempotency_key="bench-key")
    try:
        adapter.call("update_order", call)

        def one(i: int) -> None:
            adapter.call("update_order", call)

        return _threaded(f"ironbus_http_adapter_t{threads}", threads, total, one)
    finally:
        adapter.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=4000, help="requests per scenario")
    parser.add_argument("--only", nargs="*", help="run only scenarios whose name starts with one of these")
    parser.add_argument("--sink", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink:
        _run_sink()
        return

    import logging

    import structlog

    # Per-delivery debug lines would measure the terminal, not the client.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    sink, url = start_sink()
    total = args.requests
    results: list[dict[str, Any]] = []
    try:
        plan: list[tuple[str, Callable[[], dict[str, Any] | None]]] = [
            *[(f"httpx_sync_t{n}", lambda n=n: httpx_sync(url, n, total)) for n in (1, 4, 8, 16)],  # type: ignore[misc]
            ("httpx_async_c50", lambda: httpx_async(url, total)),
            ("aiohttp_c50", lambda: aiohttp_client(url, total)),
            ("httpx_aiohttp_c50", lambda: httpx_aiohttp_transport(url, total)),
            *[(f"ironbus_pooled_transport_t{n}", lambda n=n: pooled_transport(url, n, total))  # type: ignore[misc]
              for n in (1, 8, 16)],
            *[(f"ironbus_http_adapter_t{n}", lambda n=n: ironbus_adapter(url, n, total)) for n in (1, 8, 16)],  # type: ignore[misc]
        ]
        for name, run in plan:
            if args.only and not any(name.startswith(prefix) for prefix in args.only):
                continue
            result = run()
            if result is None:
                print(f"{name:28s} skipped (not installed)")
                continue
            results.append(result)
    finally:
        sink.terminate()
        sink.wait(timeout=10)

    baseline = next((r for r in results if r["name"] == "httpx_sync_t1"), results[0] if results else None)
    print(f"cpus={os.cpu_count()} requests/scenario={total} sink=raw asyncio (separate process)")
    for r in results:
        ratio = r["rps"] / baseline["rps"] if baseline and baseline["rps"] else 0.0
        r["ratio_vs_httpx_sync_t1"] = round(ratio, 2)
        print(f"{r['name']:28s} {r['rps']:9.1f} req/s  p50 {r['p50_ms']:7.3f} ms  p99 {r['p99_ms']:7.3f} ms  "
              f"errors {r['errors']}  x{ratio:.2f} vs httpx_sync_t1")
    print(json.dumps({"benchmark": "http_client", "cpus": os.cpu_count(), "requests": total,
                      "results": {r["name"]: {k: v for k, v in r.items() if k != "name"} for r in results}}))


if __name__ == "__main__":
    main()
