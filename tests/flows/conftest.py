"""Fixtures for the end-to-end flow tests: one trytond (crm, scm, srm) and one in-process bus per module.

The stack is the demo's (:mod:`demo.stack`) on the shipped routes.yaml. Without trytond the tests skip, or fail
under IRONBUS_REQUIRE_SERVICES=1. Tests share the stack, so each works on its own sale (its own order id).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from demo.stack import Stack
from tests.helpers.services import skip_or_fail
from tryton import tryton_env


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if not tryton_env.installed():
        reason = "trytond is not installed (pip install -e '.[tryton]')"
        skip_or_fail(reason)
    saved = {name: os.environ.get(name) for name in ("TRYTON_URL", "IRONBUS_OUTBOX", "IRONBUS_GROUPING_WINDOW")}
    os.environ["IRONBUS_GROUPING_WINDOW"] = "2s"  # the shipped routes group purchases per supplier for a window
    work: Path = tmp_path_factory.mktemp("flows")
    triangle = Stack(work, workers=3)
    try:
        triangle.start_tryton()
        triangle.import_xref(triangle.provision())
        triangle.start_bus()
        yield triangle
    finally:
        triangle.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
