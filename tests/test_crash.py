"""Crash test: ``ironbus run`` killed with SIGKILL at random moments while thousands of events flow.

Given 1,500 order events (3,000 deliveries with their follow-ups) queued, when a real ``ironbus run`` process
is killed with SIGKILL five times at random moments and restarted, then after the last run every delivery
has reached the HTTP sink: none lost. Duplicates are allowed (at-least-once) and reported.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.backends import Backend
from tests.helpers.routes import enqueue, orders, write_routes
from tests.helpers.sink import Sink

EVENTS = 1500
KILLS = 5


def _start(routes: Path, backend: Backend, *extra: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "cli", "run", "--routes", str(routes), "--journal", backend.journal,
           "--no-http", "--no-triggers", "--workers", "4", "--lease", "2", *extra]
    if backend.broker:
        cmd += ["--broker", backend.broker]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["embedded-sqlite", "rabbitmq"], indirect=True)
def test_sigkill_at_random_moments_loses_nothing(tmp_path: Path, backend: Backend) -> None:
    rng = random.Random(int(os.environ.get("IRONBUS_CRASH_SEED", "20261124")))
    # Some milliseconds per delivery keep the work under way long enough for five kills to land in it: the
    # bus alone drains 3,000 deliveries faster than the kills come (it sends a batch's requests together, so
    # the sink's delay is paid per wave, not per delivery).
    with Sink("ok", slow=0.05) as sink:
        routes = write_routes(tmp_path, sink.url)
        events = orders(EVENTS)
        enqueue(backend.journal, backend.broker, events)

        progress = []
        for _ in range(KILLS):
            proc = _start(routes, backend)
            try:
                # kill only once work is under way, then at a random moment inside it
                deadline = time.monotonic() + 30
                before = len(sink.keys())
                while len(sink.keys()) == before and time.monotonic() < deadline and proc.poll() is None:
                    time.sleep(0.02)
                # the kill must land in a running bus with work under way, or the test proves nothing
                assert proc.poll() is None, \
                    f"ironbus run exited early: {proc.stderr.read().decode()[-1500:]}"  # type: ignore[union-attr]
                assert len(sink.keys()) > before, "no delivery within 30 s: nothing was under way to interrupt"
                time.sleep(rng.uniform(0.05, 0.8))
            finally:  # also when an assertion failed: no bus left running after the test
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
            progress.append(len(sink.keys()))

        final = _start(routes, backend, "--until-idle", "--max-seconds", "240")
        try:
            _, err = final.communicate(timeout=300)
        finally:  # also when it did not finish in time: no bus left running after the test
            final.kill()
            final.wait(timeout=10)
        assert final.returncode == 0, err.decode()[-2000:]

        expected = {f"{e.id}:demand:scm.update_demand" for e, _ in events}
        got = sink.keys()
        assert expected <= got, f"{len(expected - got)} demand deliveries lost"
        assert len(got) == 2 * EVENTS, f"expected {2 * EVENTS} deliveries (with follow-ups), got {len(got)}"
        duplicates = sum(n - 1 for n in sink.delivered.values())
        # every kill landed in work under way (the loop saw new deliveries first) and before all was done
        assert progress[-1] < 2 * EVENTS
        print(f"\ncrash test [{backend.name}]: {KILLS} SIGKILLs, progress at kills {progress}, "
              f"{len(got)} deliveries, {duplicates} duplicates, 0 lost")
