"""``ironbus xref check --repair``: push the owner's values over drift, through the same sync routes.

A drifted or missing record is repaired the way a change in its owner would have been: the owner's record is read
through the sync route's own trigger, mapped by that route, and published pinned to it with ``force`` (so the
route's ``skip_unchanged`` does not drop it: the owner did not change, the other system did). Each repair is an
event in the journal (origin ``repair``), so ``ironbus trace`` shows it like any other change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from adapters.base import Adapter
from bus.config import Config, RouteConfig
from bus.envelope import Event
from bus.frontdoor import FrontDoor, Pinned
from bus.journal import Journal
from bus.pipeline import Pipeline

__all__ = ["Repair", "apply_repairs", "plan_repairs", "sync_route"]


@dataclass(frozen=True)
class Repair:
    """One owner record to push again: which entity, canonical id, route, and why."""

    entity: str
    canonical_id: str
    route: str
    event: Event
    targets: tuple[str, ...]
    reasons: tuple[str, ...] = field(default_factory=tuple)


def sync_route(config: Config, entity: str) -> RouteConfig | None:
    """The route that carries ``entity`` from its owner to the others (``link: <entity>``, from the owner)."""
    ownership = config.master_data.get(entity)
    for route in config.routes:
        if route.link == entity and (ownership is None or route.source.split(".", 1)[0] == ownership.owner):
            return route
    return None


def plan_repairs(config: Config, adapters: Mapping[str, Adapter], problems: Sequence[Mapping[str, Any]],
                 pipeline: Pipeline, progress: Callable[[int], None] | None = None) -> tuple[list[Repair], list[str]]:
    """The repairs that fix ``problems`` (``drift`` and ``missing`` with a canonical id), and what cannot be
    repaired this way (no sync route, an owner that does not hold the record any more)."""
    wanted: dict[str, dict[str, list[str]]] = {}
    for problem in problems:
        if problem.get("kind") in ("drift", "missing") and problem.get("canonical_id"):
            why = problem.get("detail", problem["kind"])
            wanted.setdefault(problem["entity"], {}).setdefault(str(problem["canonical_id"]), []).append(
                f"{problem.get('system')}: {why}")
    repairs: list[Repair] = []
    unrepairable: list[str] = []
    for entity, ids in sorted(wanted.items()):
        route = sync_route(config, entity)
        if route is None:
            unrepairable.append(f"{entity}: no route with 'link: {entity}' from its owner; repair by hand")
            continue
        system, _, trigger = route.source.partition(".")
        compiled = pipeline.routes[route.name]
        # The whole owner side, as the trigger's first poll would see it: the record is found by its mapped key.
        result = adapters[system].poll(trigger, None)
        found: set[str] = set()
        for _dedup, payload in result.records:
            if progress is not None:
                progress(1)
            event = Event(type=route.source, source=f"ironbus/{system}", data=payload)
            outcome = pipeline.run_route(compiled, event)
            if outcome.status != "dispatch" or outcome.event is None or outcome.event.key not in ids:
                continue
            key = outcome.event.key
            found.add(key)
            repairs.append(Repair(entity, key, route.name, event.with_(key=key),
                                  tuple(d.target_name for d in outcome.dispatches), tuple(ids[key])))
        unrepairable.extend(f"{entity} {cid}: its owner {system} holds no such record (or route {route.name!r} "
                            "filters it out); create it there or fix the link" for cid in sorted(set(ids) - found))
    return repairs, unrepairable


def apply_repairs(journal: Journal, door: FrontDoor, repairs: Sequence[Repair]) -> None:
    """Journal each repair event (origin ``repair``), then queue it through the front door pinned to its sync
    route and forced past ``skip_unchanged``; the running bus delivers it like any other change."""
    journal.record_events([(r.event, "repair") for r in repairs])
    door.submit([Pinned(r.event.encode(), r.event.key, r.route, headers={"force": "1"}) for r in repairs], "repair")
