"""One test body over every backend: embedded SQLite, embedded PostgreSQL, RabbitMQ with a PostgreSQL journal."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bus.journal import Journal
from bus.queue.open import open_queue
from tests.helpers.pg import pg_schema_url

BACKENDS = ["embedded-sqlite", "embedded-postgresql", "rabbitmq"]


@dataclass(frozen=True)
class Backend:
    name: str
    journal: str
    broker: str | None


def backend_for(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    name = request.param
    if name == "embedded-sqlite":
        yield Backend(name, f"sqlite:///{tmp_path}/var/ironbus.sqlite", None)
        return
    postgres = request.getfixturevalue("postgres_url")
    broker = None
    if name == "rabbitmq":
        amqp = request.getfixturevalue("rabbitmq_url")
        broker = f"{amqp}?name=ibt_{uuid.uuid4().hex[:10]}&partitions=4"
    for url in pg_schema_url(postgres):
        yield Backend(name, url, broker)
        if broker is not None:
            journal = Journal(url)
            queue = open_queue(broker, journal)
            delete = getattr(queue, "delete_topology", None)
            if callable(delete):
                delete()
            queue.close()
            journal.close()
