"""Protection state per system, shared through the journal so that ``ironbus status`` can show it.

Rate limiters and circuit breakers live in the memory of each ``ironbus run`` process. Every few seconds a
process writes its snapshot of them to ``ib_system_state``; ``ironbus status`` (another process, perhaps
another host) reads the fresh rows. A process that stopped is simply no longer fresh.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from typing import Any

import orjson
import sqlalchemy as sa

from bus.journal import tables
from bus.journal.engine import read, write
from bus.journal.sql import insert_for

__all__ = ["PROCESS", "publish_state", "read_state"]

PROCESS = f"{socket.gethostname()}:{os.getpid()}"
_T = tables.system_state


def publish_state(engine: sa.Engine, snapshot: Mapping[str, Mapping[str, Any]], process: str = PROCESS) -> None:
    """Store this process's snapshot (``Protections.snapshot()``) of every protected system."""
    rows = [{"process": process, "system": system, "state": orjson.dumps(state).decode(), "updated_at": time.time()}
            for system, state in snapshot.items() if state.get("rate_limit") or state.get("circuit")]
    if not rows:
        return
    with write(engine) as conn:
        stmt = insert_for(conn, _T)
        conn.execute(stmt.on_conflict_do_update(
            index_elements=[_T.c.process, _T.c.system],
            set_={"state": stmt.excluded.state, "updated_at": stmt.excluded.updated_at}), rows)


def read_state(engine: sa.Engine, max_age: float = 30.0) -> list[dict[str, Any]]:
    """Fresh snapshots of every running process: ``[{process, system, age, rate_limit, circuit}]``."""
    now = time.time()
    with read(engine) as conn:
        rows = conn.execute(sa.select(_T).where(_T.c.updated_at >= now - max_age)
                            .order_by(_T.c.system, _T.c.process)).all()
    return [{"process": r.process, "system": r.system, "age": round(now - r.updated_at, 1), **orjson.loads(r.state)}
            for r in rows]
