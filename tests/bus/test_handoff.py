"""The ingestor's hand-off queue: a timed get returns by its deadline (queue.SimpleQueue's may block for good)."""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import pytest

from bus.handoff import Handoff


def _timed_gets_return(q: Any, seconds: float) -> bool:
    """Put/get, then a get with a tiny timeout, over and over for ``seconds``: True when no timed get blocked
    for more than a second (a watchdog puts a wake-up item to free one that did)."""
    state: dict[str, Any] = {"since": None, "hung": 0, "done": False}

    def watchdog() -> None:
        while not state["done"]:
            time.sleep(0.05)
            since = state["since"]
            if since is not None and time.monotonic() - since > 1.0:
                state["hung"] += 1
                q.put("wake")
                time.sleep(0.5)

    guard = threading.Thread(target=watchdog, daemon=True)
    guard.start()
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end and not state["hung"]:
            q.put(1)
            q.get()
            state["since"] = time.monotonic()
            try:
                q.get(timeout=1e-6)
            except queue.Empty:
                pass
            state["since"] = None
    finally:
        state["done"] = True
        guard.join()
    return not state["hung"]


def test_timed_get_always_returns_by_its_deadline() -> None:
    # queue.SimpleQueue fails this within a few thousand rounds on a loaded host (it waits "for ever" once
    # its deadline passed with its lock free); the hand-off must never block past the deadline.
    assert _timed_gets_return(Handoff(), 3.0)


def test_fifo_and_timeouts() -> None:
    q: Handoff[int] = Handoff()
    with pytest.raises(queue.Empty):
        q.get_nowait()
    started = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.05)
    assert 0.04 <= time.monotonic() - started < 1.0
    for i in range(3):
        q.put(i)
    assert [q.get(), q.get(timeout=0), q.get_nowait()] == [0, 1, 2]


def test_get_without_timeout_wakes_on_put() -> None:
    q: Handoff[str] = Handoff()
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(q.get()))
    reader.start()
    q.put("x")
    reader.join(timeout=5)
    assert got == ["x"]
