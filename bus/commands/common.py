"""Helpers the operator commands share: time arguments, the journal that must exist, the current routes."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
import structlog

from bus.config import load_config, parse_duration
from bus.errors import ConfigError
from bus.journal import Journal
from bus.pipeline import Pipeline
from bus.runtime import journal_url

log = structlog.get_logger(__name__)

__all__ = ["current_pipeline", "existing_journal", "iso_time", "parse_since"]


def parse_since(text: str | None) -> float | None:
    """Epoch seconds from '2h' / '1d' (ago) or an ISO timestamp."""
    if not text:
        return None
    try:
        return time.time() - parse_duration(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise ConfigError(f"--since/--until {text!r}: expected a duration like '2h' or an ISO timestamp") from None


def existing_journal(explicit: str | None) -> str:
    """The journal URL for a command that only reads: refuse one that does not exist instead of creating an
    empty journal and reporting zero of everything."""
    url = journal_url(explicit)
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        raise ConfigError(f"journal URL {url!r} is not a database URL (e.g. sqlite:///var/ironbus.sqlite or "
                          "postgresql://host/db)") from None
    shown = parsed.render_as_string(hide_password=True)
    hint = "check --journal or $IRONBUS_JOURNAL (the bus creates its journal when it first runs)"
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:" and not Path(parsed.database).is_file():
            raise ConfigError(f"journal {shown} does not exist (no file {parsed.database}); {hint}")
        return url
    engine = sa.create_engine(parsed)
    try:
        with engine.connect() as conn:
            present = sa.inspect(conn).has_table("ironbus_schema")
    except sa.exc.SQLAlchemyError:
        return url  # unreachable: the journal itself says so, in one line
    finally:
        engine.dispose()
    if not present:
        raise ConfigError(f"journal {shown} holds no ironbus journal (the database exists, its tables do not); "
                          f"{hint}")
    return url


def current_pipeline(routes: Path, journal: Journal) -> Pipeline | None:
    return Pipeline(load_config(routes), xref=journal.xref) if routes.is_file() else None


def iso_time(epoch: float | None) -> str:
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch).astimezone().isoformat(timespec="seconds")
