"""Small SQL helpers shared by the journal's modules: dialect-specific upserts, chunked IN lists, JSON, and
statements compiled once that run on the driver (:func:`run_compiled`)."""

from __future__ import annotations

import re
from collections import namedtuple
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from operator import itemgetter
from typing import Any, TypeVar

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

__all__ = ["Compiled", "InFilter", "ListSelect", "ListWrite", "ManyRows", "Prepared", "chunks", "compile_for", "dumps",
           "insert_for", "loads", "run_compiled"]

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


#: A statement compiled for one dialect: SQL text, positional parameter order (None: named), bound constants.
Compiled = tuple[str, tuple[str, ...] | None, dict[str, Any]]


def compile_for(statement: Any, dialect: Any, bound: Collection[str], **kw: Any) -> Compiled:
    """``statement`` compiled once for ``dialect``, to run through ``exec_driver_sql``. ``bound`` names the
    parameters the caller supplies; any other bind is a constant inside the statement (e.g. a WHERE
    status != 'delivered') and comes back with its value."""
    compiled = statement.compile(dialect=dialect, **kw)
    order = tuple(compiled.positiontup) if compiled.positiontup else None
    constants = {k: v for k, v in compiled.params.items() if k not in bound}
    return compiled.string, order, constants


def run_compiled(conn: Connection, sql: str, params: Any, *, many: bool = False) -> Any:
    """Run compiled SQL text inside ``conn``'s transaction on the driver; returns the DB-API cursor.

    ``exec_driver_sql`` cost about 15 µs of Python per statement around a driver call of one or two (SQLite),
    on the statements every group commit and every worker batch runs (on PostgreSQL, where the driver does more,
    about 1 % of the bus's instructions per event). The transaction is the caller's (on SQLite ``BEGIN`` is ours, see
    :mod:`bus.journal.engine`; psycopg begins one on the first statement, SQLAlchemy commits it), so nothing of
    SQLAlchemy's state is bypassed. A driver error is raised as SQLAlchemy's wrapper of it, as
    ``exec_driver_sql`` would (callers classify outages by those types), without the statement's values. A
    connection the server dropped is invalidated by the rollback that follows, so the pool does not hand it out
    again (tests/bus/journal/test_journal_driver_sql.py).
    """
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        if many:
            cursor.executemany(sql, params)
        else:
            cursor.execute(sql, params)
    except conn.dialect.loaded_dbapi.Error as exc:
        raise sa.exc.DBAPIError.instance(sql, params, exc, conn.dialect.loaded_dbapi.Error, hide_parameters=True,
                                         dialect=conn.dialect) from exc
    return cursor


