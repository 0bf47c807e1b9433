"""Batch timing on a bulk operation: deliveries go out in bulk calls of up to ``size``, each settled on its own."""

from __future__ import annotations

import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from adapters.base import Adapter, Call, Outcome, operation
from bus.bulk import BulkItem, BulkLanes
from bus.config import load_config
from bus.delivery import Attempted
from bus.errors import PartialFailure, PermanentError, TransientError
from bus.journal import Journal
from bus.pipeline import Dispatch, Pipeline
from bus.queue.base import Lease, Message
from bus.queue.open import open_queue
from bus.runtime import Runtime, RuntimeOptions
from tests.helpers.routes import orders
from tests.helpers.wait import wait_until


class PartlyFailed(PartialFailure):
    """Like a vendor bulk API answering 207: some items done, some refused."""

    def __init__(self, results: list[Any]) -> None:
        super().__init__("some items failed", results)


class BulkSink(Adapter):
    name: ClassVar[str] = "bulk_sink"

    def __init__(self, system: str, settings: dict[str, Any]) -> None:
        super().__init__(system, settings)
        self.calls: list[list[Call]] = []
        self.lock = threading.Lock()

    @operation("upsert", bulk=True)
    def upsert(self, calls: list[Call]) -> list[Outcome]:
        with self.lock:
            self.calls.append(calls)
        refused = [c for c in calls if c.payload.get("qty") == "refuse"]
        if refused:
            raise PartlyFailed([PermanentError("refused by the system") if c in refused
                                else Outcome(reference=c.payload["number"]) for c in calls])
        return [Outcome(reference=c.payload["number"]) for c in calls]


class DownSink(Adapter):
    """A bulk API that is down: every call fails as transient."""

    name: ClassVar[str] = "down_sink"

    def __init__(self, system: str, settings: dict[str, Any]) -> None:
        super().__init__(system, settings)
        self.calls = 0
        self.lock = threading.Lock()

    @operation("upsert", bulk=True)
    def upsert(self, calls: list[Call]) -> list[Outcome]:
        with self.lock:
            self.calls += 1
        raise TransientError("bulk API unavailable")


def routes(tmp_path: Path, *, size: int = 10, retry: str = "{}") -> Path:
    path = tmp_path / "routes.yaml"
    path.write_text(textwrap.dedent(f"""\
        systems:
          crm: {{adapter: stub}}
          erp: {{adapter: stub}}
        routes:
          - name: bulk
            from: crm.order_changed
            to: [erp.upsert]
            timing: {{batch: {{size: {size}, window: 0.2s}}}}
            retry: {retry}
        """))
    return path


def run(tmp_path: Path, events: list[Any], runtimes: list[Runtime] | None = None) -> tuple[BulkSink, Journal]:
    sink = BulkSink("erp", {})
    runtime = Runtime(routes(tmp_path), journal=f"sqlite:///{tmp_path}/j.sqlite",
                      options=RuntimeOptions(workers=2, port=None, triggers=False, lease_seconds=10),
                      adapters={"erp": sink})
    runtime.start()
    try:
        runtime.ingest(events)
        assert runtime.wait_idle(timeout=30)
    finally:
        runtime.stop()
    if runtimes is not None:
        runtimes.append(runtime)
    return sink, Journal(f"sqlite:///{tmp_path}/j.sqlite")


def test_deliveries_are_sent_in_bulk_calls_of_at_most_size(tmp_path: Path) -> None:
    events = orders(25)
    sink, journal = run(tmp_path, events)
    try:
        sizes = [len(c) for c in sink.calls]
        assert sum(sizes) == 25 and max(sizes) <= 10
        assert len(sizes) < 25  # really batched, not one by one
        keys = {c.idempotency_key for batch in sink.calls for c in batch}
        assert keys == {f"{e.id}:bulk:erp.upsert" for e, _ in events}
        assert all(journal.delivery(k).status == "delivered" for k in keys)  # type: ignore[union-attr]
    finally:
        journal.close()


def test_a_partly_failed_bulk_call_settles_each_delivery_by_its_result(tmp_path: Path) -> None:
    events = orders(4)
    bad = events[2][0].with_(data={"number": "SO-bad", "qty": "refuse"})
    events[2] = (bad, "send")
    sink, journal = run(tmp_path, events)
    try:
        statuses = {e.id: journal.delivery(f"{e.id}:bulk:erp.upsert").status for e, _ in events}  # type: ignore[union-attr]
        assert statuses.pop(bad.id) == "dead"
        assert set(statuses.values()) == {"delivered"}
        letters = journal.dead_letters()
        assert [(r.event_id, r.reason) for r in letters] == [(bad.id, "refused by the system")]
    finally:
        journal.close()


def test_a_batch_that_fills_up_inside_a_worker_is_still_acked(tmp_path: Path) -> None:
    # Given exactly one full batch (size 10): the lane flushes in the worker's own thread, before the worker
    # has finished its batch; the queue messages must still be acked (the bus goes idle, nothing re-delivered).
    events = orders(10)
    runtimes: list[Runtime] = []
    sink, journal = run(tmp_path, events, runtimes)
    try:
        assert sum(len(c) for c in sink.calls) == 10
        # no message came back after its lease expired (it would be skipped as already delivered)
        assert sum(w.stats.skipped for w in runtimes[0].workers) == 0
        assert sum(w.stats.events for w in runtimes[0].workers) == 10
    finally:
        journal.close()


