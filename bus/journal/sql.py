"""Small SQL helpers shared by the journal's modules: dialect-specific upserts, chunked IN lists, JSON."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

__all__ = ["ManyRows", "chunks", "dumps", "insert_for", "loads"]

T = TypeVar("T")

# Both SQLite (999 before 3.32) and PostgreSQL (65535) cap bound parameters; stay well below.
IN_CHUNK = 500


def insert_for(conn: Connection | str, table: sa.Table) -> Any:
    """An INSERT supporting ``on_conflict_do_*`` for the connection's dialect (or a dialect name)."""
    if (conn if isinstance(conn, str) else conn.dialect.name) == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def chunks(items: Sequence[T], size: int = IN_CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def dumps(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def loads(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


class ManyRows:
    """An INSERT (or upsert) run for many rows through the driver's ``executemany``, compiled once per dialect.

    ``conn.execute(statement, rows)`` has SQLAlchemy look up its compiled cache and build every row's
    parameters in Python: on the bus's hottest writes (ingest, queue publish, settle) that cost more than the
    database did. The statements here bind plain columns (text, numbers, bytes) that need no type conversion,
    so the rows go to the driver as they are. Every row carries every column of the statement's table but an
    autoincrement key.
    """

    def __init__(self, statement: Any) -> None:
        self.statement = statement
        table = statement.table
        self.columns = tuple(c.name for c in table.c if c is not table.autoincrement_column)
        self._compiled: dict[str, tuple[str, tuple[str, ...] | None, dict[str, Any]]] = {}

    def _for(self, conn: Connection) -> tuple[str, tuple[str, ...] | None, dict[str, Any]]:
        name = conn.dialect.name
        found = self._compiled.get(name)
        if found is None:
            compiled = self.statement.compile(dialect=conn.dialect, column_keys=list(self.columns))
            order = tuple(compiled.positiontup) if compiled.positiontup else None
            # constants inside the statement (e.g. a WHERE status != 'delivered') are binds too
            constants = {k: v for k, v in compiled.params.items() if k not in self.columns}
            found = self._compiled[name] = (compiled.string, order, constants)
        return found

    def execute(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        sql, order, constants = self._for(conn)
        if order is not None:
            params: Any = [tuple(row[k] if k in row else constants[k] for k in order) for row in rows]
        else:
            params = [{**constants, **row} for row in rows] if constants else list(rows)
        conn.exec_driver_sql(sql, params)
