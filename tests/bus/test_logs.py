"""Logging writes to the stderr of the moment: a closed, swapped-out stream never breaks a later log call."""

from __future__ import annotations

import io
import sys

import pytest
import structlog

from bus.logs import configure_logging


def test_a_closed_stderr_that_was_swapped_out_does_not_break_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    configure_logging("info")
    structlog.get_logger("t").info("one")
    first.close()  # what pytest does to a test's captured stream when the test ends
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    structlog.get_logger("t").info("two")  # raised "I/O operation on closed file" before
    assert "two" in second.getvalue()
    structlog.reset_defaults()
