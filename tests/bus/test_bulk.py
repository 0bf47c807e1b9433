"""Batch timing on a bulk operation: deliveries go out in bulk calls of up to ``size``, each settled on its own."""

from __future__ import annotations

import textwrap
import threading
from pathlib import Path
from typing import Any, ClassVar

from adapters.base import Adapter, Call, Outcome, operation
from bus.errors import PermanentError
from bus.journal import Journal
from bus.runtime import Runtime, RuntimeOptions
from tests.helpers.routes import orders


class PartlyFailed(PermanentError):
    """Like a vendor bulk API answering 207: some items done, some refused."""

    def __init__(self, results: list[Any]) -> None:
        super().__init__("some items failed")
        self.results = results


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


def routes(tmp_path: Path) -> Path:
    path = tmp_path / "routes.yaml"
    path.write_text(textwrap.dedent("""\
        systems:
          crm: {adapter: stub}
          erp: {adapter: stub}
        routes:
          - name: bulk
            from: crm.order_changed
            to: [erp.upsert]
            timing: {batch: {size: 10, window: 0.2s}}
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
