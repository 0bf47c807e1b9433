"""The serving process's garbage-collector settings (bus.gcsettings): what start-up allocated is frozen, cycles
made afterwards are still collected, and ``IRONBUS_GC=default`` keeps Python's settings."""

from __future__ import annotations

import gc
import signal
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from bus import gcsettings
from tests.helpers.routes import write_routes


@pytest.fixture
def restored_gc() -> Iterator[None]:
    """The test process's collector as it was: nothing stays frozen, the thresholds come back."""
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def _cycle() -> weakref.ref[_Node]:
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_start_up_objects_are_frozen_and_the_thresholds_raised(restored_gc: None,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IRONBUS_GC", raising=False)
    before = _cycle()  # garbage already: start-up's own garbage is collected, not frozen
    kept = [_Node() for _ in range(10)]
    assert gcsettings.settle_for_serving() is True
    assert before() is None
    assert gc.get_freeze_count() >= len(kept)
    assert gc.get_threshold() == (gcsettings.YOUNG_THRESHOLD, *gcsettings.OLDER_THRESHOLDS)


def test_cycles_made_after_start_up_are_still_collected(restored_gc: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IRONBUS_GC", raising=False)
    gcsettings.settle_for_serving()
    later = _cycle()
    assert later() is not None  # a cycle: reference counting alone cannot free it
    gc.collect()
    assert later() is None


def test_ironbus_gc_default_keeps_pythons_settings(restored_gc: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IRONBUS_GC", "default")
    thresholds, frozen = gc.get_threshold(), gc.get_freeze_count()
    assert gcsettings.settle_for_serving() is False
    assert gc.get_threshold() == thresholds
    assert gc.get_freeze_count() == frozen


def test_ironbus_run_settles_the_collector_once_started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cli
    from bus.commands import operations

    calls: list[bool] = []
    monkeypatch.setattr(operations, "settle_for_serving", lambda: calls.append(True) or True)
    routes = write_routes(tmp_path, "http://127.0.0.1:9")  # nothing is sent: the run ends once idle
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = cli.main(["run", "--routes", str(routes), "--journal", f"sqlite:///{tmp_path}/j.sqlite", "--no-http",
                         "--no-triggers", "--processes", "1", "--until-idle", "--max-seconds", "20"])
    finally:  # `ironbus run` installs its own; this test process keeps pytest's
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert code == 0
    assert calls == [True]
