"""``timing: {schedule: <cron>}`` on a route that consumes events: deliveries wait for the schedule's window.

On a route from a poll or schedule trigger the schedule says when the trigger polls (bus/triggers.py). On any
other route - an event type, a webhook trigger - it says when deliveries may go out: during the minutes the
cron expression matches (``0 2 * * *``: from 02:00:00 to 02:00:59, UTC like every schedule of the bus). A
delivery that comes outside them is *parked* without an attempt (it does not count against ``max_parks``)
until the next matching minute, when the parker puts it back on the bus and it is delivered, in arrival order
with the others held for that window. One still undelivered when its minute has passed (a slow or failing
target) waits for the next window. ``ironbus status`` and ``trace`` show held deliveries as parked, with the
time they are due and why.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import ClassVar

from croniter import croniter

from adapters.base import Adapter
from bus import metrics
from bus.config import Config
from bus.journal.records import DeliveryUpdate
from bus.settle import Batch
from bus.steps import Due

__all__ = ["Scheduled", "scheduled_routes"]


def scheduled_routes(config: Config, adapters: Mapping[str, Adapter]) -> dict[str, str]:
    """Route name -> cron of the routes whose schedule holds deliveries (not those polling a trigger)."""
    out: dict[str, str] = {}
    for route in config.routes:
        if route.schedule is None:
            continue
        system, _, trigger = route.source.partition(".")
        adapter = adapters.get(system)
        spec = type(adapter).declared_triggers(adapter.settings).get(trigger) if adapter is not None else None
        if spec is None or spec.kind not in ("poll", "schedule"):
            out[route.name] = route.schedule
    return out


class Scheduled:
    """The worker step that holds a scheduled route's deliveries until its window (see the module doc)."""

    name: ClassVar[str] = "scheduled"

    def __init__(self, schedules: Mapping[str, str], clock: Callable[[], float] | None = None) -> None:
        self.schedules = dict(schedules)  # route name -> cron
        self.clock = clock

    def decide(self, due: Due, batch: Batch) -> str | None:
        cron = self.schedules.get(due.dispatch.route.name)
        if cron is None or due.force:  # a replay asked for by hand goes now
            return None
        now = self.clock() if self.clock is not None else time.time()
        if croniter.match(cron, datetime.fromtimestamp(now, tz=UTC)):
            return None  # the window is open
        opens = float(croniter(cron, datetime.fromtimestamp(now, tz=UTC)).get_next(float))
        when = datetime.fromtimestamp(opens, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        batch.updates.append(DeliveryUpdate(**due.base, status="parked", payload=due.dispatch.payload, attempt=0,
                                            attempt_status="skipped", error_kind="transient", next_attempt_at=opens,
                                            error=f"held until the route's schedule {cron!r} opens at {when}"))
        metrics.delivery(due.dispatch.route.name, due.dispatch.target.config.name, "parked")
        return "parked"
