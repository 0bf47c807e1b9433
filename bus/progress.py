"""Is the bus making progress? What each ``ironbus run`` process publishes for ``ironbus status`` to show a stall.

A bus can look healthy by its counts while delivering nothing: messages held behind a key whose lease never
ends, a worker stuck on a call, a broker connection that came back without its consumer. Every few seconds
each process writes a row (``ib_system_state``, system ``(bus)``) with its batch count, when that count last
moved, and the messages it holds; ``ironbus status`` marks a process ``STALLED`` when work is waiting and it
has not finished a batch for :data:`STALL_SECONDS`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bus.journal import Journal
from bus.systemstate import process_id

__all__ = ["BUS_ROW", "STALL_SECONDS", "Progress", "oldest_ready_age", "stalled"]

BUS_ROW = "(bus)"
#: Work waiting and no batch finished for this long: the process is stalled.
STALL_SECONDS = float(os.environ.get("IRONBUS_STALL_SECONDS") or 60.0)


@dataclass
class Progress:
    """Tracks one process's batch counter and publishes it with the queue it sees."""

    process: str = field(default_factory=process_id)  # read in the process that publishes (after a fork)
    batches: int = -1
    moved_at: float = field(default_factory=time.time)

    def publish(self, journal: Journal, batches: int, depth: dict[str, int], held: int) -> None:
        now = time.time()
        if batches != self.batches:
            self.batches, self.moved_at = batches, now
        state = {"batches": batches, "progress_age": round(now - self.moved_at, 1), "held": held,
                 "ready": depth.get("ready", -1), "leased": depth.get("leased", -1)}
        journal.processes.publish_row(self.process, BUS_ROW, state)


def stalled(row: dict[str, Any]) -> bool:
    """A published ``(bus)`` row whose process has work waiting (ready, leased or held) and no progress."""
    waiting = max(row.get("ready", 0), 0) + max(row.get("leased", 0), 0) + max(row.get("held", 0), 0)
    # progress_age was measured when the row was written, `age` seconds ago
    return waiting > 0 and float(row.get("progress_age", 0)) + float(row.get("age", 0)) >= STALL_SECONDS


def oldest_ready_age(journal: Journal) -> float | None:
    """Seconds the oldest message waiting on the embedded queue has waited (None when none waits)."""
    return journal.oldest_ready_age()
def bus_rows(rows: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``read_state`` rows split into (process progress rows, protected-system rows)."""
    return [r for r in rows if r["system"] == BUS_ROW], [r for r in rows if r["system"] != BUS_ROW]
