"""``ib_system_state``: each running process's snapshot of its protections, for ``ironbus status``."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson
import sqlalchemy as sa

from bus.journal import tables
from bus.journal.engine import read, write
from bus.journal.sql import insert_for

__all__ = ["ProcessStates"]

_T = tables.system_state


class ProcessStates:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def publish(self, process: str, snapshot: Mapping[str, Mapping[str, Any]]) -> None:
        """Store ``process``'s snapshot of every system that has a rate limit or a circuit breaker."""
        rows = [{"process": process, "system": system, "state": orjson.dumps(state).decode(),
                 "updated_at": time.time()}
                for system, state in snapshot.items() if state.get("rate_limit") or state.get("circuit")]
        if not rows:
            return
        with write(self.engine) as conn:
            stmt = insert_for(conn, _T)
            conn.execute(stmt.on_conflict_do_update(
                index_elements=[_T.c.process, _T.c.system],
                set_={"state": stmt.excluded.state, "updated_at": stmt.excluded.updated_at}), rows)

    def publish_row(self, process: str, system: str, state: Mapping[str, Any]) -> None:
        """Store one row of ``process`` as it is (the bus's own progress row, ``system`` ``(bus)``)."""
        with write(self.engine) as conn:
            stmt = insert_for(conn, _T)
            conn.execute(stmt.on_conflict_do_update(
                index_elements=[_T.c.process, _T.c.system],
                set_={"state": stmt.excluded.state, "updated_at": stmt.excluded.updated_at}),
                [{"process": process, "system": system, "state": orjson.dumps(dict(state)).decode(),
                  "updated_at": time.time()}])

    def fresh(self, max_age: float) -> list[dict[str, Any]]:
        """Snapshots written in the last ``max_age`` seconds: ``[{process, system, age, rate_limit, circuit}]``."""
        now = time.time()
        with read(self.engine) as conn:
            rows = conn.execute(sa.select(_T).where(_T.c.updated_at >= now - max_age)
                                .order_by(_T.c.system, _T.c.process)).all()
        return [{"process": r.process, "system": r.system, "age": round(now - r.updated_at, 1),
                 **orjson.loads(r.state)} for r in rows]
