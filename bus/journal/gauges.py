"""The gauges behind the console's Routes, Systems and Queue views, for Prometheus: refreshed by the running
bus from its journal, its queue and its protections (``ironbus run`` calls :func:`refresh` every 2 s; the
journal queries run at most every ``every`` seconds, as they group whole tables)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from bus import metrics
from bus.journal import Journal, tables
from bus.journal.engine import read

__all__ = ["refresh"]

_last: dict[int, float] = {}


def refresh(journal: Journal, queue: Any, snapshot: Mapping[str, Mapping[str, Any]], every: float = 15.0) -> None:
    for system, state in snapshot.items():
        limit, circuit = state.get("rate_limit") or {}, state.get("circuit") or {}
        metrics.protection(system, limit.get("tokens"), circuit.get("trips"))
    now = time.monotonic()
    if now - _last.get(id(journal), 0.0) < every:
        return
    _last[id(journal)] = now
    from bus.journal.consoledata import parked_counts, queue_figures, watermarks

    dl = tables.dead_letters
    with read(journal.engine) as conn:
        dead = {route or "*": int(n) for route, n in conn.execute(
            sa.select(dl.c.route, sa.func.count()).where(dl.c.state == "dead").group_by(dl.c.route))}
    figures = queue_figures(journal)
    partitions = {lane["lane"]: lane["depth"] for lane in figures["lanes"]}
    by_partition = getattr(queue, "partition_depths", None)
    if callable(by_partition):
        partitions.update(by_partition())
    lag = {(w["system"], w["trigger"]): w["lag"] for w in watermarks(journal)}
    metrics.operational(parked=parked_counts(journal), dead=dead, oldest=figures["oldest_age"],
                        partitions=partitions, lag=lag)
