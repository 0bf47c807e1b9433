"""A local Dataverse Web API per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers.dataverse import FakeDataverse


@pytest.fixture
def dv() -> Iterator[FakeDataverse]:
    with FakeDataverse() as server:
        yield server