def test_the_lanes_count_their_deliveries_on_a_recorder_of_their_own(tmp_path: Path) -> None:
    # Given bulk deliveries recorded by the lanes, on timer threads and on the threads of both workers
    runtimes: list[Runtime] = []
    sink, journal = run(tmp_path, orders(25), runtimes)
    journal.close()
    runtime = runtimes[0]
    # Then no running worker lends its counters to the lanes, and the run counts each delivery once
    assert runtime.lanes.recorder is not None
    assert all(runtime.lanes.recorder is not w for w in runtime.workers)
    assert sum(w.stats.delivered for w in runtime.workers) == 0
    assert sum(s.delivered for s in runtime.stats()) == 25


@dataclass
class FakeLease:
    message: Message = field(default_factory=lambda: Message(b"{}"))
    delivery_count: int = 1

    def ack(self) -> None: ...

    def release(self, delay: float = 0.0, *, park: bool = False) -> None: ...


class Meeting(Adapter):
    """A bulk API whose calls wait for each other, so two lanes are surely in flight at the same time."""

    name: ClassVar[str] = "meeting"

    def __init__(self, system: str, barrier: threading.Barrier) -> None:
        super().__init__(system, {})
        self.barrier = barrier

    @operation("upsert", bulk=True)
    def upsert(self, calls: list[Call]) -> list[Outcome]:
        self.barrier.wait()
        return [Outcome() for _ in calls]


class PlainCounter:
    """A recorder whose count, like :class:`~bus.worker.WorkerStats`, is only right if calls never overlap."""

    def __init__(self) -> None:
        self.recorded = 0
        self.inside = 0
        self.most_inside = 0
        self.changed = threading.Condition()

    def record(self, lease: Lease, dispatch: Dispatch, attempted: Attempted, batch: Any,
               base: dict[str, Any], log_: Any) -> None:
        with self.changed:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
            self.changed.notify_all()
            seen = self.recorded
            if seen == 0:
                # hold the first call open: a lane recording in parallel would join it here at once
                self.changed.wait_for(lambda: self.inside > 1, timeout=0.5)
            self.recorded = seen + 1
            self.inside -= 1

    def settle_journal(self, batch: Any) -> None: ...


def test_lanes_flushing_at_once_record_one_at_a_time(tmp_path: Path) -> None:
    # Given two lanes (one per target) that flush at the same moment, each in the thread that filled it
    path = tmp_path / "routes.yaml"
    path.write_text(textwrap.dedent("""\
        systems:
          crm: {adapter: stub}
          erp: {adapter: stub}
          wms: {adapter: stub}
        routes:
          - name: bulk
            from: crm.order_changed
            to: [erp.upsert, wms.upsert]
            timing: {batch: {size: 1, window: 10s}}
        """))
    config = load_config(path)
    barrier = threading.Barrier(2, timeout=10)
    journal = Journal(f"sqlite:///{tmp_path}/j.sqlite")
    lanes = BulkLanes(config, {"erp": Meeting("erp", barrier), "wms": Meeting("wms", barrier)},
                      open_queue(None, journal), lease_seconds=60)
    counter = PlainCounter()
    lanes.recorder = counter
    [result] = Pipeline(config).process(orders(1)[0][0])
    try:
        # When both flush
        with ThreadPoolExecutor(2) as pool:
            futures = []
            for d in result.dispatches:
                lane = lanes.lane("bulk", d.target_name)
                assert lane is not None
                futures.append(pool.submit(lane.add, BulkItem(d, FakeLease(), 0)))
            for future in futures:
                future.result()
        # Then the recorder saw one call at a time, and counted both
        assert (counter.most_inside, counter.recorded) == (1, 2)
    finally:
        lanes.close()
        journal.close()


def test_stopping_while_a_lane_waits_to_retry_returns_promptly_and_loses_nothing(tmp_path: Path) -> None:
    # Given a lane whose bulk call failed and that now waits a minute before its next quick retry
    url = f"sqlite:///{tmp_path}/j.sqlite"
    events = orders(5)
    down = DownSink("erp", {})
    slow_retry = "{attempts: 3, backoff: fixed, initial_delay: 60s, max_delay: 60s}"
    runtime = Runtime(routes(tmp_path, size=5, retry=slow_retry), journal=url,
                      options=RuntimeOptions(workers=1, port=None, triggers=False, lease_seconds=2),
                      adapters={"erp": down})
    runtime.start()
    try:
        runtime.ingest(events)
        wait_until(lambda: down.calls == 1, timeout=10, what="the lane's first bulk call")
    finally:
        # When the bus stops
        started = time.monotonic()
        runtime.stop()
    # Then it does not sit out the backoff, nor fire the remaining retries
    assert time.monotonic() - started < 3.0
    assert down.calls == 1
    # and nothing was settled: no delivery journaled (not parked, not dead), no message acked
    keys = [f"{e.id}:bulk:erp.upsert" for e, _ in events]
    journal = Journal(url)
    try:
        assert [journal.delivery(k) for k in keys] == [None] * 5
        assert journal.dead_letters() == []
    finally:
        journal.close()
    # When the next run finds the system back (the stopped run's messages come back once their leases expire)
    sink, journal = run(tmp_path, [])
    try:
        # Then each delivery is made once
        assert sorted(c.idempotency_key for batch in sink.calls for c in batch) == sorted(keys)
        assert all(journal.delivery(k).status == "delivered" for k in keys)  # type: ignore[union-attr]
    finally:
        journal.close()
