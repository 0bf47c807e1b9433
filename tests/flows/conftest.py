"""Fixtures for the end-to-end flow tests: one trytond (crm, scm, srm) and one in-process bus per module.

The stack is the demo's (:mod:`demo.stack`) on the shipped routes.yaml. Without trytond the tests skip, or fail
under IRONBUS_REQUIRE_SERVICES=1. Tests share the stack, so each works on its own sale (its own order id).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from demo.stack import Stack
from tests.helpers.stacks import linked_triangle


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with linked_triangle(tmp_path_factory.mktemp("flows")) as triangle:
        yield triangle
