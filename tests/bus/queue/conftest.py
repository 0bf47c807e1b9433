"""Queue fixtures: one test body over the embedded queue on SQLite and on PostgreSQL, and over RabbitMQ."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# The backend helper sits beside this file; make it importable under any pytest import mode.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from queue_backends import Backend  # noqa: E402

from tests.helpers.pg import pg_schema_url  # noqa: E402


def _pg_schema(postgres_url: str) -> Iterator[str]:
    yield from pg_schema_url(postgres_url, prefix="ibq")


def _backend(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if kind == "sqlite":
        backend = Backend(kind, f"sqlite:///{tmp_path}/ironbus.sqlite")
        yield backend
        backend.teardown()
    elif kind == "postgresql":
        for url in _pg_schema(request.getfixturevalue("postgres_url")):
            backend = Backend(kind, url)
            yield backend
            backend.teardown()
    else:
        backend = Backend(kind, request.getfixturevalue("rabbitmq_url"))
        yield backend
        backend.teardown()


@pytest.fixture(params=["sqlite", "postgresql", "rabbitmq"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    yield from _backend(request.param, request, tmp_path)


@pytest.fixture(params=["sqlite", "rabbitmq"])
def crash_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    yield from _backend(request.param, request, tmp_path)
