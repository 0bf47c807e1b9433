"""A real local HTTP sink for the http adapter's tests: a threaded HTTP/1.1 server on 127.0.0.1:0.

Tests script replies per ``(method, path)`` with :meth:`Sink.on` (a queue; the last reply repeats) or with a
function of the recorded request, and read back every request and the number of TCP connections accepted.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest


@dataclass
class Reply:
    status: int = 200
    json: Any = None
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # hold the answer this long (to provoke client read timeouts)
    drop_connection: bool = False  # close the socket after answering, without saying so (a stale keep-alive)


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    connection: int

    def json(self) -> Any:
        return orjson.loads(self.body)


Responder = Callable[[Recorded], Reply]


class Sink:
    def __init__(self, tls: tuple[str, str] | None = None) -> None:
        self.requests: list[Recorded] = []
        self.connections = 0
        self.routes: dict[tuple[str, str], list[Reply | Responder]] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in separate writes

            def setup(self) -> None:
                super().setup()
                with sink.lock:
                    sink.connections += 1
                    self.connection_number = sink.connections

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                recorded = Recorded(self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                                    body, self.connection_number)
                with sink.lock:
                    sink.requests.append(recorded)
                reply = sink.reply_for(recorded)
                if reply.delay:
                    sink.stopping.wait(reply.delay)
                payload = orjson.dumps(reply.json) if reply.json is not None else reply.body
                self.send_response(reply.status)
                headers = {"Content-Type": "application/json", **reply.headers}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                if reply.drop_connection:
                    self.close_connection = True

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False  # type: ignore[attr-defined]
        scheme = "http"
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)

    def on(self, method: str, path: str, *replies: Reply | Responder) -> None:
        self.routes[(method, path)] = list(replies)

    def reply_for(self, recorded: Recorded) -> Reply:
        with self.lock:
            queue = self.routes.get((recorded.method, recorded.path.split("?")[0]))
            if not queue:
                return Reply(404, json={"error": "no route in sink", "path": recorded.path})
            item = queue.pop(0) if len(queue) > 1 else queue[0]
        return item(recorded) if callable(item) else item

    def requests_to(self, path: str) -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if r.path.split("?")[0] == path]


def _serve(server: Sink) -> Iterator[Sink]:
    server.thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        server.server.shutdown()
        server.server.server_close()


@pytest.fixture
def sink() -> Iterator[Sink]:
    yield from _serve(Sink())


@pytest.fixture
def tls_sink(tls_cert: tuple[Path, Path]) -> Iterator[Sink]:
    yield from _serve(Sink((str(tls_cert[0]), str(tls_cert[1]))))
