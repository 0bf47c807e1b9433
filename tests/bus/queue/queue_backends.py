"""The backends the queue tests run over (imported by conftest.py and the tests)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from bus.journal import Journal
from bus.queue.amqp import AmqpQueue
from bus.queue.embedded import EmbeddedQueue


@dataclass
class Backend:
    """Opens queues on one backend; every queue opened is closed (and its topology removed) at teardown."""

    kind: str  # 'sqlite' | 'postgresql' | 'rabbitmq'
    url: str  # journal URL (embedded) or broker URL (rabbitmq)
    name: str = field(default_factory=lambda: f"ibtest-{uuid.uuid4().hex[:10]}")
    opened: list[Any] = field(default_factory=list)
    journals: list[Journal] = field(default_factory=list)

    def open(self, lease_seconds: float = 30.0) -> Any:
        if self.kind == "rabbitmq":
            q: Any = AmqpQueue(self.url, name=self.name, partitions=4, prefetch=32)
        else:
            journal = Journal(self.url)
            self.journals.append(journal)
            q = EmbeddedQueue(journal.engine, lease_seconds=lease_seconds, max_poll_interval=0.05)
        self.opened.append(q)
        return q

    def child_args(self) -> list[str]:
        """Command-line arguments telling tests/bus/queue/crash_consumer.py where the queue is."""
        return ["--amqp", self.url, "--name", self.name] if self.kind == "rabbitmq" else ["--journal", self.url]

    def teardown(self) -> None:
        for q in self.opened:
            q.close()
        if self.kind == "rabbitmq":
            AmqpQueue(self.url, name=self.name, partitions=4).delete_topology()
        for journal in self.journals:
            journal.close()
