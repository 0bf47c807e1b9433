"""Shared fixtures: service availability checks.

Tests that need a server skip with a reason when it is absent; with ``IRONBUS_REQUIRE_SERVICES=1`` (set by
``.ci/run``) such a skip becomes a failure, so CI cannot pass by skipping.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.services import skip_or_fail

RABBITMQ_URL = os.environ.get("IRONBUS_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672//")
POSTGRES_URL = os.environ.get("IRONBUS_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("IRONBUS_TEST_REDIS", "redis://127.0.0.1:6379/0")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip (or, under IRONBUS_REQUIRE_SERVICES=1, fail) when ``host:port`` does not answer."""
    if _reachable(host, port):
        return
    skip_or_fail(f"{name} is not reachable at {host}:{port}")


@pytest.fixture
def rabbitmq_url() -> str:
    require_service("RabbitMQ", "127.0.0.1", 5672)
    return RABBITMQ_URL


@pytest.fixture
def postgres_url() -> str:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    return POSTGRES_URL


@pytest.fixture(params=["embedded-sqlite", "embedded-postgresql", "rabbitmq"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """One test body over every bus backend (tests/helpers/backends.py); narrow it with
    ``@pytest.mark.parametrize("backend", [...], indirect=True)``."""
    from tests.helpers.backends import backend_for

    yield from backend_for(request, tmp_path)


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate and key for 127.0.0.1 (its own CA), made with the openssl command."""
    openssl = shutil.which("openssl")
    if openssl is None:
        skip_or_fail("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.fixture(autouse=True)
def _secrets_of_this_test_only() -> Iterator[None]:
    """The registry of known secrets (bus.secrets) is process-wide, as it must be in the bus; a test's settings
    must not make a later test in the same worker mask its words ("secret", "t0ken")."""
    import bus.secrets as registry

    saved, pattern = set(registry._secrets), registry._pattern
    yield
    with registry._lock:
        registry._secrets.clear()
        registry._secrets.update(saved)
        registry._pattern = pattern
