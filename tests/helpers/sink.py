"""A real HTTP sink for delivery tests: records what arrives, can fail on purpose.

It runs a threaded ``http.server`` on 127.0.0.1 in the test process. ``mode`` decides the answers:
``ok`` (200), ``permanent`` (400), ``random`` (a mix of 503, 429 with Retry-After, slow replies past the
client's timeout, and 200). Every 2xx is recorded per ``Idempotency-Key`` so tests can assert that each
delivery arrived, and how often.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Sink:
    def __init__(self, mode: str = "ok", seed: int = 7, slow: float = 0.0, company: int = 0,
                 host: str = "127.0.0.1", gate: threading.Event | None = None) -> None:
        self.mode = mode
        self.slow = slow
        # gate: every request waits (at most 90 s) until the test sets it — a call that stays in flight exactly
        # as long as the test needs, however slow the machine
        self.gate = gate
        # company > 0: a request waits (at most 0.1 s, below the routes' read timeout) until that many are in
        # flight at once, so a test sees whether a client sends requests together (max_in_flight), without
        # failing one that does not
        self.company = company
        self.in_flight = 0
        self.max_in_flight = 0
        self.together = threading.Condition()
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.delivered: Counter[str] = Counter()
        self.bodies: dict[str, Any] = {}
        self.headers: dict[str, dict[str, str]] = {}  # request headers of each successful delivery (lower-case)
        self.failures: Counter[str] = Counter()
        self.arrival_order: list[str] = []  # idempotency keys of successful deliveries, in arrival order
        #: (wall time, client address, idempotency key) of every successful delivery: which host sent it, when
        self.arrivals: list[tuple[float, str, str]] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as separate writes

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                key = self.headers.get("Idempotency-Key", "")
                if sink.company:
                    sink.wait_for_company()
                status, headers, delay = sink.decide()
                if delay:
                    time.sleep(delay)  # the client's timeout fires first: a real timeout, on purpose
                if sink.gate is not None:
                    sink.gate.wait(timeout=90)
                if status < 300:
                    with sink.lock:
                        sink.delivered[key] += 1
                        sink.arrival_order.append(key)
                        sink.arrivals.append((time.time(), self.client_address[0], key))
                        sink.bodies[key] = json.loads(body or b"null")
                        sink.headers[key] = {k.lower(): v for k, v in self.headers.items()}
                else:
                    with sink.lock:
                        sink.failures[str(status)] += 1
                reply = json.dumps({"id": f"R-{key[-12:]}"}).encode()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            do_PUT = do_POST  # noqa: N815
            do_PATCH = do_POST  # noqa: N815

        class Server(ThreadingHTTPServer):
            request_queue_size = 128  # clients that open many connections at once are not left in SYN retries
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client killed mid-request (the crash test does that on purpose) is not news

        self.server = Server((host, 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def wait_for_company(self) -> None:
        with self.together:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.together.notify_all()
            self.together.wait_for(lambda: self.in_flight >= self.company, timeout=0.1)
            self.in_flight -= 1

    def decide(self) -> tuple[int, dict[str, str], float]:
        if self.mode == "permanent":
            return 400, {}, 0.0
        if self.mode == "down":
            return 503, {}, 0.0
        if self.mode == "random":
            with self.lock:
                roll = self.random.random()
            if roll < 0.15:
                return 503, {}, 0.0
            if roll < 0.25:
                return 429, {"Retry-After": "0"}, 0.0
            if roll < 0.30:
                return 200, {}, 0.6  # slower than the adapter's read timeout
        return 200, {}, self.slow

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> Sink:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def keys(self) -> set[str]:
        with self.lock:
            return set(self.delivered)

    def wait_for(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.keys()) >= count:
                return True
            time.sleep(0.05)
        return False
