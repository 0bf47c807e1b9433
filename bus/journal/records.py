"""Plain records the journal reads and writes: what the worker tells it, and what it hands back.

They are frozen dataclasses so they can cross threads safely and be compared in tests.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from bus.secrets import mask

__all__ = [
    "ATTEMPT_STATUSES",
    "DELIVERY_STATUSES",
    "ORIGINS",
    "SETTLED_STATUSES",
    "AttemptRow",
    "DeadLetter",
    "DeadLetterRow",
    "DeliveryRow",
    "DeliveryUpdate",
    "XrefRow",
    "idempotency_key",
    "with_delivering_attempts",
]

ORIGINS = frozenset({"webhook", "poll", "send", "replay", "followup", "schedule", "repair", "redrive"})
#: ``mapped``: a route that could not map an event because master data it names was not linked yet (parked
#: under target ``*``, see bus.worker) mapped it at last and sent it on to its targets.
#: ``aggregated``: the route's aggregate step gathered the event into a group (bus.aggregate); the group is
#: delivered as one event when it completes or times out.
DELIVERY_STATUSES = frozenset({"pending", "delivered", "parked", "dead", "stale", "shadow", "filtered", "invalid",
                               "unchanged", "mapped", "aggregated"})
#: A delivery in one of these states needs no more work; an event whose deliveries are all settled may be pruned.
SETTLED_STATUSES = frozenset({"delivered", "stale", "filtered", "shadow", "unchanged", "mapped", "aggregated"})
ATTEMPT_STATUSES = frozenset({"ok", "transient", "permanent", "stale", "shadow", "skipped"})
DEAD_LETTER_STATES = frozenset({"dead", "retried", "purged"})

# The attempt-log status implied by a delivery status, when the caller does not name one.
_ATTEMPT_FOR = {
    "delivered": "ok",
    "stale": "stale",
    "unchanged": "skipped",
    "shadow": "shadow",
    "filtered": "skipped",
    "mapped": "ok",
    "aggregated": "skipped",
    "invalid": "permanent",
    "dead": "permanent",
    "parked": "transient",
    "pending": "transient",
}


def idempotency_key(event_id: str, route: str, target: str) -> str:
    """The key of one delivery (event × route × target), stable across retries, redeliveries and replays."""
    return f"{event_id}:{route}:{target}"


@dataclass(frozen=True, slots=True)
class DeliveryUpdate:
    """The outcome of one delivery attempt, as the worker reports it to :meth:`Journal.settle`.

    ``status`` is the delivery's new state (one of :data:`DELIVERY_STATUSES`); ``attempt`` its attempt number
    (1-based). ``attempt_status`` overrides the attempt-log status derived from ``status``/``error_kind``.
    ``payload`` is the mapped payload (any JSON value), kept for shadow mode, dry runs and trace.
    """

    idempotency_key: str
    event_id: str
    route: str
    target: str
    status: str
    attempt: int = 1
    error: str | None = None
    error_kind: str | None = None  # 'transient' | 'permanent' | None
    started_at: float = field(default_factory=time.time)
    duration_ms: float = 0.0
    next_attempt_at: float | None = None
    reference: str | None = None
    payload: Any = None
    attempt_status: str | None = None

    def __post_init__(self) -> None:
        if self.error:  # the attempt log and last_error are read by operators and trace: never a secret
            object.__setattr__(self, "error", mask(self.error))
        if self.status not in DELIVERY_STATUSES:
            raise ValueError(f"delivery status {self.status!r} is not one of {sorted(DELIVERY_STATUSES)}")
        if self.attempt_status is not None and self.attempt_status not in ATTEMPT_STATUSES:
            raise ValueError(f"attempt status {self.attempt_status!r} is not one of {sorted(ATTEMPT_STATUSES)}")

    @property
    def log_status(self) -> str:
        """The status written to the attempt log."""
        if self.attempt_status is not None:
            return self.attempt_status
        if self.status in ("pending", "parked", "dead") and self.error_kind in ("transient", "permanent"):
            return self.error_kind
        return _ATTEMPT_FOR[self.status]


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    """The current state of one delivery."""

    idempotency_key: str
    event_id: str
    route: str
    target: str
    status: str
    attempts: int
    parks: int
    next_attempt_at: float | None
    last_error: str | None
    reference: str | None
    payload: Any
    updated_at: float
    delivered_at: float | None
    # the attempt that delivered it (the attempt log keeps the others: see Journal.settle)
    started_at: float | None = None
    duration_ms: float | None = None
    trace_id: str | None = None
    span_ids: str | None = None

    def delivering_attempt(self) -> AttemptRow | None:
        """The successful attempt kept on this row, as a line of the attempt log (``id`` 0), if it has one."""
        if self.started_at is None:
            return None
        return AttemptRow(id=0, idempotency_key=self.idempotency_key, event_id=self.event_id, route=self.route,
                          target=self.target, attempt=self.attempts, status="ok", error=None,
                          started_at=self.started_at, duration_ms=self.duration_ms or 0.0, trace_id=self.trace_id,
                          span_ids=self.span_ids)


@dataclass(frozen=True, slots=True)
class AttemptRow:
    """One line of the attempt log: an attempt that did not deliver, or (``id`` 0) the one that did, read from
    its delivery row."""

    id: int
    idempotency_key: str
    event_id: str
    route: str
    target: str
    attempt: int
    status: str
    error: str | None
    started_at: float
    duration_ms: float
    trace_id: str | None = None  # the attempt's OpenTelemetry trace, when tracing was on
    span_ids: str | None = None  # its span ids (several: the pass's quick retries), space-separated


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that will not be delivered without an operator. ``body`` is the original bytes, even when
    they could not be decoded (then ``event_id``, ``route`` and ``target`` may be None)."""

    body: bytes
    reason: str
    event_id: str | None = None
    route: str | None = None
    target: str | None = None
    error_kind: str = "permanent"
    attempts: int = 0
    created_at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        object.__setattr__(self, "reason", mask(self.reason))


@dataclass(frozen=True, slots=True)
class DeadLetterRow:
    """A stored dead letter with its id and state ('dead' | 'retried' | 'purged')."""

    id: int
    event_id: str | None
    route: str | None
    target: str | None
    reason: str
    error_kind: str
    attempts: int
    body: bytes
    created_at: float
    state: str


@dataclass(frozen=True, slots=True)
class XrefRow:
    """One cross reference: ``system_id`` is this system's id of the canonical entity ``canonical_id``."""

    entity: str
    system: str
    system_id: str
    canonical_id: str
    updated_at: float = 0.0


def with_delivering_attempts(logged: Iterable[AttemptRow], deliveries: Iterable[DeliveryRow]) -> list[AttemptRow]:
    """The attempt log's rows together with the delivering attempts kept on ``deliveries``' rows, ordered by
    when each started (the log's order among equal times)."""
    merged = list(logged)
    merged.extend(a for a in (d.delivering_attempt() for d in deliveries) if a is not None)
    merged.sort(key=lambda a: a.started_at)  # stable: log rows keep their order
    return merged
