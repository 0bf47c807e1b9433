"""Structured logging setup: structlog, JSON lines or console, secrets scrubbed.

Library code logs with ``structlog.get_logger(__name__)`` and binds ``event_id`` / ``correlation_id``; this
module only decides how the lines are rendered, and removes values that came from ``${ENV}`` interpolation.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from bus import telemetry
from bus.interpolate import redact
from bus.secrets import mask_value

__all__ = ["configure_logging"]


def _scrub(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    # A traceback quotes exception messages (a response body, a URL with a key): render it here, so it is
    # masked like the rest, instead of leaving it to the renderer.
    if event_dict.get("exc_info"):
        event_dict = structlog.processors.format_exc_info(_, __, event_dict)
    for key, value in event_dict.items():
        if isinstance(value, str):
            event_dict[key] = redact(value)
        elif isinstance(value, dict | list):
            event_dict[key] = mask_value(value)
    return event_dict


class _CurrentStderr:
    """The ``sys.stderr`` of the moment a line is written, not of the moment logging was configured: a caller
    that swaps stderr (pytest per test, a daemon redirecting it) and closes the old one must not make every later
    log call raise "I/O operation on closed file" in whatever thread logs next."""

    def write(self, text: str) -> int:
        try:
            return sys.stderr.write(text)
        except ValueError:  # closed by its owner: a log line is never worth an exception in the caller
            return 0

    def flush(self) -> None:
        try:
            sys.stderr.flush()
        except ValueError:
            pass


def configure_logging(level: str = "info", fmt: str = "console") -> None:
    """Configure structlog for the CLI: ``fmt`` is ``console`` (humans, stderr) or ``json`` (one object a line)."""
    numeric = getattr(logging, level.upper(), logging.INFO)
    logging.basicConfig(level=numeric, stream=sys.stderr, format="%(message)s")
    renderer: Any = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(
        colors=sys.stderr.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            telemetry.log_ids,  # trace_id / span_id of the current span, when tracing is on
            _scrub,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