def _row_getter(order: Sequence[str]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """A row dict's values in ``order``, as a tuple (``itemgetter`` of one name returns the bare value)."""
    if len(order) == 1:
        name = order[0]
        return lambda row: (row[name],)
    return itemgetter(*order)  # type: ignore[return-value]


_Getter = Callable[[dict[str, Any]], tuple[Any, ...]]
_NAMED = re.compile(r"%\((\w+)\)s")


class Prepared:
    """A statement compiled once per dialect and run on the driver, with its parameters by name: a single call
    (:meth:`execute`) or one call per parameter set (:meth:`execute_many`). The parameters must need no type
    conversion (text, numbers, bytes): they go to the driver as they are."""

    def __init__(self, statement: Any, names: Sequence[str], *, binary: bool = False, **compile_kw: Any) -> None:
        self.statement = statement
        self.names = tuple(names)
        self._binary = binary
        self._compile_kw = compile_kw
        self._compiled: dict[str, tuple[Compiled, _Getter | None]] = {}

    def _for(self, conn: Connection) -> tuple[Compiled, _Getter | None]:
        found = self._compiled.get(conn.dialect.name)
        if found is None:
            compiled = compile_for(self.statement, conn.dialect, self.names, **self._compile_kw)
            if self._binary and conn.dialect.name == "postgresql":
                # psycopg's binary format: no text escaping (its text arrays escape every quote by regex)
                compiled = (_NAMED.sub(r"%(\1)b", compiled[0]), *compiled[1:])
            order = compiled[1]
            # positional: one C-level getter per parameter set (a generator per row cost more than the insert)
            found = self._compiled[conn.dialect.name] = (compiled, _row_getter(order) if order is not None else None)
        return found

    @staticmethod
    def _params(constants: dict[str, Any], getter: _Getter | None, values: dict[str, Any]) -> Any:
        merged = {**constants, **values} if constants else values
        return merged if getter is None else getter(merged)

    def execute(self, conn: Connection, **values: Any) -> Any:
        """Run once; returns the driver's cursor: fetch from it, or read ``rowcount``."""
        (sql, _, constants), getter = self._for(conn)
        return run_compiled(conn, sql, self._params(constants, getter, values))

    def execute_many(self, conn: Connection, rows: Iterable[dict[str, Any]]) -> int:
        """Run once per parameter set; returns the driver's total ``rowcount``."""
        (sql, _, constants), getter = self._for(conn)
        params = [self._params(constants, getter, row) for row in rows]
        if not params:
            return 0
        return max(int(run_compiled(conn, sql, params, many=True).rowcount), 0)


class ManyRows:
    """An INSERT (or upsert) run for many rows through the driver's ``executemany``, compiled once per dialect.

    ``conn.execute(statement, rows)`` has SQLAlchemy look up its compiled cache and build every row's
    parameters in Python: on the bus's hottest writes (ingest, queue publish, settle) that cost more than the
    database did. The statements here bind plain columns (text, numbers, bytes) that need no type conversion,
    so the rows go to the driver as they are (:class:`Prepared`). Every row carries every column of the
    statement's table but an autoincrement key, or every column of ``columns`` when given (the others are left
    out of the INSERT).

    ``as_arrays`` (PostgreSQL): send a call's rows as one statement with one array per column, in psycopg's binary
    format, instead of ``executemany``, which psycopg sends and runs row by row: one statement for the server to
    run instead of one per row, and 4 % fewer of the bus's instructions per event on the durable path
    (``bench/instructions.py --journal postgresql``). The text format cost more than it saved: psycopg escapes
    every quote of a text array element by regular expression, and the settle rows carry JSON. ``as_arrays``
    names the ON CONFLICT DO UPDATE target (empty for a plain INSERT or DO NOTHING): one statement cannot update
    a row twice, so a call that repeats a key runs row by row. Rows go in no guaranteed order: not for a table
    whose autoincrement key orders them.
    """

    def __init__(self, statement: Any, columns: Sequence[str] | None = None, *,
                 as_arrays: Sequence[str] | None = None) -> None:
        table = statement.table
        self.columns = tuple(columns) if columns is not None else \
            tuple(c.name for c in table.c if c is not table.autoincrement_column)
        self._prepared = Prepared(statement, self.columns, column_keys=list(self.columns))
        self._getter = _row_getter(self.columns)
        self._arrays: Prepared | None = None
        self._conflict_key: Callable[[dict[str, Any]], Any] | None = None
        if as_arrays is not None:
            # INSERT … SELECT FROM unnest(one array per column) ON CONFLICT …: the caller's statement and rules
            derived = sa.func.unnest(*[sa.bindparam(c, type_=postgresql.ARRAY(table.c[c].type)) for c in self.columns]
                                     ).table_valued(*self.columns).render_derived(name="r")
            self._arrays = Prepared(statement.from_select(list(self.columns),
                                                          sa.select(*[derived.c[c] for c in self.columns])),
                                    self.columns, binary=True)
            self._conflict_key = itemgetter(*as_arrays) if as_arrays else None
            self._floats = [isinstance(table.c[c].type, sa.Float) for c in self.columns]

    def execute(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> int:
        """Run the statement for ``rows``; returns how many rows it inserted or changed (the driver's sum)."""
        if self._arrays is not None and len(rows) > 1 and conn.dialect.name == "postgresql" and (
                self._conflict_key is None or len(set(map(self._conflict_key, rows))) == len(rows)):
            columns = [list(column) for column in zip(*map(self._getter, rows), strict=True)]
            if all(map(_one_kind, columns)) or self._numbers_alike(columns):
                return max(int(self._arrays.execute(conn, **dict(zip(self.columns, columns, strict=True))).rowcount),
                           0)
        return self._prepared.execute_many(conn, rows)

    def _numbers_alike(self, columns: list[list[Any]]) -> bool:
        """Make each column's values one Python type, as a binary array needs (psycopg refuses ``[1, 2.5]``):
        numbers of a float column become floats. False when a column still mixes types (then: row by row)."""
        for i, column in enumerate(columns):
            if _one_kind(column):
                continue
            if self._floats[i] and {type(v) for v in column} <= {int, float, bool, type(None)}:
                columns[i] = [None if v is None else float(v) for v in column]
            else:
                return False
        return True


def _one_kind(values: list[Any]) -> bool:
    """Whether ``values`` (None aside) are all of one Python type."""
    kinds = set(map(type, values))
    return len(kinds) == 1 or (len(kinds) == 2 and type(None) in kinds)


InFilter = Callable[[str, "sa.ColumnElement[Any]"], "sa.ColumnElement[bool]"]


class _ListStatement:
    """A statement filtered by ``column IN (list)`` conditions, compiled once and run through the driver.

    SQLAlchemy renders an expanding ``IN`` anew on every call, which cost the worker more than the database
    did on its per-batch lookups. Here PostgreSQL binds each list as one array (``column = ANY(%(name)s)``:
    one statement text whatever the lengths, so the server can keep it prepared); SQLite gets one compiled
    statement per combination of list lengths. ``build`` makes the statement, calling ``in_(name, column)``
    for each list filter; the lists are passed by those names.
    """

    def __init__(self, build: Callable[[InFilter], Any]) -> None:
        self._build = build
        self._compiled: dict[tuple[Any, ...], Compiled] = {}

    def _for(self, conn: Connection, lengths: tuple[int, ...], names: tuple[str, ...]) -> Compiled:
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

        bound = set(names) if postgres else {f"{n}__{i}" for n in names for i in range(size[n])}
        found = self._compiled[cache_key] = compile_for(self._build(in_), conn.dialect, bound)
        return found

    def _run(self, conn: Connection, lists: dict[str, Sequence[Any]]) -> Any:
        """The driver's cursor."""
        if conn.dialect.name != "postgresql":
            # One compiled statement per combination of lengths: with a worker's batches of 1 to 128 events that
            # was a fresh compilation (milliseconds) on many batches. Padded to the next power of two with its
            # last value (a repeated value changes nothing in an IN list), each list has a handful of lengths.
            lists = {name: _padded(values) for name, values in lists.items()}
        names = tuple(sorted(lists))
        sql, order, constants = self._for(conn, tuple(len(lists[n]) for n in names), names)
        if order is None:  # named (PostgreSQL): the lists go as arrays
            return run_compiled(conn, sql, {**constants, **{n: list(v) for n, v in lists.items()}})
        values = dict(constants)
        for name in names:
            values.update((f"{name}__{i}", v) for i, v in enumerate(lists[name]))
        return run_compiled(conn, sql, tuple(values[k] for k in order))


class ListSelect(_ListStatement):
    """A SELECT filtered by ``column IN (list)`` conditions (see :class:`_ListStatement`); rows by name."""

    def __init__(self, build: Callable[[InFilter], sa.Select[Any]]) -> None:
        super().__init__(build)
        # rows read on the driver come back as plain tuples: named like SQLAlchemy's rows, for the callers
        names = build(lambda _name, column: column.is_not(None)).selected_columns.keys()
        self._row: Callable[[Iterable[Any]], Any] = namedtuple("Row", names, rename=True)._make  # type: ignore[misc,attr-defined]

    def execute(self, conn: Connection, **lists: Sequence[Any]) -> list[Any]:
        """The rows, each with its columns by name (``row.status``)."""
        return list(map(self._row, self._run(conn, lists).fetchall()))


class ListWrite(_ListStatement):
    """An UPDATE or DELETE filtered by ``column IN (list)`` conditions (see :class:`_ListStatement`). Lists
    longer than :data:`IN_CHUNK` are the caller's to split (SQLite caps bound parameters)."""

    def execute(self, conn: Connection, **lists: Sequence[Any]) -> int:
        """Run it; returns the driver's ``rowcount``."""
        if not all(lists.values()):
            return 0
        return max(int(self._run(conn, lists).rowcount), 0)


def _padded(values: Sequence[Any]) -> Sequence[Any]:
    """``values`` lengthened to the next power of two by repeating the last one (empty stays empty)."""
    size = len(values)
    if size < 2 or size & (size - 1) == 0:
        return values
    return [*values, *([values[-1]] * ((1 << size.bit_length()) - size))]
