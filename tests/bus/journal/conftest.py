"""Journal fixtures: one test body over SQLite (a tmp file) and PostgreSQL (a throwaway schema per test)."""

from __future__ import annotations

import sys
from pathlib import Path

# This folder mirrors the package bus/journal; unless the project root is on sys.path (pytest's
# `pythonpath = ["."]`), Python would resolve `bus.journal` to this test folder as a namespace package.
_ROOT = str(Path(__file__).resolve().parents[3])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import uuid  # noqa: E402
from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from bus.journal import Journal  # noqa: E402


def pg_schema_url(postgres_url: str) -> Iterator[str]:
    """A URL whose connections use a fresh schema (dropped afterwards), so parallel runs never collide."""
    schema = f"ibt_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_url)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{postgres_url}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def journal_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/var/ironbus.sqlite"
    else:
        yield from pg_schema_url(request.getfixturevalue("postgres_url"))


@pytest.fixture
def journal(journal_url: str) -> Iterator[Journal]:
    j = Journal(journal_url)
    yield j
    j.close()
