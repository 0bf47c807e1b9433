"""Retention: deleting what the journal no longer needs (``ironbus journal prune``)."""

from __future__ import annotations

import time

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Engine

from bus.journal import tables
from bus.journal.engine import write
from bus.journal.records import SETTLED_STATUSES

__all__ = ["PRUNE_BATCH", "prune"]

log = structlog.get_logger(__name__)

PRUNE_BATCH = 2000  # events deleted per transaction, so the database stays responsive
_E, _D, _A = tables.events, tables.deliveries, tables.attempts


def prune(engine: Engine, older_than_days: float) -> dict[str, int]:
    """Delete what is older than ``older_than_days`` and needs no more work: settled events (every
    delivery delivered/stale/filtered/shadow, or none at all) with their deliveries and attempts,
    dead letters already retried or purged, and poll dedup keys. Never an event with an unsettled
    delivery or a dead letter still ``dead``. Works in batches so the database stays responsive."""
    cutoff = time.time() - older_than_days * 86400.0
    unsettled = sa.select(_D.c.event_id).where(_D.c.event_id == _E.c.id,
                                               _D.c.status.not_in(sorted(SETTLED_STATUSES)))
    dead = sa.select(tables.dead_letters.c.event_id).where(tables.dead_letters.c.event_id == _E.c.id,
                                                           tables.dead_letters.c.state == "dead")
    candidates = (sa.select(_E.c.id).where(_E.c.received_at < cutoff, ~unsettled.exists(), ~dead.exists())
                  .limit(PRUNE_BATCH))
    counts = {"events": 0, "deliveries": 0, "attempts": 0, "dead_letters": 0, "seen": 0}
    while True:
        with write(engine) as conn:
            ids = list(conn.execute(candidates).scalars())
            if not ids:
                break
            counts["attempts"] += conn.execute(_A.delete().where(_A.c.event_id.in_(ids))).rowcount
            # and the delivering attempts kept on the delivery rows (Journal.settle), which go with them
            counts["attempts"] += conn.execute(sa.select(sa.func.count()).select_from(_D).where(
                _D.c.event_id.in_(ids), _D.c.started_at.is_not(None))).scalar() or 0
            counts["deliveries"] += conn.execute(_D.delete().where(_D.c.event_id.in_(ids))).rowcount
            counts["events"] += conn.execute(_E.delete().where(_E.c.id.in_(ids))).rowcount
    with write(engine) as conn:
        dl = tables.dead_letters
        counts["dead_letters"] = conn.execute(dl.delete().where(dl.c.state != "dead",
                                                                dl.c.created_at < cutoff)).rowcount
        counts["seen"] = conn.execute(tables.seen.delete().where(tables.seen.c.seen_at < cutoff)).rowcount
    log.info("journal.pruned", older_than_days=older_than_days, **counts)
    return counts
