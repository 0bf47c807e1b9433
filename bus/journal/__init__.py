"""The durable journal (SQLAlchemy Core on SQLite or PostgreSQL): events, deliveries, attempts, dead
letters, per-key sequences, cross references, poll watermarks, the outbox, trigger leases and the shared
protection state (every table: docs/architecture.md, "Storage")."""

from __future__ import annotations

from bus.journal.journal import DEFAULT_URL, Journal
from bus.journal.records import (
    AttemptRow,
    DeadLetter,
    DeadLetterRow,
    DeliveryRow,
    DeliveryUpdate,
    XrefRow,
    idempotency_key,
)
from bus.journal.xref import DurableXref

__all__ = [
    "DEFAULT_URL",
    "AttemptRow",
    "DeadLetter",
    "DeadLetterRow",
    "DeliveryRow",
    "DeliveryUpdate",
    "DurableXref",
    "Journal",
    "XrefRow",
    "idempotency_key",
]
