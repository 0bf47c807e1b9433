"""Protection state per system, shared through the journal so that ``ironbus status`` can show it.

Rate limiters and circuit breakers live in the memory of each ``ironbus run`` process. Every few seconds a
process writes its snapshot of them to the journal; ``ironbus status`` (another process, perhaps another
host) reads the fresh rows. A process that stopped is simply no longer fresh.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Any

from bus.journal import Journal

__all__ = ["process_id", "publish_state", "read_state"]


def process_id() -> str:
    """This process's name in the state rows: host and pid, read when called — a value taken at import time
    would be the supervisor's, shared by every child that ``ironbus run --processes`` forks."""
    return f"{socket.gethostname()}:{os.getpid()}"


def publish_state(journal: Journal, snapshot: Mapping[str, Mapping[str, Any]], process: str | None = None) -> None:
    """Store this process's snapshot (``Protections.snapshot()``) of every protected system."""
    journal.processes.publish(process or process_id(), snapshot)


def read_state(journal: Journal, max_age: float = 30.0) -> list[dict[str, Any]]:
    """Fresh snapshots of every running process: ``[{process, system, age, rate_limit, circuit}]``."""
    return journal.processes.fresh(max_age)
