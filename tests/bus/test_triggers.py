from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from adapters.base import Adapter, PollResult, trigger
from bus.config import load_config
from bus.envelope import Event
from bus.errors import ConfigError, PermanentError, TransientError, UnknownNameError
from bus.journal import Journal
from bus.triggers import (
    Batcher,
    MemoryWatermarkStore,
    TriggerPlan,
    TriggerRunner,
    WatermarkStore,
    plan_triggers,
    record_event_id,
)
from tests.helpers.wait import wait_until


class TableAdapter(Adapter):
    """A source whose rows carry a write timestamp; polls re-read an overlap window, like real CRMs must
    (rows committed late can carry a timestamp older than the newest one already seen)."""

    name = "table"

    def __init__(self, system: str, settings: dict[str, Any]) -> None:
        super().__init__(system, settings)
        self.rows: dict[int, int] = {}  # id -> write stamp
        self.overlap = 5
        self.fail_next: Exception | None = None

    @trigger("changed", kind="poll", interval=0.05)
    def changed(self, watermark: str | None) -> PollResult:
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        since = int(watermark) - self.overlap if watermark else -1
        rows = sorted((stamp, rid) for rid, stamp in self.rows.items() if stamp >= since)
        mark = str(max(stamp for stamp, _ in rows)) if rows else watermark
        return PollResult([(f"{rid}@{stamp}", {"id": rid, "stamp": stamp}) for stamp, rid in rows], mark)

    @trigger("hook", kind="webhook")
    def hook(self, request: Any) -> list[Any]:
        return []


class Sink:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.lock = threading.Lock()
        self.fail = False

    def __call__(self, events: list[Event]) -> None:
        if self.fail:
            raise RuntimeError("journal unavailable")
        with self.lock:
            self.events.extend(events)

    def keys(self) -> list[str]:
        return [e.extensions["dedupkey"] for e in self.events]


PLAN = TriggerPlan("crm", "changed", interval=0.05)


