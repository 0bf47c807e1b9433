"""Secrets never appear in any encoding anywhere the bus writes (issue 12, item 5).

A real HTTP target on 127.0.0.1 echoes every request back (request line, headers, body) — refusing with a
400 (a dead letter), a 503 (retries, then parks) or accepting with a 200 whose JSON echo becomes a follow-up
event. The bus runs as ``ironbus run`` with Basic, API-key-in-query, OAuth2 client-credentials (form body)
and long Bearer credentials; then its log, ``dlq show``, ``trace --json`` and every journal table are searched
for each secret literally, URL-encoded, form-encoded, base64-encoded (alone and inside ``user:password``) and
for the first 12 characters of each (a cut through a secret).
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest

from bus.secrets import mask, register, strip_credentials

ROOT = Path(__file__).resolve().parent.parent
BASIC_USER, BASIC_PASS = "svc-integration", "Pa55+word/with=odd chars"
API_KEY = "qk+Key/With=Chars9"
CLIENT_ID, CLIENT_SECRET = "bus-client", "cs secret+plus&amp9"
ACCESS_TOKEN = "at-Token.9f8e7d6c5b4a"
BEARER = "TRUNCSECRET0123456789abcdefghijklmnopqrstuvwxyz"


class Echo:
    """Answers every request with its own text: ``/fail`` 400, ``/busy`` 503, ``/token`` an OAuth token."""

    def __init__(self) -> None:

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path == "/token":
                    self._answer(200, json.dumps({"access_token": ACCESS_TOKEN, "expires_in": 3600}).encode())
                    return
                text = f"{self.command} {self.path}\n{self.headers}\n{body.decode(errors='replace')}"
                if self.path.startswith("/fail"):
                    # the secret falls at the 300-character cut of the error excerpt
                    self._answer(400, (("x" * 270) + " " + text).encode())
                elif self.path.startswith("/busy"):
                    self._answer(503, text.encode())
                else:
                    echo_doc = {"ok": True, "headers": dict(self.headers.items()), "path": self.path,
                                "body": body.decode(errors="replace"), "echo": text}
                    self._answer(200, json.dumps(echo_doc).encode())

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json" if status == 200 else "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def echo() -> Iterator[Echo]:
    server = Echo()
    yield server
    server.server.shutdown()
    server.server.server_close()


def forms(secret: str) -> set[str]:
    out = {secret, quote(secret, safe=""), quote_plus(secret), quote(secret), secret[:12]}
    out.add(base64.b64encode(secret.encode()).decode()[:-4])
    return {f for f in out if len(f) >= 6}


FORBIDDEN = set().union(forms(BASIC_PASS), forms(API_KEY), forms(CLIENT_SECRET), forms(ACCESS_TOKEN),
                        forms(BEARER), {base64.b64encode(f"{BASIC_USER}:{BASIC_PASS}".encode()).decode()[:-4]})


def cli(*argv: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "import sys, cli; sys.exit(cli.main())", *argv], cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env}, capture_output=True, text=True,
                          timeout=120, check=False)


def test_echoed_secrets_are_masked_everywhere(tmp_path: Path, echo: Echo) -> None:
    (tmp_path / "routes.yaml").write_text(textwrap.dedent(f"""\
        systems:
          crm: {{adapter: stub}}
          basic:
            adapter: http
            settings:
              base_url: {echo.url}
              auth: {{type: basic, username: {BASIC_USER}, password: "{BASIC_PASS}"}}
              operations: {{fail: {{method: POST, path: /fail}}, busy: {{method: POST, path: /busy}},
                           ok: {{method: POST, path: /ok}}}}
          keyed:
            adapter: http
            settings:
              base_url: {echo.url}
              auth: {{type: api_key, name: api_key, value: "${{ECHO_API_KEY}}", in: query}}
              operations: {{fail: {{method: POST, path: /fail}}, ok: {{method: POST, path: /ok}}}}
          oauth:
            adapter: http
            settings:
              base_url: {echo.url}
              auth: {{type: oauth2_client_credentials, token_url: "{echo.url}/token", client_id: {CLIENT_ID},
                     client_secret: "{CLIENT_SECRET}"}}
              operations: {{fail: {{method: POST, path: /fail, body: "{{form: '{CLIENT_SECRET}'}}"}},
                           ok: {{method: POST, path: /ok}}}}
          bearer:
            adapter: http
            settings:
              base_url: {echo.url}
              auth: {{type: bearer, token: "{BEARER}"}}
              operations: {{fail: {{method: POST, path: /fail}}}}
        routes:
          - name: out
            from: crm.order_changed
            to:
              - basic.fail
              - basic.busy
              - {{operation: basic.ok, emit: echo.basic}}
              - keyed.fail
              - {{operation: keyed.ok, emit: echo.keyed}}
              - oauth.fail
              - {{operation: oauth.ok, emit: echo.oauth}}
              - bearer.fail
            retry: {{attempts: 2, initial_delay: 0.01, max_delay: 0.02, park: 0.05, max_parks: 1}}
        """))
    (tmp_path / "event.json").write_text('{"number": "SO-7"}')
    env = {"ECHO_API_KEY": API_KEY}
    journal = f"sqlite:///{tmp_path}/j.sqlite"
    sent = cli("send", "crm.order_changed", "event.json", "--key", "SO-7", "--journal", journal, cwd=tmp_path,
               env=env)
    assert sent.returncode == 0, sent.stderr
    run = cli("run", "--until-idle", "--max-seconds", "60", "--no-http", "--journal", journal, "--log-level",
              "info", cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    dlq = cli("dlq", "list", "--json", "--journal", journal, cwd=tmp_path, env=env)
    letters = json.loads(dlq.stdout)
    assert len(letters) >= 5, dlq.stdout  # four refusals and the parked-out 503
    shows = [cli("dlq", "show", str(letter["id"]), "--journal", journal, cwd=tmp_path, env=env).stdout
             for letter in letters]
    trace = cli("trace", "--key", "SO-7", "--json", "--all", "--journal", journal, cwd=tmp_path, env=env)
    assert trace.returncode == 0, trace.stderr
    with sqlite3.connect(tmp_path / "j.sqlite") as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        dump = "\n".join(repr(row) + (row_text(row)) for t in tables for row in db.execute(f"SELECT * FROM {t}"))
    # the echo really carried every credential back: the bus saw them and masked them
    assert "***" in dump and "Authorization" in dump + run.stderr
    assert any("api_key=***" in s for s in [dump, run.stderr])
    everything = {"log": run.stderr, "dlq": dlq.stdout + "".join(shows), "trace": trace.stdout, "journal": dump}
    leaks = [(where, form) for where, text in everything.items() for form in FORBIDDEN if form in text]
    assert leaks == []


def row_text(row: tuple[Any, ...]) -> str:
    return "".join(v.decode(errors="replace") if isinstance(v, bytes) else "" for v in row)


@pytest.mark.parametrize("secret", [BASIC_PASS, API_KEY, CLIENT_SECRET, BEARER])
def test_mask_every_encoding(secret: str) -> None:
    register(secret)
    for form in {secret, quote(secret, safe=""), quote_plus(secret), quote(secret).lower()}:
        assert secret[:8] not in mask(f"before {form} after"), form
    for prefix in ("", "a", "ab", "user:"):  # base64 at each alignment, alone and inside Basic credentials
        encoded = base64.b64encode(f"{prefix}{secret}".encode()).decode()
        masked = mask(f"Basic-ish {encoded} end")
        assert encoded not in masked and "***" in masked


def test_credential_fields_are_masked_and_dropped_from_stored_answers() -> None:
    text = 'GET /x?access_token=never-registered-1&x=1\nAuthorization: Bearer abc.def\n{"refresh_token": "r-tok"}'
    masked = mask(text)
    assert "never-registered-1" not in masked and "abc.def" not in masked and "r-tok" not in masked
    assert "x=1" in masked
    doc = {"headers": {"Authorization": "Basic eA==", "X-Api-Key": "k", "Accept": "*/*"}, "id": 3,
           "items": [{"client_secret": "s", "name": "n"}]}
    assert strip_credentials(doc) == {"headers": {"Accept": "*/*"}, "id": 3, "items": [{"name": "n"}]}
