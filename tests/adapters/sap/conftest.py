"""Real peers for the SAP adapter's tests.

* :class:`CapPeer` — SAP's CAP runtime (``@sap/cds`` + the OData V2 adapter) serving ``tests/sap_cap``: a model
  shaped like the published APIs, in front of it the Gateway's Basic/OAuth logon and CSRF protocol
  (``tests/sap_cap/server.js``). Started once per session on a free port; installed by ``scripts/deps/cds.sh``.
* :class:`Gateway` — a threaded HTTP server on 127.0.0.1 answering with SAP's documented payloads
  (``tests/fixtures/samples/sap``) for what CAP does not do as SAP does: absolute ``__next`` links with
  ``$skiptoken``, SAP error bodies with message classes, lock errors.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.services import skip_or_fail

ROOT = Path(__file__).resolve().parents[3]
CAP_DIR = ROOT / "tests" / "sap_cap"
SAMPLES = ROOT / "tests" / "fixtures" / "samples" / "sap"
USER, PASSWORD = "IRONBUS_COMM", "secret"
CLIENT_ID, CLIENT_SECRET = "sb-ironbus", "client-secret"
V2 = "/sap/opu/odata/sap"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class CapPeer:
    def __init__(self, url: str, process: subprocess.Popen[bytes]) -> None:
        self.url = url
        self.process = process
        self.v4 = httpx.Client(base_url=f"{url}/odata/v4", timeout=10)

    def settings(self, **extra: Any) -> dict[str, Any]:
        return {"url": self.url, "auth": {"type": "basic", "username": USER, "password": PASSWORD}, **extra}

    def seed(self, service: str, entity_set: str, row: dict[str, Any]) -> dict[str, Any]:
        """Create a row through the V4 side (no CSRF there), as SAP users would in the Fiori apps."""
        response = self.v4.post(f"/{service}/{entity_set}", json=row)
        assert response.status_code == 201, response.text
        return dict(response.json())

    def change(self, service: str, path: str, fields: dict[str, Any]) -> dict[str, Any]:
        response = self.v4.patch(f"/{service}/{path}", json=fields, headers={"If-Match": "*"})
        assert response.status_code == 200, response.text
        return dict(response.json())

    def rows(self, service: str, entity_set: str, query: str = "") -> list[dict[str, Any]]:
        response = self.v4.get(f"/{service}/{entity_set}{query}")
        assert response.status_code == 200, response.text
        return list(response.json()["value"])

    def expire_sessions(self) -> dict[str, int]:
        return dict(httpx.post(f"{self.url}/peer/expire-sessions").json())

    def stats(self) -> dict[str, int]:
        return dict(httpx.get(f"{self.url}/peer/stats").json())


@pytest.fixture(scope="session")
def cap() -> Iterator[CapPeer]:
    serve = CAP_DIR / "node_modules" / ".bin" / "cds-serve"
    if shutil.which("node") is None or not serve.exists():
        skip_or_fail("SAP CAP peer not installed (run scripts/deps/cds.sh: Node.js >= 20 and npm ci in tests/sap_cap)")
    port = _free_port()
    env = {**os.environ, "PORT": str(port), "NODE_ENV": "test", "CDS_FEATURES_INFO": "false"}
    process = subprocess.Popen([str(serve)], cwd=CAP_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/peer/stats", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            output = process.stdout.read().decode(errors="replace")[-2000:] if process.stdout else ""
            process.kill()
            skip_or_fail(f"the SAP CAP peer did not start: {output}")
        time.sleep(0.1)
    try:
        yield CapPeer(url, process)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


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
