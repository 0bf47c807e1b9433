"""``ironbus run --processes N``: N bus processes on one host, started and watched by one command.

One Python process holds the GIL, so ``ironbus run`` uses about one core however many worker threads it
has. The supervisor forks N copies of the bus (one per core is the usual choice), which share everything
that matters: the journal and queue (every queue backend hands a message to one consumer at a time and
keeps per-key order across processes), and the webhook port (``SO_REUSEPORT``: the kernel spreads
connections). Poll and schedule triggers run in the first process only, so a source is not polled twice.

The supervisor forwards SIGTERM/SIGINT, waits for every process to finish its batch, and restarts a
process that died (SIGKILL, out of memory, a crash) after a growing pause. A process that exits with an error
before it reported itself started (journal, queue and workers up) stops the whole command with its exit
code: a wrong journal URL must not restart for ever, however long the connection attempt took.
"""

from __future__ import annotations

import argparse
import copy
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from bus.backoff import Backoff
from bus.stopflag import STOP_SIGNALS, StopFlag

__all__ = ["HEALTHY_SECONDS", "Supervisor", "resolve_processes"]

log = structlog.get_logger(__name__)

#: A restarted process that keeps running this long is healthy again: its next restart pauses briefly.
HEALTHY_SECONDS = 60.0
_BACKOFF_FIRST, _BACKOFF_MAX = 1.0, 30.0
_RESTART_PAUSE = Backoff(_BACKOFF_FIRST, _BACKOFF_MAX)


def resolve_processes(text: str) -> int:
    """``--processes`` value: a positive number, or ``auto`` for one per CPU core."""
    if text == "auto":
        from bus.layout import usable_cpus

        return usable_cpus()
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number or 'auto', got {text!r}")
    return value


@dataclass
class _Child:
    index: int
    process: Any  # multiprocessing.Process (typed loosely: the fork context's class)
    started: float
    ready: Any  # multiprocessing.Event the process sets once its runtime is up
    restarts: int = 0
    ever_started: bool = False  # this slot's process reported itself started at least once


class Supervisor:
    """Runs ``target(args_for(i))`` in ``count`` forked processes until they finish or a signal arrives."""

    def __init__(self, count: int, target: Callable[[argparse.Namespace], int], args: argparse.Namespace,
                 *, poll: float = 0.2) -> None:
        self.count = count
        self.target = target
        self.args = args
        self.poll = poll
        self.stopping = StopFlag()  # set by the signal handler: not a threading.Event (see bus.stopflag)
        # fork: the children start from this process's state (configuration parsed, logging set up) and the
        # supervisor has opened nothing yet (no journal, no sockets, no threads) that a fork could break.
        self._context = multiprocessing.get_context("fork")
        self._children: list[_Child] = []
        self._pending: dict[int, tuple[float, _Child]] = {}  # index -> (restart time, the process that died)

    def args_for(self, index: int, ready: Any = None) -> argparse.Namespace:
        """The ``ironbus run`` arguments of process ``index``: triggers only in the first; ``on_started``
        (called by ``run`` once the runtime is up) sets ``ready``."""
        child = copy.copy(self.args)
        child.processes = 1
        child.no_triggers = self.args.no_triggers or index > 0
        child.process_slot = (index, self.count)  # RabbitMQ partitions are spread by it
        child.on_started = ready.set if ready is not None else None
        return child

    def _spawn(self, index: int, restarts: int = 0, ever_started: bool = False) -> _Child:
        ready = self._context.Event()
        process = self._context.Process(target=_child_main, args=(self.target, self.args_for(index, ready),
                                                                  os.getpid()),
                                        name=f"ironbus-run-{index}", daemon=False)
        # A forked child inherits this process's signal handlers; a SIGTERM arriving before it set its own
        # would only reach the supervisor's handler (in the child's copy) and be lost. Block the signals across
        # the fork: the child unblocks them once its handlers are in place, and then receives what came.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        child = _Child(index, process, time.monotonic(), ready, restarts, ever_started)
        log.info("bus process started", index=index, pid=process.pid, restarts=restarts)
        return child

    def run(self) -> int:
        """Start the processes and watch them; returns the exit code for ``ironbus run``."""
        previous = self.stopping.install()
        try:
            self._children = [self._spawn(i) for i in range(self.count)]
            return self._watch()
        finally:
            self._shutdown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _watch(self) -> int:
        codes: dict[int, int] = {}
        while True:
            if self.stopping.is_set():
                return 0
            now = time.monotonic()
            for child in list(self._children):
                code: int | None = child.process.exitcode
                if child.ready.is_set():
                    child.ever_started = True
                if code is None:
                    continue
                self._children.remove(child)
                if code == 0:
                    codes[child.index] = 0  # finished its work (--until-idle, --max-seconds)
                    continue
                if not child.ever_started and code > 0:
                    # It never got going and said why (a negative code is a signal, e.g. the OOM killer, which
                    # deserves a restart): the same error would recur, so report it instead of looping.
                    print(f"ironbus: bus process {child.index} failed while starting (exit code {code}); "
                          f"stopping the others", file=sys.stderr)
                    return code
                pause = _RESTART_PAUSE.delay(child.restarts + 1)
                if now - child.started > HEALTHY_SECONDS:  # it had been running well: a short pause again
                    pause, child.restarts = _BACKOFF_FIRST, 0
                print(f"ironbus: bus process {child.index} (pid {child.process.pid}) exited with code {code}; "
                      f"restarting it in {pause:.0f}s", file=sys.stderr)
                self._pending[child.index] = (now + pause, child)
            for index, (when, dead) in list(self._pending.items()):
                if now >= when:
                    del self._pending[index]
                    self._children.append(self._spawn(index, dead.restarts + 1, dead.ever_started))
            if not self._children and not self._pending:
                return max(codes.values(), default=0)
            self.stopping.wait(self.poll)

    def _shutdown(self) -> None:
        """Ask every process to stop (they finish their batch), then wait; SIGKILL only what hangs."""
        self._pending.clear()
        for child in self._children:
            if child.process.exitcode is None and child.process.pid is not None:
                try:
                    os.kill(child.process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 60
        for child in self._children:
            child.process.join(max(deadline - time.monotonic(), 0.1))
            if child.process.exitcode is None:
                log.error("bus process did not stop in time; killing it", index=child.index, pid=child.process.pid)
                child.process.kill()
                child.process.join(5)
        self._children = []


def _child_main(target: Callable[[argparse.Namespace], int], args: argparse.Namespace, supervisor: int) -> None:
    # Default signal handling until the bus installs its own: a signal during start-up ends the process.
    # The signals were blocked across the fork (see Supervisor._spawn); one that came meanwhile acts now.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    # A supervisor killed without warning (SIGKILL, OOM) cannot stop its processes: the kernel does, with a
    # SIGTERM (a graceful stop), so no orphan keeps serving the port beside the next `ironbus run`.
    from bus.portlock import die_with_parent

    die_with_parent(supervisor)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    code = 1
    try:
        code = target(args)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException as exc:  # report like the CLI would, then exit non-zero
        from bus.errors import IronbusError
        from bus.interpolate import redact

        if isinstance(exc, IronbusError):
            print(f"ironbus: {redact(str(exc))}", file=sys.stderr)
        else:
            log.exception("bus process failed", error=str(exc))
        code = 2 if isinstance(exc, IronbusError) else 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
