"""Tables beside the journal's own that modules create on first use (outbox, trigger leases, shared protection).

Several processes start at once against one database: each creates what is missing, under a PostgreSQL
advisory lock (SQLite's write lock serialises them anyway), so two never race to create the same table.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bus.journal.engine import write

__all__ = ["ensure_tables"]

_LOCK_KEY = 0x1B05_7AB1  # an arbitrary advisory-lock number of ironbus's own
_created: set[tuple[str, str]] = set()
_lock = threading.Lock()


def ensure_tables(engine: Engine, metadata: sa.MetaData, tables: Sequence[sa.Table]) -> None:
    """Create ``tables`` when missing (once per engine and table set in this process)."""
    key = (engine.url.render_as_string(hide_password=False), ",".join(sorted(t.name for t in tables)))
    with _lock:
        if key in _created:
            return
        with write(engine) as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
            metadata.create_all(conn, tables=list(tables), checkfirst=True)
        _created.add(key)
