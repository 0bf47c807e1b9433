"""The journal-backed :class:`adapters.base.AdapterStore`: small durable state per system, shared by processes.

A counter is taken inside one write transaction that locks its row (``SELECT … FOR UPDATE`` on PostgreSQL;
SQLite's write transaction is exclusive), so two processes of one bus never issue the same EDI control number.
"""

from __future__ import annotations

import json
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bus.journal import tables
from bus.journal.engine import read, write
from bus.journal.sql import insert_for

__all__ = ["JournalAdapterStore", "pending_items"]

_T = tables.adapter_state


class JournalAdapterStore:
    """State of one system's adapter in the journal's ``ib_adapter_state`` table."""

    def __init__(self, engine: Engine, system: str) -> None:
        self._engine = engine
        self.system = system

    def next_number(self, name: str, *, start: int = 1, wrap: int | None = None) -> int:
        now = time.time()
        with write(self._engine) as conn:
            created = conn.execute(insert_for(conn, _T).on_conflict_do_nothing(
                index_elements=[_T.c.system, _T.c.name]),
                {"system": self.system, "name": name, "value": str(start), "updated_at": now}).rowcount
            if created:
                return start
            where = sa.and_(_T.c.system == self.system, _T.c.name == name)
            current = int(conn.execute(sa.select(_T.c.value).where(where).with_for_update()).scalar_one())
            number = current + 1
            if wrap is not None and number > wrap:
                number = start
            conn.execute(_T.update().where(where).values(value=str(number), updated_at=now))
            return number

    def get(self, name: str) -> str | None:
        with read(self._engine) as conn:
            value: str | None = conn.execute(sa.select(_T.c.value).where(
                _T.c.system == self.system, _T.c.name == name)).scalar()
            return value

    def put_once(self, name: str, value: str) -> str:
        """Store ``value`` unless ``name`` has one already; the stored value either way (one for every process,
        whichever wrote first)."""
        with write(self._engine) as conn:
            conn.execute(insert_for(conn, _T).on_conflict_do_nothing(index_elements=[_T.c.system, _T.c.name]),
                         {"system": self.system, "name": name, "value": value, "updated_at": time.time()})
            stored: str = conn.execute(sa.select(_T.c.value).where(
                _T.c.system == self.system, _T.c.name == name)).scalar_one()
        return stored

    def put(self, name: str, value: str | None) -> None:
        with write(self._engine) as conn:
            if value is None:
                conn.execute(_T.delete().where(_T.c.system == self.system, _T.c.name == name))
                return
            stmt = insert_for(conn, _T)
            conn.execute(stmt.on_conflict_do_update(index_elements=[_T.c.system, _T.c.name],
                                                    set_={"value": stmt.excluded.value,
                                                          "updated_at": stmt.excluded.updated_at}),
                         {"system": self.system, "name": name, "value": value, "updated_at": time.time()})

    def items(self, prefix: str = "") -> list[tuple[str, str]]:
        with read(self._engine) as conn:
            rows = conn.execute(sa.select(_T.c.name, _T.c.value).where(
                _T.c.system == self.system, _T.c.name.startswith(prefix, autoescape=True)).order_by(_T.c.name))
            return [(r.name, r.value) for r in rows]


def pending_items(engine: Engine, prefix: str = "awaiting:") -> list[dict[str, Any]]:
    """Every system's adapter-state entries under ``prefix`` — by convention, work an adapter sent and still waits
    on (an EDI interchange without its acknowledgement) — for ``ironbus status``. The core reads no more of them
    than a JSON value's ``detail`` and ``overdue``, so any adapter can report this way."""
    with read(engine) as conn:
        rows = conn.execute(sa.select(_T.c.system, _T.c.name, _T.c.value, _T.c.updated_at).where(
            _T.c.name.startswith(prefix, autoescape=True)).order_by(_T.c.system, _T.c.name)).all()
    out = []
    now = time.time()
    for row in rows:
        try:
            value = json.loads(row.value)
        except ValueError:
            value = None
        doc = value if isinstance(value, dict) else {}
        out.append({"system": row.system, "name": row.name[len(prefix):], "age": round(now - row.updated_at),
                    "detail": str(doc.get("detail") or (row.value if not doc else ""))[:200],
                    "overdue": bool(doc.get("overdue", False))})
    return out
