"""The journal's record of a replay: one ``ironbus.replayed`` marker per published batch, not per event.

A marker per replayed event was a row in ``ib_events`` whose primary key and correlation-id index took random
keys: on a journal of millions of events each of those inserts dirtied an index page of its own, and a replay
spent more than half its time writing markers (``docs/operating.md``). A replay publishes the selected events in
the order they were received (``received_at``, then id), so one batch is a contiguous run of that order; its
marker records the run's bounds — the first and last ``received_at``, and the ids of the batch's events at
those two instants (events journaled together share one) — with the selection that chose them. An event was
replayed by a batch exactly when it falls within those bounds and matches the selection.

Every marker carries the correlation id :data:`REPLAY_CORRELATION`, so ``ironbus trace`` finds them with one
index look-up and shows each replayed event's marker under it, as before (:func:`replays_of`).

Limit: the selection is checked again when tracing, so an event that matches it only since the replay (a
``--route`` replay, and the event's first delivery on that route written afterwards) is shown as replayed too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bus.envelope import Event
from bus.journal.stream import EventSelection, JournaledEvent

__all__ = ["REPLAY_CORRELATION", "ReplayMarker", "batch_marker", "replays_of"]

#: The correlation id of every replay marker (``ironbus trace`` reads them by it).
REPLAY_CORRELATION = "ironbus.replays"
MARKER_TYPE = "ironbus.replayed"


def batch_marker(batch: Sequence[JournaledEvent], selection: EventSelection, *, run: str, route: str | None,
                 force: bool) -> Event:
    """The marker of one published batch (non-empty, in received order) of the replay ``run``."""
    first, last = batch[0].received_at, batch[-1].received_at
    edges = [e.id for e in batch if e.received_at in (first, last)]
    return Event(type=MARKER_TYPE, source="ironbus/cli", correlationid=REPLAY_CORRELATION, data={
        "run": run, "route": route, "force": force, "count": len(batch), "from": first, "to": last,
        "edges": edges, "selection": {
            "event_ids": None if selection.event_ids is None else list(selection.event_ids),
            "key": selection.key, "route": selection.route}})


@dataclass(frozen=True)
class ReplayMarker:
    """A batch marker as read back: which events it covers (:meth:`covers`)."""

    event: Event
    start: float
    end: float
    edges: frozenset[str]
    event_ids: frozenset[str] | None
    key: str | None
    route: str | None

    @classmethod
    def of(cls, event: Event) -> ReplayMarker | None:
        data: Any = event.data
        if event.type != MARKER_TYPE or not isinstance(data, dict) or "from" not in data:
            return None  # a marker of the per-event kind (older journals) hangs under its cause by itself
        sel = data.get("selection") or {}
        ids = sel.get("event_ids")
        return cls(event, float(data["from"]), float(data["to"]), frozenset(data.get("edges") or ()),
                   None if ids is None else frozenset(ids), sel.get("key"), sel.get("route"))

    def covers(self, event_id: str, received_at: float, key: str | None, routes: set[str]) -> bool:
        """Whether this batch replayed the event (``routes``: the routes the event has deliveries on)."""
        if not self.start <= received_at <= self.end:
            return False
        if received_at in (self.start, self.end) and event_id not in self.edges:
            return False
        if self.event_ids is not None and event_id not in self.event_ids:
            return False
        if self.key is not None and key != self.key:
            return False
        return self.route is None or self.route in routes


def replays_of(markers: Sequence[Event], events: Sequence[tuple[str, float, str | None, set[str]]]
               ) -> dict[str, list[Event]]:
    """For each event ``(id, received_at, key, routes with a delivery)``, the batch markers that replayed it."""
    parsed = [m for m in (ReplayMarker.of(e) for e in markers) if m is not None]
    found: dict[str, list[Event]] = {}
    for event_id, received_at, key, routes in events:
        hits = [m.event for m in parsed if m.covers(event_id, received_at, key, routes)]
        if hits:
            found[event_id] = hits
    return found
