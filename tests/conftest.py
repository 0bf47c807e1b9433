"""Shared fixtures: service availability checks.

Tests that need a server skip with a reason when it is absent; with ``IRONBUS_REQUIRE_SERVICES=1`` (set by
``.ci/run``) such a skip becomes a failure, so CI cannot pass by skipping.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

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
    reason = f"{name} is not reachable at {host}:{port}"
    if os.environ.get("IRONBUS_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason}, and IRONBUS_REQUIRE_SERVICES=1 forbids skipping (see ../shared/SERVICES.md)")
    pytest.skip(reason)


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
