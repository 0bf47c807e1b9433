"""Crash safety: consumers SIGKILLed at random moments while messages flow lose nothing."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from queue_backends import Backend

from bus.queue.base import Message
from tests.helpers.wait import wait_until

TOTAL = 2000
CONSUMER = Path(__file__).with_name("crash_consumer.py")


def processed(out: Path) -> tuple[int, set[str]]:
    """(rows recorded, distinct bodies recorded) by the consumers so far."""
    if not out.exists():
        return 0, set()
    with sqlite3.connect(out, timeout=10) as db:
        try:
            bodies = [row[0] for row in db.execute("SELECT body FROM processed")]
        except sqlite3.OperationalError:  # the first child has not created the table yet
            return 0, set()
    return len(bodies), set(bodies)


@pytest.mark.slow
def test_sigkilled_consumers_lose_no_message(crash_backend: Backend, tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("IRONBUS_CRASH_SEED", "20261125")))
    out = tmp_path / "processed.sqlite"
    queue = crash_backend.open()

    def produce() -> None:  # paced, so messages keep flowing across several kills
        for start in range(0, TOTAL, 50):
            queue.publish([Message(str(n).encode(), key=f"K{n % 37}" if n % 3 else None)
                           for n in range(start, start + 50)])
            time.sleep(0.05)

    producer = threading.Thread(target=produce)
    producer.start()
    command = [sys.executable, str(CONSUMER), *crash_backend.child_args(), "--out", str(out), "--lease", "1.5"]
    try:
        for _ in range(5):
            child = subprocess.Popen(command, stdout=subprocess.DEVNULL)
            target = processed(out)[0] + rng.randint(60, 300)

            def progressed(t: int = target) -> bool:
                # the target can lie beyond what is left once the producer is done: then all is processed
                rows, distinct = processed(out)
                return rows >= t or len(distinct) >= TOTAL

            wait_until(progressed, timeout=60, what=f"the consumer to record {target} messages")
            time.sleep(rng.uniform(0, 0.03))  # a random moment: mid-batch, between record and ack …
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=10)
        producer.join(timeout=60)
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        wait_until(lambda: len(processed(out)[1]) >= TOTAL, timeout=90,
                   what=f"all {TOTAL} messages to be processed")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        producer.join(timeout=60)
    rows, distinct = processed(out)
    assert distinct == {str(n) for n in range(TOTAL)}  # at least once: nothing lost
    assert rows >= TOTAL
