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


class _CountingCondition:
    """A Condition whose ``wait`` calls are counted: how often the taker was woken."""

    def __init__(self) -> None:
        self._inner = threading.Condition(threading.Lock())
        self.waits = 0

    def __enter__(self) -> bool:
        return self._inner.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._inner.__exit__(*exc)

    def wait(self, timeout: float | None = None) -> bool:
        self.waits += 1
        return self._inner.wait(timeout)

    def notify(self) -> None:
        self._inner.notify()


def test_gather_takes_what_came_within_the_window_in_one_wake_up() -> None:
    q: Handoff[int] = Handoff()
    counting = _CountingCondition()
    q._ready = counting  # type: ignore[assignment]
    taken: list[int] = []
    started = threading.Event()

    def taker() -> None:
        started.set()
        taken.extend(q.gather(100, time.monotonic() + 0.3))

    thread = threading.Thread(target=taker)
    thread.start()
    started.wait(5)
    for i in range(20):
        q.put(i)
    thread.join(timeout=5)
    assert taken == list(range(20))  # all of them, in order, at the window's end
    assert counting.waits <= 2  # not one wake-up per put (a spurious wake-up may add one)


def test_gather_returns_as_soon_as_the_group_is_full_and_leaves_the_rest() -> None:
    q: Handoff[list[int]] = Handoff(weight=len)
    for size in (3, 4, 5):
        q.put(list(range(size)))
    started = time.monotonic()
    got = q.gather(6, time.monotonic() + 30)
    assert time.monotonic() - started < 5  # full already: no waiting for the deadline
    assert [len(x) for x in got] == [3, 4]  # weight 7: over the limit by the last item taken, no more
    assert len(q.get(timeout=0)) == 5  # the rest stays queued, and its weight with it
    assert q.gather(1, time.monotonic()) == []


def test_an_urgent_put_ends_the_window_at_once() -> None:
    q: Handoff[str | None] = Handoff()
    q.put("a")
    result: list[str | None] = []
    thread = threading.Thread(target=lambda: result.extend(q.gather(100, time.monotonic() + 30)))
    thread.start()
    q.put(None, urgent=True)
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert result == ["a", None]


def test_gather_with_no_room_does_not_wait() -> None:
    q: Handoff[int] = Handoff()
    started = time.monotonic()
    assert q.gather(0, time.monotonic() + 30) == []
    assert time.monotonic() - started < 5
