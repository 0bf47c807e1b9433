"""Fixtures for tests against a live Tryton: one trytond serving crm, scm and srm for the whole session.

The first run builds and caches the database templates (about 45 s); later runs copy them (milliseconds)
and start the server (about 5 s). Without trytond installed the tests skip, or fail under
IRONBUS_REQUIRE_SERVICES=1. Tests share the databases, so each one uses unique references and codes.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.tryton import TrytonAdapter

# The top-level ``tryton`` package (fixture tooling) is not part of the installed distribution; make the repo
# root importable so it wins over this ``tests/tryton`` folder, which Python would see as a namespace package.
_REPO = str(Path(__file__).resolve().parents[2])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from tests.helpers.services import skip_or_fail  # noqa: E402
from tests.tryton.tryton_helpers import settings  # noqa: E402
from tryton import tryton_env  # noqa: E402


@pytest.fixture(scope="session")
def tryton_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tryton_env.TrytonServer]:
    if not tryton_env.installed():
        reason = "trytond is not installed (pip install -e '.[tryton]')"
        skip_or_fail(reason)
    server = tryton_env.start(("crm", "scm", "srm"), run_dir=tmp_path_factory.mktemp("tryton"))
    yield server
    server.stop()


@pytest.fixture
def make_adapter(tryton_server: tryton_env.TrytonServer) -> Iterator[Callable[..., TrytonAdapter]]:
    made: list[TrytonAdapter] = []

    def make(db: str, **extra: Any) -> TrytonAdapter:
        adapter = TrytonAdapter(db, settings(tryton_server, db, **extra))
        adapter.open()
        made.append(adapter)
        return adapter

    yield make
    for adapter in made:
        adapter.close()


@pytest.fixture
def crm(make_adapter: Callable[..., TrytonAdapter]) -> TrytonAdapter:
    return make_adapter("crm")


@pytest.fixture
def scm(make_adapter: Callable[..., TrytonAdapter]) -> TrytonAdapter:
    return make_adapter("scm")


@pytest.fixture
def srm(make_adapter: Callable[..., TrytonAdapter]) -> TrytonAdapter:
    return make_adapter("srm")
