"""``ironbus run --processes N``: the supervisor that forks N bus processes and watches them.

Real ``ironbus run`` subprocesses on the embedded SQLite journal (no broker, no server): the work is shared
by the processes and every delivery arrives, SIGTERM stops every process gracefully, a killed process is
restarted, a process that cannot start stops the command, and ``--port 0`` is refused. The supervisor's
children are read from ``/proc/<pid>/task/<pid>/children`` (Linux).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bus.supervisor import resolve_processes
from tests.helpers.routes import enqueue, orders, write_routes
from tests.helpers.sink import Sink
from tests.helpers.wait import wait_until

REPO = Path(__file__).resolve().parents[2]
EVENTS = 200

needs_proc_children = pytest.mark.skipif(
    not Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists(),
    reason="needs Linux /proc/<pid>/task/<pid>/children to see the supervisor's processes")


class Bus:
    """A real ``ironbus run`` subprocess; stderr (the supervisor's and its children's) goes to a file."""

    def __init__(self, tmp_path: Path, routes: Path, journal: str, *extra: str) -> None:
        self.err_path = tmp_path / f"stderr-{time.monotonic_ns()}.txt"
        cmd = [sys.executable, "-m", "cli", "run", "--routes", str(routes), "--journal", journal, *extra]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with self.err_path.open("wb") as err:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
        self.pid = self.proc.pid
        self.seen: set[int] = set()  # every child pid observed, for cleanup

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def children(self) -> list[int]:
        """PIDs of the supervisor's live child processes (empty once it has exited)."""
        try:
            text = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text()
        except OSError:
            return []
        pids = [int(pid) for pid in text.split()]
        self.seen.update(pids)
        return pids

    def wait_children(self, count: int, timeout: float) -> list[int]:
        """Wait until the supervisor has exactly ``count`` children; fails early if it exits."""
        found: list[int] = []

        def ready() -> bool:
            nonlocal found
            assert self.proc.poll() is None, f"ironbus run exited early ({self.proc.returncode}):\n{self.stderr()}"
            found = self.children()
            return len(found) == count

        wait_until(ready, timeout=timeout, what=f"{count} bus processes under the supervisor")
        return found

    def wait_running(self, count: int, timeout: float = 30) -> None:
        """Wait until ``count`` bus processes have printed their start-up line (their runtime is up)."""
        wait_until(lambda: self.stderr().count("ironbus: running ") == count, timeout=timeout,
                   what=f"{count} bus processes to report they are running")

    def terminate(self, timeout: float = 60) -> tuple[int, str]:
        """SIGTERM the supervisor; its exit code and everything written to stderr once it has exited."""
        self.proc.send_signal(signal.SIGTERM)
        code = self.wait(timeout=timeout)
        return code, self.stderr()

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"ironbus run did not exit within {timeout:g}s:\n{self.stderr()[-3000:]}") from None

    def kill_all(self) -> None:
        """Cleanup: kill the supervisor and every child it was ever seen with, by pid (also orphans left
        behind by a supervisor that died first)."""
        self.seen.update(self.children())
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for pid in self.seen:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _running(pid: int) -> bool:
    """True while ``pid`` exists and has not exited (an unreaped zombie counts as exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


@pytest.fixture
def empty_bus_files(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A routes file (its sink is never called: the queue stays empty) and a fresh SQLite journal URL."""
    with Sink("ok") as sink:
        yield write_routes(tmp_path, sink.url), f"sqlite:///{tmp_path}/j.sqlite"


# --- --processes parsing ---------------------------------------------------------------------------------------

def test_resolve_processes_auto_is_one_per_core() -> None:
    assert resolve_processes("auto") == (os.cpu_count() or 1)


@pytest.mark.parametrize("text, expected", [("1", 1), ("3", 3), ("16", 16)])
def test_resolve_processes_accepts_positive_numbers(text: str, expected: int) -> None:
    assert resolve_processes(text) == expected


