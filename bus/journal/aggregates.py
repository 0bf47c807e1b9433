"""The durable state of the routes' aggregate steps: the events gathered per (route, group key) until released.

Adding an item and taking a group each run in one write transaction, so a group is released once even with several
workers and processes (the one that deletes the rows owns the release). An item is keyed by its event id: a
redelivered event (a crash before its ack) is not gathered twice.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bus.journal import tables
from bus.journal.engine import read, write
from bus.journal.sql import insert_for

__all__ = ["AggregateStore", "GatheredItem"]

_T = tables.aggregate_items


@dataclass(frozen=True)
class GatheredItem:
    """One event gathered into a group: its id, correlation and (mapped) data."""

    event_id: str
    correlation_id: str | None
    data: Any


class AggregateStore:
    """Open aggregate groups in the journal's ``ib_aggregate_items`` table."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def add(self, route: str, key: str, item: GatheredItem, timeout: float) -> list[GatheredItem]:
        """Gather ``item`` into the group and push the group's deadline to now + ``timeout`` (a quiet period);
        returns the group as it now stands, oldest first."""
        now = time.time()
        with write(self._engine) as conn:
            conn.execute(insert_for(conn, _T).on_conflict_do_nothing(
                index_elements=[_T.c.route, _T.c.group_key, _T.c.event_id]),
                {"route": route, "group_key": key, "event_id": item.event_id, "seq": now,
                 "data": json.dumps(item.data, default=str), "correlation_id": item.correlation_id,
                 "deadline": now + timeout})
            where = sa.and_(_T.c.route == route, _T.c.group_key == key)
            conn.execute(_T.update().where(where).values(deadline=now + timeout))
            return self._group(conn, route, key)

    def take(self, route: str, key: str) -> list[GatheredItem]:
        """Remove the group and return its items (empty when another worker took it first)."""
        with write(self._engine) as conn:
            items = self._group(conn, route, key)
            conn.execute(_T.delete().where(_T.c.route == route, _T.c.group_key == key))
            return items

    def due(self, now: float | None = None) -> list[tuple[str, str]]:
        """(route, key) of the groups whose quiet period has passed."""
        now = time.time() if now is None else now
        with read(self._engine) as conn:
            rows = conn.execute(sa.select(_T.c.route, _T.c.group_key).where(_T.c.deadline <= now)
                                .group_by(_T.c.route, _T.c.group_key))
            return [(r.route, r.group_key) for r in rows]

    def pending(self) -> int:
        """How many groups are open."""
        with read(self._engine) as conn:
            n = conn.execute(sa.select(sa.func.count(sa.distinct(_T.c.route + "\0" + _T.c.group_key)))).scalar()
            return int(n or 0)

    @staticmethod
    def _group(conn: sa.Connection, route: str, key: str) -> list[GatheredItem]:
        rows = conn.execute(sa.select(_T.c.event_id, _T.c.correlation_id, _T.c.data)
                            .where(_T.c.route == route, _T.c.group_key == key).order_by(_T.c.seq, _T.c.event_id))
        return [GatheredItem(r.event_id, r.correlation_id, json.loads(r.data)) for r in rows]
