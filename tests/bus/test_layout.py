"""The layout ``ironbus run`` picks without flags, and bus processes that stop with a killed supervisor."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from bus.config import load_config
from bus.layout import default_layout, usable_cpus
from tests.bus.test_supervisor import Bus, _running, needs_proc_children
from tests.helpers.routes import write_routes
from tests.helpers.sink import Sink
from tests.helpers.wait import wait_until


def _config(tmp_path: Path, extra_route: str = ""):  # type: ignore[no-untyped-def]
    return load_config(write_routes(tmp_path, "http://127.0.0.1:9", extra_route=extra_route))


def test_http_targets_get_one_worker_with_large_batches_per_core(tmp_path: Path) -> None:
    layout = default_layout(_config(tmp_path), cpus=6)
    assert (layout.processes, layout.workers, layout.batch) == (6, 1, 128)


def test_a_target_that_calls_one_at_a_time_gets_threads(tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text("systems:\n  crm: {adapter: stub}\n"
                      "  scm: {adapter: http, settings: {base_url: 'http://127.0.0.1:9', "
                      "operations: {update: {method: POST, path: /u}}}}\n"
                      "routes:\n  - {name: a, from: x.changed, to: [scm.update, crm.note]}\n")
    layout = default_layout(load_config(routes), cpus=2)
    assert (layout.processes, layout.workers, layout.batch) == (2, 4, 32)
    assert "crm" in layout.reason and "scm" not in layout.reason


def test_the_machine_decides_the_process_count(tmp_path: Path) -> None:
    assert default_layout(_config(tmp_path)).processes == usable_cpus() == len(os.sched_getaffinity(0))


@needs_proc_children
@pytest.mark.skipif(usable_cpus() < 2, reason="one usable core: the default is one process, no supervisor")
def test_no_flags_runs_one_process_per_core_and_they_stop_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    with Sink("ok") as sink:
        routes = write_routes(tmp_path, sink.url)
        bus = Bus(tmp_path, routes, f"sqlite:///{tmp_path}/j.sqlite", "--no-http", "--no-triggers")
        try:
            children = bus.wait_children(usable_cpus(), timeout=60)
            bus.wait_running(usable_cpus(), timeout=60)
            assert "workers each (batches of 128)" in bus.stderr()
            os.kill(bus.pid, signal.SIGKILL)  # no chance to stop its children itself
            bus.proc.wait(timeout=10)
            wait_until(lambda: not any(_running(pid) for pid in children), timeout=60,
                       what="the bus processes to stop after their supervisor was killed")
        finally:
            bus.kill_all()
