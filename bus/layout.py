"""The layout ``ironbus run`` chooses when it is given no tuning flags: processes, workers and batch size.

Measured on the benchmark machine (see docs/operating.md): one Python process carries about one core (the
GIL), so the bus runs one process per core it may use. How a process spends its threads depends on its
targets. An adapter that makes many calls at once (one that overrides :meth:`adapters.base.Adapter.call_many`,
as the ``http`` adapter does) gets a batch's first attempts sent together in waves by one worker thread; more
threads would only compete for the GIL, and larger batches make larger waves and fewer journal transactions.
An adapter that calls one at a time gets its concurrency from worker threads instead, with the smaller batch
that keeps a slow target's batch within the embedded queue's lease.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from bus.config import Config
from bus.errors import IronbusError

__all__ = ["Layout", "default_layout", "usable_cpus"]

#: Threads per process and messages per batch when some target calls one at a time (the earlier defaults).
SERIAL_WORKERS, SERIAL_BATCH = 4, 32
#: When every target takes a batch's calls at once.
CONCURRENT_WORKERS, CONCURRENT_BATCH = 1, 128


@dataclass(frozen=True)
class Layout:
    processes: int
    workers: int
    batch: int
    reason: str  # one line for the start-up message and the docs: why this layout

    def describe(self) -> str:
        return f"{self.processes} process(es) x {self.workers} worker(s), batches of {self.batch} ({self.reason})"


def usable_cpus() -> int:
    """The cores this process may run on (its CPU affinity, which containers and ``taskset`` narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def _serial_targets(config: Config) -> list[str]:
    """The target systems whose adapter makes one call at a time (no ``call_many`` of its own)."""
    from bus.plugins import load_adapter_class

    systems = {t.system for route in config.routes for t in route.targets}
    serial = []
    for name in sorted(systems):
        system = config.systems.get(name)
        if system is None:
            continue  # lint reports it; the runtime refuses it with a located error
        try:
            cls = load_adapter_class(system.adapter, system.location)
        except IronbusError:
            serial.append(name)  # unknown adapter: the runtime says so; assume the cautious layout meanwhile
            continue
        if not cls.groups_calls:
            serial.append(name)
    return serial


def default_layout(config: Config, *, cpus: int | None = None) -> Layout:
    """The layout for ``config`` on this machine (``cpus``: the cores to plan for, default the usable ones)."""
    processes = cpus if cpus is not None else usable_cpus()
    serial = _serial_targets(config)
    if serial:
        return Layout(processes, SERIAL_WORKERS, SERIAL_BATCH,
                      f"{', '.join(serial)} call(s) one at a time: threads carry the concurrency")
    return Layout(processes, CONCURRENT_WORKERS, CONCURRENT_BATCH,
                  "every target takes a batch's calls at once: one worker sends them in waves")
