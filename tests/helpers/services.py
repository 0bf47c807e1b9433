"""The one rule for tests that need something outside Python: skip with a reason, or fail in CI.

With ``IRONBUS_REQUIRE_SERVICES=1`` (set by ``.ci/run``) a missing service or tool is a failure, so CI
cannot pass by skipping.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def skip_or_fail(reason: str) -> NoReturn:
    if os.environ.get("IRONBUS_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason}, and IRONBUS_REQUIRE_SERVICES=1 forbids skipping (see ../shared/SERVICES.md)")
    pytest.skip(reason)
