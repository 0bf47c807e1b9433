"""Killing the ``ironbus run`` supervisor leaves no bus process serving its port, and a second bus on a
served port fails with a clear message (issue 12, item 7). Real subprocesses, real sockets."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import httpx
import pytest

from bus.errors import ConfigError
from bus.portlock import claim_port
from tests.bus.test_supervisor import Bus, _running, empty_bus_files, needs_proc_children
from tests.helpers.wait import wait_until

__all__ = ["empty_bus_files"]  # the fixture, shared with the supervisor tests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serving(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/ping", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@needs_proc_children
def test_sigkilled_supervisor_takes_its_processes_with_it(tmp_path: Path,
                                                          empty_bus_files: tuple[Path, str]) -> None:
    routes, journal = empty_bus_files
    port = free_port()
    bus = Bus(tmp_path, routes, journal, "--processes", "2", "--port", str(port), "--no-triggers")
    try:
        children = bus.wait_children(2, timeout=30)
        bus.wait_running(2)
        assert serving(port)
        bus.proc.send_signal(signal.SIGKILL)
        bus.wait(timeout=10)
        wait_until(lambda: not any(_running(pid) for pid in children), timeout=30,
                   what="the bus processes to end with their supervisor")
        assert not serving(port)
        # the port is free for the next bus at once
        again = Bus(tmp_path, routes, journal, "--processes", "1", "--port", str(port), "--no-triggers")
        try:
            again.wait_running(1)
            assert serving(port)
        finally:
            again.kill_all()
    finally:
        bus.kill_all()


def test_a_second_bus_on_a_served_port_fails_clearly(tmp_path: Path, empty_bus_files: tuple[Path, str]) -> None:
    routes, journal = empty_bus_files
    port = free_port()
    first = Bus(tmp_path, routes, journal, "--processes", "2", "--port", str(port), "--no-triggers")
    try:
        first.wait_running(2)
        second = Bus(tmp_path, routes, f"sqlite:///{tmp_path}/other.sqlite", "--port", str(port), "--no-triggers")
        try:
            code = second.wait(timeout=30)
        finally:
            second.kill_all()
        assert code == 2
        err = second.stderr()
        assert f"port 127.0.0.1:{port} is already served by another ironbus run (pid {first.pid})" in err, err
        assert "Traceback" not in err
        assert serving(port) and first.proc.poll() is None  # the first bus is untouched
    finally:
        first.kill_all()


def test_a_port_held_by_another_program_is_refused(tmp_path: Path) -> None:
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(ConfigError, match="already in use"):
            claim_port("127.0.0.1", port)
    claim = claim_port("127.0.0.1", port)  # free again: claimed, then released for the next
    claim.release()
