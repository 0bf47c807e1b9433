"""Small SQL helpers shared by the journal's modules: dialect-specific upserts, chunked IN lists, JSON."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

__all__ = ["chunks", "dumps", "insert_for", "loads"]

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
