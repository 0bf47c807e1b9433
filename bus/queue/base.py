"""The queue contract the worker consumes from.

A :class:`Message` is one unit of work: an encoded event, optionally pinned to one route and one target
(a parked or re-driven delivery), with the business ``key`` it must be ordered by. ``consume`` hands out
:class:`Lease`\\ s; the worker settles every lease exactly once with ``ack()`` (done: delete it) or
``release(delay)`` (hand it back, visible again after ``delay`` seconds). A lease that is never settled —
the worker was killed — becomes visible again when it expires: at-least-once, nothing lost.

Ordering: while a message with key K is leased, no other message with key K is handed out, and messages with
one key are handed out in the order they were published. Unrelated keys run in parallel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from bus.journal.unit import UnitOfWork

__all__ = ["Lease", "Message", "Queue"]


@dataclass(frozen=True)
class Message:
    body: bytes  # Event.encode()
    key: str | None = None
    route: str | None = None  # only this route (None: every route matching the event type)
    target: str | None = None  # only this target "system.operation" (None: every target of the route)
    parks: int = 0  # how often this delivery was parked already
    headers: dict[str, str] = field(default_factory=dict)


class Lease(Protocol):
    message: Message
    delivery_count: int  # 1 on first delivery; >1 after a crash or release

    def ack(self) -> None: ...

    def release(self, delay: float = 0.0, *, park: bool = False) -> None: ...


class Queue(Protocol):
    """A durable work queue shared by any number of worker threads and processes."""

    def publish(self, messages: Sequence[Message]) -> None:
        """Durably enqueue; returns only when the messages survive a crash (fsync / publisher confirm)."""

    def consume(self, max_messages: int, timeout: float) -> list[Lease]:
        """Up to ``max_messages`` leases, waiting at most ``timeout`` seconds for the first one."""

    def ack_many(self, leases: Sequence[Lease]) -> None:
        """Ack several leases of this queue in one round trip."""

    def publish_within(self, unit: UnitOfWork, messages: Sequence[Message]) -> None:
        """Publish as part of a journal unit of work (a worker batch's follow-ups). A queue in the journal's
        database writes in the unit's transaction; a broker publishes at once, before the unit commits, so a
        crash can repeat a follow-up (its fixed id collapses it) but never lose one whose delivery is kept."""

    def ack_within(self, unit: UnitOfWork, leases: Sequence[Lease]) -> None:
        """Ack as part of a journal unit of work (the worker's way to ack a batch): in the unit's transaction
        for a queue in the journal's database, else once the unit committed."""

    def depth(self) -> dict[str, int]:
        """Counts for ``ironbus status``: at least ``ready`` and ``leased`` (``-1`` where unknown)."""

    def close(self) -> None: ...
