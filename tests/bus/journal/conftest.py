"""Journal fixtures: one test body over SQLite (a tmp file) and PostgreSQL (a throwaway schema per test)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bus.journal import Journal
from tests.helpers.pg import pg_schema_url


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
