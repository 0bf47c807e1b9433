"""Fixtures for the end-to-end flow tests: one trytond (crm, scm, srm) and one in-process bus per module.

The stack is the demo's (:mod:`demo.stack`) on the shipped routes.yaml. Without trytond the tests skip, or fail
under IRONBUS_REQUIRE_SERVICES=1. Tests share the stack, so each works on its own sale (its own order id).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from demo.stack import Stack
from tests.helpers.stacks import journal_at_failure, linked_triangle


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with linked_triangle(tmp_path_factory.mktemp("flows")) as triangle:
        yield triangle


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A flow test that fails reports its stack's journal (a deadline passed: which delivery is still waiting,
    and why); flow tests fail rarely and mostly under load, where the journal is all there is to read after."""
    outcome: Any = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    funcargs = getattr(item, "funcargs", {})
    stack = funcargs.get("stack") or getattr(funcargs.get("demo"), "stack", None)
    if not isinstance(stack, Stack):
        return
    try:
        report.sections.append(("journal at failure", journal_at_failure(stack)))
    except Exception as exc:  # the report must not hide the failure it explains
        report.sections.append(("journal at failure", f"could not read the journal: {exc!r}"))
