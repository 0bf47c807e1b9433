"""Real peers for the SAP adapter's tests.

* ``cap`` — SAP's CAP runtime serving OData V2 (see :mod:`tests.helpers.sap_cap`).
* :class:`Gateway` — a threaded HTTP server on 127.0.0.1 answering with SAP's documented payloads
  (``tests/fixtures/samples/sap``) for what CAP does not do as SAP does: absolute ``__next`` links with
  ``$skiptoken``, SAP error bodies with message classes, lock errors.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.helpers.sap_cap import CLIENT_ID, CLIENT_SECRET, PASSWORD, ROOT, USER, CapPeer, cap

__all__ = ["CLIENT_ID", "CLIENT_SECRET", "PASSWORD", "ROOT", "USER", "CapPeer", "Gateway", "Reply", "Seen", "cap"]

SAMPLES = ROOT / "tests" / "fixtures" / "samples" / "sap"
V2 = "/sap/opu/odata/sap"


# -- a scripted SAP Gateway ------------------------------------------------------------------------------
@dataclass
class Reply:
    status: int = 200
    json: Any = None
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


Responder = Callable[[Seen], Reply]


class Gateway:
    """Answers like SAP Gateway: Basic logon, the CSRF protocol (tokens bound to a session cookie), and
    scripted answers per ``(method, path without query)``; the last scripted answer repeats."""

    def __init__(self) -> None:
        self.requests: list[Seen] = []
        self.routes: dict[tuple[str, str], list[Reply | Responder]] = {}
        self.sessions: dict[str, str] = {}
        self.lock = threading.Lock()
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                seen = Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                            self.rfile.read(length) if length else b"")
                with gateway.lock:
                    gateway.requests.append(seen)
                reply = gateway.answer(seen)
                payload = json.dumps(reply.json).encode() if reply.json is not None else reply.body
                self.send_response(reply.status)
                headers = {"Content-Type": "application/json", **reply.headers}
                for name, value in headers.items():
                    for one in value.split("\n"):
                        self.send_header(name, one)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_MERGE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def settings(self, **extra: Any) -> dict[str, Any]:
        return {"url": self.url, "auth": {"type": "basic", "username": USER, "password": PASSWORD}, **extra}

    def on(self, method: str, path: str, *replies: Reply | Responder) -> None:
        self.routes[(method, V2 + path)] = list(replies)

    def answer(self, seen: Seen) -> Reply:
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if seen.headers.get("authorization") != expected:
            return Reply(401, body=b"Logon failed", headers={"Content-Type": "text/plain"})
        cookie = seen.headers.get("cookie", "")
        sid = next((c.split("=", 1)[1] for c in cookie.split("; ") if c.startswith("SAP_SESSIONID=")), None)
        if seen.method == "GET" and seen.headers.get("x-csrf-token", "").lower() == "fetch":
            with self.lock:
                headers: dict[str, str] = {}
                if sid not in self.sessions:
                    sid = f"s{len(self.sessions) + 1}"
                    self.sessions[sid] = f"token-{sid}"
                    headers["Set-Cookie"] = f"SAP_SESSIONID={sid}; path=/"
                headers["x-csrf-token"] = self.sessions[sid]
            return Reply(200, json={"d": {"EntitySets": []}}, headers=headers)
        if seen.method != "GET":
            token = seen.headers.get("x-csrf-token")
            if sid is None or self.sessions.get(sid) != token:
                return Reply(403, body=b"CSRF token validation failed",
                             headers={"x-csrf-token": "Required", "Content-Type": "text/plain"})
        with self.lock:
            queue = self.routes.get((seen.method, seen.path.split("?")[0]))
            if not queue:
                return Reply(404, json={"error": {"code": "/IWFND/MED/170", "message": {
                    "lang": "en", "value": f"No service found for {seen.path}"}}})
            item = queue.pop(0) if len(queue) > 1 else queue[0]
        return item(seen) if callable(item) else item

    def to(self, method: str, path: str) -> list[Seen]:
        with self.lock:
            return [r for r in self.requests if r.method == method and r.path.split("?")[0] == V2 + path]


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    server = Gateway()
    server.thread.start()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()


def batch_responder(answer: Responder) -> Responder:
    """A ``$batch`` endpoint as SAP Gateway answers it: each change set's request run through ``answer``, the
    answers written back as ``multipart/mixed`` with CRLF line ends and a change set boundary per set."""
    import email.parser
    import email.policy

    def respond(seen: Seen) -> Reply:
        head = f"Content-Type: {seen.headers['content-type']}\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(head + seen.body)
        out = []
        for n, part in enumerate(message.get_payload()):
            out.append("--batchresponse_1\r\n")
            inner = part.get_payload() if part.is_multipart() else [part]
            if part.is_multipart():
                out.append(f"Content-Type: multipart/mixed; boundary=changesetresponse_{n}\r\n\r\n")
            for request in inner:
                raw = request.get_payload(decode=True)
                lines, _, body = raw.partition(b"\r\n\r\n")
                method, path, _ = lines.decode().split("\r\n")[0].split(" ", 2)
                reply = answer(Seen(method, f"{V2}/API_SALES_ORDER_SRV/{path}", {}, body.strip()))
                payload = json.dumps(reply.json) if reply.json is not None else reply.body.decode()
                if part.is_multipart():
                    out.append(f"--changesetresponse_{n}\r\n")
                out.append("Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
                           f"HTTP/1.1 {reply.status} Whatever\r\nContent-Type: application/json\r\n"
                           f"Content-Length: {len(payload)}\r\ndataserviceversion: 2.0\r\n\r\n{payload}\r\n")
            if part.is_multipart():
                out.append(f"--changesetresponse_{n}--\r\n")
        out.append("--batchresponse_1--\r\n")
        return Reply(202, body="".join(out).encode(),
                     headers={"Content-Type": "multipart/mixed; boundary=batchresponse_1"})

    return respond


def sample(name: str) -> Any:
    return json.loads((SAMPLES / name).read_text())
