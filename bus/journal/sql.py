"""Small SQL helpers shared by the journal's modules: dialect-specific upserts, chunked IN lists, JSON."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

__all__ = ["ListSelect", "ManyRows", "chunks", "dumps", "insert_for", "loads"]

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


InFilter = Callable[[str, "sa.ColumnElement[Any]"], "sa.ColumnElement[bool]"]


class ListSelect:
    """A SELECT filtered by ``column IN (list)`` conditions, compiled once and run through the driver.

    SQLAlchemy renders an expanding ``IN`` anew on every call, which cost the worker more than the database
    did on its per-batch lookups. Here PostgreSQL binds each list as one array (``column = ANY(%(name)s)``:
    one statement text whatever the lengths, so the server can keep it prepared); SQLite gets one compiled
    statement per combination of list lengths. ``build`` makes the statement, calling ``in_(name, column)``
    for each list filter; :meth:`execute` takes the lists by those names.
    """

    def __init__(self, build: Callable[[InFilter], sa.Select[Any]]) -> None:
        self._build = build
        self._compiled: dict[tuple[Any, ...], tuple[str, tuple[str, ...] | None, dict[str, Any]]] = {}

    def _for(self, conn: Connection, lengths: tuple[int, ...], names: tuple[str, ...]
             ) -> tuple[str, tuple[str, ...] | None, dict[str, Any]]:
        postgres = conn.dialect.name == "postgresql"
        cache_key = (conn.dialect.name,) if postgres else (conn.dialect.name, names, lengths)
        found = self._compiled.get(cache_key)
        if found is not None:
            return found
        size = dict(zip(names, lengths, strict=True))

        def in_(name: str, column: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
            if postgres:
                return column == sa.any_(sa.bindparam(name, type_=postgresql.ARRAY(column.type)))
            return column.in_([sa.bindparam(f"{name}__{i}") for i in range(size[name])])

        compiled = self._build(in_).compile(dialect=conn.dialect)
        order = tuple(compiled.positiontup) if compiled.positiontup else None
        lists = set(names)
        constants = {k: v for k, v in compiled.params.items() if k not in lists and "__" not in k}
        found = self._compiled[cache_key] = (compiled.string, order, constants)
        return found

    def execute(self, conn: Connection, **lists: Sequence[Any]) -> sa.CursorResult[Any]:
        names = tuple(sorted(lists))
        sql, order, constants = self._for(conn, tuple(len(lists[n]) for n in names), names)
        if order is None:  # named (PostgreSQL): the lists go as arrays
            return conn.exec_driver_sql(sql, {**constants, **{n: list(v) for n, v in lists.items()}})
        values = dict(constants)
        for name in names:
            values.update((f"{name}__{i}", v) for i, v in enumerate(lists[name]))
        return conn.exec_driver_sql(sql, tuple(values[k] for k in order))
