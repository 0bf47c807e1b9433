"""Versioned schema migrations, applied when a journal is opened.

``ironbus_schema`` holds one row: the number of steps applied. At open, the steps not yet applied run in
order inside one transaction; on PostgreSQL a transaction-scoped advisory lock serialises concurrent
``ironbus run`` processes (SQLite's ``BEGIN IMMEDIATE`` does the same). A journal written by an earlier
version therefore opens and is upgraded; one written by a *newer* version is refused rather than misread.

Adding a step: append a function to :data:`MIGRATIONS` and change :mod:`bus.journal.tables` to match. Never
edit a step that has shipped. Step 1 builds the tables from :mod:`bus.journal.tables`, so when a later step
alters one of those tables, step 1 must first be given a frozen copy of that table's original definition.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Connection, Engine

from bus.errors import ConfigError
from bus.journal import tables
from bus.journal.engine import write

__all__ = ["MIGRATIONS", "Step", "current_version", "migrate"]

log = structlog.get_logger(__name__)

Step = Callable[[Connection], None]

# An arbitrary constant: the advisory lock id ironbus takes while migrating a PostgreSQL journal.
_PG_LOCK_ID = 0x1B0B_5C4E


def _v1_initial(conn: Connection) -> None:
    tables.metadata.create_all(conn, tables=[t for t in tables.metadata.sorted_tables
                                             if t is not tables.schema_version])


def _v2_system_state(conn: Connection) -> None:
    # checkfirst: a journal created fresh by step 1 of this version already has the table
    tables.system_state.create(conn, checkfirst=True)


def _v3_last_payloads(conn: Connection) -> None:
    tables.last_payloads.create(conn, checkfirst=True)


def _v4_adapter_state(conn: Connection) -> None:
    tables.adapter_state.create(conn, checkfirst=True)


def _v5_console(conn: Connection) -> None:
    # the console's audit trail, and the indexes its search by delivery status and its route figures (rate and
    # p99 of recent deliveries) read by; checkfirst: step 1 may have made them
    tables.audit.create(conn, checkfirst=True)
    for index in tables.console_indexes:
        index.create(conn, checkfirst=True)


def _v6_aggregate_items(conn: Connection) -> None:
    tables.aggregate_items.create(conn, checkfirst=True)


# The advisory lock under which ironbus up to version 6 of the schema created its side tables on first use.
_PG_SIDE_TABLES_LOCK_ID = 0x1B05_7AB1


def _v7_hardening_tables(conn: Connection) -> None:
    # outbox, trigger leases, shared rate buckets and circuits: until this step the modules using them created
    # them on first use, so a journal at version 6 may have some already (with these very definitions). An
    # older process still running during a rolling upgrade may be creating one right now: take its lock too.
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _PG_SIDE_TABLES_LOCK_ID})
    for table in (tables.outbox, tables.leaders, tables.rate_buckets, tables.circuits):
        table.create(conn, checkfirst=True)


def _v8_attempt_spans(conn: Connection) -> None:
    # the span ids of each attempt (tracing on); step 1 of this version already made the columns
    present = {c["name"] for c in sa.inspect(conn).get_columns(tables.attempts.name)}
    for name in ("trace_id", "span_ids"):
        if name not in present:
            conn.execute(sa.text(f"ALTER TABLE {tables.attempts.name} ADD COLUMN {name} TEXT"))


def _v9_delivering_attempt(conn: Connection) -> None:
    # the attempt that delivered, on the delivery row (Journal.settle); step 1 of this version made the columns
    present = {c["name"] for c in sa.inspect(conn).get_columns(tables.deliveries.name)}
    for name in ("started_at", "duration_ms", "trace_id", "span_ids"):
        if name not in present:
            kind = tables.deliveries.c[name].type.compile(dialect=conn.dialect)
            conn.execute(sa.text(f"ALTER TABLE {tables.deliveries.name} ADD COLUMN {name} {kind}"))


MIGRATIONS: list[Step] = [_v1_initial, _v2_system_state, _v3_last_payloads, _v4_adapter_state, _v5_console,
                          _v6_aggregate_items, _v7_hardening_tables, _v8_attempt_spans, _v9_delivering_attempt]


def current_version(conn: Connection) -> int:
    """The number of steps applied to the database behind ``conn`` (0 for an empty database)."""
    if not sa.inspect(conn).has_table(tables.schema_version.name):
        return 0
    value = conn.execute(sa.select(sa.func.max(tables.schema_version.c.version))).scalar()
    return int(value or 0)


def migrate(engine: Engine, steps: Sequence[Step] | None = None) -> int:
    """Apply the steps not yet applied (default: :data:`MIGRATIONS`); returns the resulting version.

    Raises :class:`ConfigError` when the database was written by a newer ironbus than this one.
    """
    steps = MIGRATIONS if steps is None else steps
    with write(engine) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _PG_LOCK_ID})
        tables.schema_version.create(conn, checkfirst=True)
        version = current_version(conn)
        if version > len(steps):
            raise ConfigError(f"journal {engine.url.render_as_string(hide_password=True)} has schema version "
                              f"{version}, newer than this ironbus knows ({len(steps)}); upgrade ironbus")
        for number, step in enumerate(steps[version:], start=version + 1):
            log.info("journal.migrate", step=number, name=step.__name__)
            step(conn)
        if version < len(steps):
            conn.execute(tables.schema_version.delete())
            conn.execute(tables.schema_version.insert().values(version=len(steps)))
        return len(steps)
