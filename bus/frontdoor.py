"""The front door: the one way work gets onto the bus.

Every producer — webhooks, triggers (poll, schedule), ``ironbus send``, follow-ups of deliveries, ``ironbus
replay``, ``ironbus dlq retry``/redrive and the parker — calls :meth:`FrontDoor.submit`, so keying,
journaling, enqueueing, dedup and counting happen here and nowhere else:

* a new :class:`~bus.envelope.Event` gets its ordering key (:meth:`bus.pipeline.Pipeline.assign_key`), is
  journaled with its origin (idempotent on its id: a re-sent event is journaled once) and queued by key;
* :class:`Pinned` work is already in the journal (a parked delivery due again, a dead letter retried, a
  replayed event): it is queued again pinned to its route and target, and not journaled a second time.

Alone, new events go through the :class:`~bus.ingest.Ingestor`'s group commit; with a
:class:`~bus.journal.unit.UnitOfWork` (a worker batch's follow-ups) they join that transaction instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bus import metrics, telemetry
from bus.envelope import Event
from bus.ingest import Ingestor
from bus.journal import Journal
from bus.journal.records import ORIGINS
from bus.journal.unit import UnitOfWork
from bus.outbox import message_for
from bus.pipeline import Pipeline
from bus.queue.base import Message, Queue

__all__ = ["PINNED_ORIGINS", "FrontDoor", "Pinned"]

#: Origins of work re-queued from the journal (counted, not journaled again).
PINNED_ORIGINS = frozenset({"parked", "redrive", "replay", "repair"})


@dataclass(frozen=True)
class Pinned:
    """Journaled work queued again for one route (and target): ``body`` is the message body as journaled
    (an encoded event, or a dead letter's body), ``key`` its ordering key."""

    body: bytes
    key: str | None
    route: str | None
    target: str | None = None
    parks: int = 0
    headers: Mapping[str, str] = field(default_factory=dict)

    def message(self) -> Message:
        return Message(body=self.body, key=self.key, route=self.route, target=self.target, parks=self.parks,
                       headers=dict(self.headers))


class FrontDoor:
    """Puts events on the bus. Thread-safe; one per process (``close()`` it at the end)."""

    def __init__(self, journal: Journal, queue: Queue, pipeline: Pipeline | None = None) -> None:
        self.journal = journal
        self.queue = queue
        self.pipeline = pipeline
        self.ingestor = Ingestor(journal, queue)  # the group commit of new events

    def keyed(self, events: Sequence[Event]) -> list[Event]:
        """The events with their ordering keys (a route's ``key``, read from its mapped data)."""
        if self.pipeline is None:
            return list(events)
        return [e if e.key is not None else self.pipeline.assign_key(e) for e in events]

    def submit(self, work: Sequence[Event] | Sequence[Pinned], origin: str, *,
               unit: UnitOfWork | None = None) -> list[Event]:
        """Put ``work`` on the bus; returns once it is durable (or, with ``unit``, once it is part of that
        unit's transaction). Returns the events as queued (keyed); none for pinned work."""
        if not work:
            return []
        events = [w for w in work if isinstance(w, Event)]
        pinned = [w for w in work if isinstance(w, Pinned)]
        if events:
            if origin not in ORIGINS:
                raise ValueError(f"event origin {origin!r} is not one of {sorted(ORIGINS)}")
            events = self.keyed(events)
            if unit is not None:
                pairs = [(e, origin) for e in events]
                spans: list[Any] = []
                if telemetry.enabled:  # the ingest span of events joining a batch's unit of work (follow-ups)
                    pairs, spans = telemetry.begin_ingest(pairs)
                    events = [e for e, _ in pairs]
                    unit.after_commit(lambda: telemetry.end_ingest(spans))
                self.journal.record_events(pairs, unit=unit)
                self.queue.publish_within(unit, [message_for(e) for e in events])
            else:
                self.ingestor.ingest([(e, origin) for e in events])
        if pinned:
            if origin not in PINNED_ORIGINS:
                raise ValueError(f"origin {origin!r} of re-queued work is not one of {sorted(PINNED_ORIGINS)}")
            messages = [p.message() for p in pinned]
            if unit is not None:
                self.queue.publish_within(unit, messages)
            else:
                self.queue.publish(messages)
        metrics.submitted(origin, len(work))
        return events

    async def submit_async(self, events: Sequence[Event], origin: str) -> list[Event]:
        """:meth:`submit` for new events on an event loop (the webhook server): awaits the group commit
        without blocking the loop; keying (which may run a mapping and read cross references) runs in a thread
        unless every event has its key already."""
        if not events:
            return []
        if origin not in ORIGINS:
            raise ValueError(f"event origin {origin!r} is not one of {sorted(ORIGINS)}")
        keyed = list(events)
        if self.pipeline is not None and any(e.key is None for e in events):
            keyed = await asyncio.to_thread(self.keyed, events)
        await self.ingestor.ingest_async([(e, origin) for e in keyed])
        metrics.submitted(origin, len(keyed))
        return keyed

    def close(self) -> None:
        """Commit what was submitted and stop the group commit's thread."""
        self.ingestor.close()
