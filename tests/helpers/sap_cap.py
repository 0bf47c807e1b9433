"""SAP's CAP runtime as a local OData peer for the SAP adapter and the http adapter's OData polls.

``tests/sap_cap`` holds a CDS model shaped like the published S/4HANA APIs (entity and field names from the
SAP Business Accelerator Hub specs) served as OData V2 under ``/sap/opu/odata/sap/<service>`` by
``@cap-js-community/odata-v2-adapter`` and as V4 under ``/odata/v4/<service>``; ``server.js`` adds the
Gateway's Basic/OAuth logon and CSRF protocol. ``scripts/deps/cds.sh`` installs it (Node.js >= 20). The
``cap`` fixture starts it once per session on a free port; without it the tests skip, or fail under
``IRONBUS_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.services import skip_or_fail

ROOT = Path(__file__).resolve().parents[2]
CAP_DIR = ROOT / "tests" / "sap_cap"
USER, PASSWORD = "IRONBUS_COMM", "secret"
CLIENT_ID, CLIENT_SECRET = "sb-ironbus", "client-secret"


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


