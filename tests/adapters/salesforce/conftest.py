"""A local Salesforce (REST over HTTP, Pub/Sub API over gRPC) per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers.salesforce import FakeSalesforce


@pytest.fixture
def sf() -> Iterator[FakeSalesforce]:
    with FakeSalesforce() as server:
        yield server