@pytest.mark.parametrize("text", ["0", "-1", "x", "", "2.5"])
def test_resolve_processes_rejects_non_positive_and_garbage(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as info:
        resolve_processes(text)
    assert repr(text) in str(info.value)


# --- end to end ------------------------------------------------------------------------------------------------

@needs_proc_children
def test_two_processes_share_the_queue_and_deliver_everything(tmp_path: Path) -> None:
    journal_url = f"sqlite:///{tmp_path}/j.sqlite"
    # a slightly slow sink: 2 x 200 deliveries take seconds, so both processes are seen while work is under way
    with Sink("ok", slow=0.01) as sink:
        routes = write_routes(tmp_path, sink.url)
        events = orders(EVENTS)
        enqueue(journal_url, None, events)

        bus = Bus(tmp_path, routes, journal_url, "--processes", "2", "--workers", "1", "--no-http",
                  "--no-triggers", "--until-idle", "--max-seconds", "120")
        try:
            children = bus.wait_children(2, timeout=30)
            assert len(sink.keys()) < 2 * EVENTS, "all work was done before the processes were counted"
            code = bus.wait(timeout=150)
            err = bus.stderr()
        finally:
            bus.kill_all()

        assert code == 0, err[-3000:]
        # every demand delivery, plus one procurement follow-up (srm.create_po) per order
        expected = {f"{e.id}:demand:scm.update_demand" for e, _ in events}
        got = sink.keys()
        assert expected <= got, f"{len(expected - got)} demand deliveries lost"
        follow_ups = {k for k in got if k.endswith(":procurement:srm.create_po")}
        assert len(follow_ups) == EVENTS, f"expected {EVENTS} procurement follow-ups, got {len(follow_ups)}"
        assert len(got) == 2 * EVENTS, f"expected {2 * EVENTS} deliveries (with follow-ups), got {len(got)}"

        # both processes really ran the bus, shared the work and stopped by themselves (--until-idle)
        delivered = [int(n) for n in re.findall(r"stopped — (\d+) delivered", err)]
        assert len(delivered) == 2, err[-3000:]
        assert all(n > 0 for n in delivered), f"one process did all the work: {delivered}"
        assert sum(delivered) >= 2 * EVENTS
        assert not any(_running(pid) for pid in children)


# --- signals, restarts, failures -------------------------------------------------------------------------------

@needs_proc_children
def test_sigterm_stops_every_process_gracefully(tmp_path: Path, empty_bus_files: tuple[Path, str]) -> None:
    routes, journal_url = empty_bus_files
    bus = Bus(tmp_path, routes, journal_url, "--processes", "2", "--no-http", "--no-triggers")
    try:
        children = bus.wait_children(2, timeout=30)
        # both bus processes are up (their runtime started) before the signal
        bus.wait_running(2)
        code, err = bus.terminate()
    finally:
        bus.kill_all()

    assert code == 0, err
    assert not any(_running(pid) for pid in children), f"bus processes left running: {children}"
    # the signal reached every process, which stopped its runtime cleanly (not killed)
    assert err.count("ironbus: stopped — ") == 2, err
    assert "did not stop in time" not in err
    assert "restarting" not in err


@needs_proc_children
def test_a_killed_process_is_restarted(tmp_path: Path, empty_bus_files: tuple[Path, str]) -> None:
    routes, journal_url = empty_bus_files
    bus = Bus(tmp_path, routes, journal_url, "--processes", "2", "--no-http", "--no-triggers")
    try:
        first = bus.wait_children(2, timeout=30)
        victim, survivor = first
        # a process that dies before it reported itself started is a start-up failure; kill it once both
        # processes have said they are running (their start-up line), when it is a crash of a running process
        bus.wait_running(2)
        os.kill(victim, signal.SIGKILL)

        def replaced() -> bool:
            assert bus.proc.poll() is None, f"supervisor exited after a child was killed:\n{bus.stderr()}"
            now = bus.children()
            return len(now) == 2 and victim not in now

        wait_until(replaced, timeout=15, what="the killed bus process to be replaced")
        now = bus.children()
        assert survivor in now
        (new,) = set(now) - {survivor}
        assert new not in first
        assert _running(new)
        err = bus.stderr()
        assert f"(pid {victim}) exited with code -9; restarting" in err, err

        code, err = bus.terminate()
    finally:
        bus.kill_all()

    assert code == 0, err
    assert not _running(new) and not _running(survivor)
    assert "failed while starting" not in err


def test_a_process_that_cannot_start_stops_the_command(tmp_path: Path) -> None:
    with Sink("ok") as sink:
        routes = write_routes(tmp_path, sink.url)
    bus = Bus(tmp_path, routes, "postgresql+psycopg://nobody@127.0.0.1:1/none",
              "--processes", "2", "--no-http", "--no-triggers")
    try:
        code = bus.wait(timeout=60)
        err = bus.stderr()
    finally:
        bus.kill_all()

    # the parent only checks the routes file; the journal is opened in each forked process, which fails,
    # and the supervisor reports that instead of restarting it for ever
    assert "starting 2 bus processes" in err, err
    assert code == 2, err  # the failing process's exit code: a configuration error
    assert re.search(r"bus process \d failed while starting \(exit code 2\); stopping the others", err), err
    assert "is unreachable" in err  # the child's own reason is shown too
    assert "restarting" not in err
    assert "Traceback" not in err


@pytest.mark.slow
def test_a_process_that_fails_slowly_while_starting_stops_the_command(tmp_path: Path) -> None:
    # a "database" that accepts TCP connections (the kernel's backlog) and never answers: the journal
    # connection fails only when its connect_timeout expires; however long that takes, a process that never
    # reported itself started is a start-up failure, not a crash to restart
    timeout = 7
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    port = server.getsockname()[1]
    with Sink("ok") as sink:
        routes = write_routes(tmp_path, sink.url)
    bus = Bus(tmp_path, routes, f"postgresql+psycopg://nobody@127.0.0.1:{port}/none?connect_timeout={timeout}",
              "--processes", "2", "--no-http", "--no-triggers")
    try:
        # the command ends (as in the fast case), or the supervisor shows it is restarting a process that
        # never started; stop watching at whichever comes first
        wait_until(lambda: bus.proc.poll() is not None or "restarting" in bus.stderr(), timeout=timeout + 30,
                   what="ironbus run to stop or restart a process")
        err = bus.stderr()
        code = bus.proc.poll()
    finally:
        bus.kill_all()
        server.close()

    assert "is unreachable" in err, err
    assert "restarting" not in err, err
    assert code is not None and code != 0, err
    assert "failed while starting" in err, err


@needs_proc_children
def test_a_stop_right_after_a_restart_reaches_the_new_process(tmp_path: Path,
                                                              empty_bus_files: tuple[Path, str]) -> None:
    # A process forked by the supervisor starts with the supervisor's signal handlers; a SIGTERM arriving
    # before it installs its own must still stop it (the supervisor blocks the signals across the fork).
    routes, journal_url = empty_bus_files
    bus = Bus(tmp_path, routes, journal_url, "--processes", "2", "--no-http", "--no-triggers")
    try:
        victim, survivor = bus.wait_children(2, timeout=30)
        bus.wait_running(2)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:  # catch the replacement as soon as it is forked (no pause: a race)
            now = bus.children()
            if len(now) == 2 and victim not in now:
                break
        else:
            pytest.fail(f"no replacement for bus process {victim} within 15 s:\n{bus.stderr()}")
        (new,) = set(now) - {survivor}
        code, err = bus.terminate(timeout=30)
    finally:
        bus.kill_all()
    assert code == 0, err
    assert "did not stop in time" not in err, err
    assert not _running(new) and not _running(survivor)


def test_port_zero_is_refused_with_several_processes(tmp_path: Path, empty_bus_files: tuple[Path, str]) -> None:
    routes, journal_url = empty_bus_files
    bus = Bus(tmp_path, routes, journal_url, "--processes", "2", "--port", "0", "--no-triggers")
    try:
        code = bus.wait(timeout=60)
        err = bus.stderr()
    finally:
        bus.kill_all()

    assert code == 2, err
    assert "--port" in err
    assert "starting 2 bus processes" not in err  # refused before anything was forked