@pytest.fixture(params=["memory", "journal"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> WatermarkStore:
    """The in-memory store and the real journal (SQLite): the runner must work with both."""
    if request.param == "memory":
        return MemoryWatermarkStore()
    return Journal(f"sqlite:///{tmp_path / 'journal.db'}")


def runner_for(adapter: Adapter, store: WatermarkStore, sink: Callable[[list[Event]], None]) -> TriggerRunner:
    return TriggerRunner({"crm": adapter}, [PLAN], store, sink)


def test_poll_emits_one_event_per_new_record_then_stores_the_watermark() -> None:
    adapter = TableAdapter("crm", {})
    adapter.rows = {1: 10, 2: 11}
    store, sink = MemoryWatermarkStore(), Sink()
    assert runner_for(adapter, store, sink).run_once(PLAN) == 2
    assert [e.data for e in sink.events] == [{"id": 1, "stamp": 10}, {"id": 2, "stamp": 11}]
    event = sink.events[0]
    assert event.type == "crm.changed" and event.source == "ironbus/crm"
    assert event.id == record_event_id("crm", "changed", "1@10")
    assert store.get_watermark("crm", "changed") == "11"


def test_restart_with_the_same_store_neither_misses_nor_doubles_including_the_overlap(
        any_store: WatermarkStore) -> None:
    adapter = TableAdapter("crm", {})
    store, sink = any_store, Sink()
    adapter.rows = {1: 10, 2: 11, 3: 12}
    runner_for(adapter, store, sink).run_once(PLAN)

    # Written while the bus was down: a row committed late with an OLDER stamp than the watermark (inside
    # the overlap), a row with the same stamp as the watermark, a new row, and an update of row 1.
    adapter.rows.update({4: 9, 5: 12, 6: 20, 1: 21})
    restarted = runner_for(adapter, store, sink)  # new runner, same store
    restarted.run_once(PLAN)
    restarted.run_once(PLAN)  # nothing new: nothing emitted

    assert sorted(sink.keys()) == sorted(["1@10", "2@11", "3@12", "4@9", "5@12", "6@20", "1@21"])
    assert len(sink.keys()) == len(set(sink.keys()))


def test_failing_emit_does_not_advance_the_watermark_so_nothing_is_lost() -> None:
    adapter = TableAdapter("crm", {})
    adapter.rows = {1: 10}
    store, sink = MemoryWatermarkStore(), Sink()
    runner = runner_for(adapter, store, sink)
    sink.fail = True
    with pytest.raises(RuntimeError):
        runner.run_once(PLAN)
    assert store.get_watermark("crm", "changed") is None
    sink.fail = False
    assert runner.run_once(PLAN) == 1
    assert sink.keys() == ["1@10"]


def test_crash_after_emit_re_emits_with_the_same_event_ids() -> None:
    adapter = TableAdapter("crm", {})
    adapter.rows = {1: 10}

    class CrashingStore(MemoryWatermarkStore):
        def set_watermark(self, system: str, trigger: str, value: str, seen_keys: Sequence[str]) -> None:
            raise RuntimeError("killed before the watermark was stored")

    sink = Sink()
    with pytest.raises(RuntimeError):
        runner_for(adapter, CrashingStore(), sink).run_once(PLAN)
    runner_for(adapter, MemoryWatermarkStore(), sink).run_once(PLAN)
    assert len(sink.events) == 2
    assert sink.events[0].id == sink.events[1].id  # the journal can recognise the repeat


def test_duplicate_keys_within_one_poll_are_emitted_once() -> None:
    class Dupes(TableAdapter):
        @trigger("changed", kind="poll")
        def changed(self, watermark: str | None) -> PollResult:
            return PollResult([("a", 1), ("a", 1), ("b", 2)], "x")

    sink = Sink()
    runner_for(Dupes("crm", {}), MemoryWatermarkStore(), sink).run_once(PLAN)
    assert sink.keys() == ["a", "b"]


def test_an_adapter_without_watermarks_relies_on_seen_keys(any_store: WatermarkStore) -> None:
    class OpenItems(TableAdapter):
        """Lists every open item each time, with no watermark: the seen keys alone prevent repeats."""

        @trigger("changed", kind="poll")
        def changed(self, watermark: str | None) -> PollResult:
            assert watermark is None
            return PollResult([(f"item-{i}", {"i": i}) for i in sorted(self.rows)], None)

    adapter, sink = OpenItems("crm", {}), Sink()
    adapter.rows = {1: 0, 2: 0}
    runner = runner_for(adapter, any_store, sink)
    runner.run_once(PLAN)
    adapter.rows[3] = 0
    runner.run_once(PLAN)
    assert sink.keys() == ["item-1", "item-2", "item-3"]


def test_no_watermark_returned_keeps_the_previous_one() -> None:
    class Empty(TableAdapter):
        @trigger("changed", kind="poll")
        def changed(self, watermark: str | None) -> PollResult:
            return PollResult([], None)

    store = MemoryWatermarkStore()
    store.set_watermark("crm", "changed", "42", [])
    runner_for(Empty("crm", {}), store, Sink()).run_once(PLAN)
    assert store.get_watermark("crm", "changed") == "42"


def test_transient_errors_back_off_exponentially_and_honour_retry_after() -> None:
    now = [1000.0]
    adapter = TableAdapter("crm", {})
    runner = TriggerRunner({"crm": adapter}, [PLAN], MemoryWatermarkStore(), Sink(), clock=lambda: now[0])
    adapter.fail_next = TransientError("503")
    assert runner._step(PLAN) == 1001.0
    adapter.fail_next = TransientError("503")
    assert runner._step(PLAN) == 1002.0
    adapter.fail_next = TransientError("429", retry_after=30)
    assert runner._step(PLAN) == 1030.0
    assert runner.status()["crm.changed"]["failures"] == 3
    assert runner._step(PLAN) == pytest.approx(1000.05)  # success: back to the regular interval
    assert runner.status()["crm.changed"]["failures"] == 0


def test_permanent_error_waits_for_the_next_regular_poll() -> None:
    now = [1000.0]
    adapter = TableAdapter("crm", {})
    runner = TriggerRunner({"crm": adapter}, [PLAN], MemoryWatermarkStore(), Sink(), clock=lambda: now[0])
    adapter.fail_next = PermanentError("bad credentials")
    assert runner._step(PLAN) == pytest.approx(1000.05)
    assert runner.status()["crm.changed"]["last_error"] == "bad credentials"


def test_runner_thread_polls_until_stopped() -> None:
    adapter = TableAdapter("crm", {})
    adapter.rows = {1: 1}
    sink = Sink()
    runner = runner_for(adapter, MemoryWatermarkStore(), sink)
    runner.start()
    try:
        wait_until(lambda: len(sink.events) == 1)
        adapter.rows[2] = 2
        wait_until(lambda: len(sink.events) == 2)
        adapter.fail_next = RuntimeError("adapter bug")  # must not kill the thread
        adapter.rows[3] = 3
        wait_until(lambda: len(sink.events) == 3, timeout=8)
    finally:
        runner.stop()
    assert not runner._threads
    assert sink.keys() == ["1@1", "2@2", "3@3"]


def test_cron_plan_next_due() -> None:
    plan = TriggerPlan("crm", "changed", schedules=("*/15 * * * *", "7 * * * *"))
    assert plan.next_due(0.0) == 7 * 60.0  # 00:07 comes before 00:15
    assert TriggerPlan("crm", "changed", interval=30).next_due(100.0) == 130.0


def _write_routes(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "routes.yaml"
    path.write_text(body)
    return path


def test_plan_triggers_from_routes(tmp_path: Path) -> None:
    config = load_config(_write_routes(tmp_path, """
systems:
  crm: {adapter: table, settings: {triggers: {changed: {interval: 2m}}}}
  scm: {adapter: table}
  out: {adapter: stub}
routes:
  - {name: a, from: crm.changed, to: [out.x]}
  - {name: b, from: crm.hook, to: [out.x]}
  - {name: c, from: scm.changed, to: [out.x], timing: {schedule: "*/5 * * * *"}}
  - {name: d, from: order.changed, to: [out.x]}
"""))
    adapters: dict[str, Adapter] = {name: TableAdapter(name, dict(s.settings)) for name, s in config.systems.items()}
    plans = {p.name: p for p in plan_triggers(config, adapters)}
    assert set(plans) == {"crm.changed", "scm.changed"}
    assert plans["crm.changed"].interval == 120.0 and plans["crm.changed"].routes == ("a",)
    assert plans["scm.changed"].schedules == ("*/5 * * * *",)


def test_plan_triggers_rejects_unknown_trigger_and_bad_cron(tmp_path: Path) -> None:
    config = load_config(_write_routes(tmp_path, """
systems:
  crm: {adapter: table}
routes:
  - {name: a, from: crm.chnaged, to: [crm.x]}
"""))
    with pytest.raises(UnknownNameError, match="did you mean 'changed'"):
        plan_triggers(config, {"crm": TableAdapter("crm", {})})
    config = load_config(_write_routes(tmp_path, """
systems:
  crm: {adapter: table}
routes:
  - {name: a, from: crm.changed, to: [crm.x], timing: {schedule: "every five minutes"}}
"""))
    with pytest.raises(ConfigError, match="not a valid cron expression"):
        plan_triggers(config, {"crm": TableAdapter("crm", {})})


# -- Batcher ---------------------------------------------------------------------------------------------

def test_batcher_flushes_full_batches_in_the_adding_thread() -> None:
    flushed: list[list[int]] = []
    batcher: Batcher[int] = Batcher(3, 3600, flushed.append)
    for i in range(7):
        batcher.add(i)
    assert flushed == [[0, 1, 2], [3, 4, 5]]
    assert len(batcher) == 1
    batcher.close()
    assert flushed[-1] == [6]


def test_batcher_flushes_a_partial_batch_after_the_window() -> None:
    flushed: list[list[str]] = []
    batcher: Batcher[str] = Batcher(100, 0.1, flushed.append)
    batcher.add("a")
    batcher.add("b")
    wait_until(lambda: flushed == [["a", "b"]])
    batcher.close()


def test_batcher_keeps_items_when_flush_fails() -> None:
    calls: list[list[int]] = []
    failing = [True]

    def flush(items: list[int]) -> None:
        if failing[0]:
            raise RuntimeError("bulk API down")
        calls.append(items)

    batcher: Batcher[int] = Batcher(2, 3600, flush)
    batcher.add(1)
    with pytest.raises(RuntimeError):
        batcher.add(2)
    assert len(batcher) == 2
    failing[0] = False
    batcher.add(3)
    batcher.close()
    assert calls == [[1, 2], [3]]


def test_batcher_is_thread_safe() -> None:
    flushed: list[list[int]] = []
    lock = threading.Lock()

    def flush(items: list[int]) -> None:
        with lock:
            flushed.append(items)

    batcher: Batcher[int] = Batcher(10, 0.05, flush)
    threads = [threading.Thread(target=lambda base=b: [batcher.add(base * 100 + i) for i in range(50)])
               for b in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    batcher.close()
    items = [i for batch in flushed for i in batch]
    assert sorted(items) == sorted(b * 100 + i for b in range(4) for i in range(50))
    assert all(len(batch) <= 10 for batch in flushed)
