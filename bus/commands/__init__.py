"""Handlers behind the ``ironbus`` subcommands; each takes the parsed arguments and returns an exit code."""

from __future__ import annotations

from bus.commands.authoring import adapters, graph, lint, map_, test
from bus.commands.console import console
from bus.commands.masterdata import xref
from bus.commands.operations import dlq, journal, replay, run, send, status, trace

__all__ = ["adapters", "console", "dlq", "graph", "journal", "lint", "map_", "replay", "run", "send", "status", "test",
           "trace", "xref"]
