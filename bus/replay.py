"""Sending journaled work through the bus again: ``ironbus replay`` and ``ironbus dlq retry``.

Both put work back on the bus through the front door (:class:`~bus.frontdoor.FrontDoor`) as
:class:`~bus.frontdoor.Pinned` messages: a replayed event is pinned to the route asked for (all its routes
when none is), a retried dead letter to its route and target. Deliveries that already succeeded are skipped
by the worker (their idempotency keys), unless a replay is forced.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from bus.envelope import Event
from bus.errors import ConfigError
from bus.frontdoor import FrontDoor, Pinned
from bus.journal import DeadLetterRow, Journal
from bus.pipeline import Pipeline

__all__ = ["dry_run", "replay", "retry_dead_letters", "select_events"]


def select_events(journal: Journal, *, ids: Sequence[str] | None, key: str | None, route: str | None,
                  since: float | None, until: float | None) -> list[Event]:
    """The journaled events to replay, in the order they were received. Raises :class:`ConfigError` when
    nothing narrows the choice (refusing to replay everything) or an asked-for id is not in the journal."""
    if not (ids or route or key or since):
        raise ConfigError("replay needs event ids, --route, --key or --since (refusing to replay everything)")
    events = journal.events_for(event_ids=ids or None, key=key, route=route, since=since, until=until)
    if ids:
        missing = set(ids) - {e.id for e in events}
        if missing:
            raise ConfigError(f"no such event(s) in the journal: {', '.join(sorted(missing))}")
    return events


def replay(events: Sequence[Event], door: FrontDoor, journal: Journal, *, route: str | None, force: bool,
           rate: float = 0.0, advance: Callable[[], None] | None = None) -> int:
    """Queue ``events`` again (through ``route`` only, when given), at most ``rate`` per second (0: no
    limit), and journal an ``ironbus.replayed`` marker for each (caused by it: ``ironbus trace`` shows the
    replay). ``force`` repeats deliveries that already succeeded. Returns how many were replayed."""
    interval = 1.0 / rate if rate > 0 else 0.0
    next_at = time.monotonic()
    headers = {"force": "1"} if force else {}
    for event in events:
        now = time.monotonic()
        if now < next_at:
            time.sleep(next_at - now)  # the rate limit the operator asked for
        next_at = max(now, next_at) + interval
        door.submit([Pinned(event.encode(), event.key, route, headers=headers)], "replay")
        marker = event.caused("ironbus.replayed", "ironbus/cli", {"event_id": event.id, "route": route,
                                                                 "force": force})
        journal.record_events([(marker, "replay")])
        if advance is not None:
            advance()
    return len(events)


def dry_run(pipeline: Pipeline, events: Sequence[Event], route: str | None) -> list[dict[str, Any]]:
    """What a replay would do, delivering nothing: per event and route, its status and the deliveries."""
    out: list[dict[str, Any]] = []
    for event in events:
        for result in pipeline.process(event, route=route):
            entry: dict[str, Any] = {"event_id": event.id, "route": result.route.name, "status": result.status}
            if result.error is not None:
                entry["error"] = str(result.error)
            entry["deliveries"] = [{"target": d.target_name, "idempotency_key": d.idempotency_key,
                                    "payload": d.payload} for d in result.dispatches]
            out.append(entry)
    return out


def retry_dead_letters(rows: Sequence[DeadLetterRow], journal: Journal, door: FrontDoor) -> int:
    """Queue dead letters again, each pinned to its route and target with its event's key, and mark them
    ``retried``. Returns how many were marked."""
    events = {r.event_id: journal.get_event(r.event_id) for r in rows if r.event_id}
    pinned = []
    for r in rows:
        event = events.get(r.event_id) if r.event_id else None
        pinned.append(Pinned(r.body, event.key if event else None, r.route, r.target, headers={"redrive": str(r.id)}))
    door.submit(pinned, "redrive")
    return journal.mark_dead_letters([r.id for r in rows], "retried")
