"""A real HTTP server on 127.0.0.1 for vendor fakes: threads, a request log, and one handler method.

Subclasses implement :meth:`JsonServer.handle` ``(method, path, query, headers, body) -> (status, headers,
body)``; the fakes of Odoo and Frappe build on it. Every request is logged (with lower-case header names),
so tests can assert what reached the "vendor".
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")


Answer = tuple[int, dict[str, str], bytes]


def json_answer(status: int, doc: Any, headers: dict[str, str] | None = None) -> Answer:
    return status, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}, json.dumps(doc).encode()


class JsonServer:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.requests: list[Seen] = []
        #: answers given, in order, before the fake's own (a proxy's 429, a gateway's 502 ...)
        self.canned: list[Answer] = []
        #: seconds every answer waits (provokes the client's read timeout)
        self.delay = 0.0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                seen = Seen(self.command, unquote(parts.path), dict(parse_qsl(parts.query, keep_blank_values=True)),
                            {k.lower(): v for k, v in self.headers.items()}, body)
                with owner.lock:
                    owner.requests.append(seen)
                if owner.delay:
                    time.sleep(owner.delay)  # slower than the client's read timeout, on purpose
                with owner.lock:
                    canned = owner.canned.pop(0) if owner.canned else None
                try:
                    status, headers, reply = canned or owner.handle(seen)
                except Exception as exc:  # a bug in the fake: answer like a crashed server, keep serving
                    status, headers, reply = json_answer(500, {"fake_server_bug": repr(exc)})
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            do_GET = do_POST = do_PUT = do_DELETE = _serve  # noqa: N815

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def start(self) -> JsonServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def handle(self, request: Seen) -> Answer:
        raise NotImplementedError

    def last(self, path_part: str = "") -> Seen:
        with self.lock:
            for seen in reversed(self.requests):
                if path_part in seen.path:
                    return seen
        raise AssertionError(f"no request to a path containing {path_part!r}")
