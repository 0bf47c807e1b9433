"""The worker survives what it does not expect: a failing emit map, and a bug while handling a batch."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bus.envelope import Event
from bus.journal import Journal
from bus.runtime import Runtime, RuntimeOptions


def routes(tmp_path: Path) -> Path:
    (tmp_path / "emit.yaml").write_text("fields:\n  po: \"number(result_po)\"\n")
    path = tmp_path / "routes.yaml"
    path.write_text(textwrap.dedent("""\
        systems:
          crm: {adapter: stub}
          srm: {adapter: stub, settings: {result: {result_po: "not a number"}}}
        routes:
          - name: order
            from: crm.changed
            to:
              - {operation: srm.create_po, emit: po.created, emit_map: emit.yaml}
        """))
    return path


def run(tmp_path: Path, events: list[Event], lease: float = 10.0) -> Runtime:
    runtime = Runtime(routes(tmp_path), journal=f"sqlite:///{tmp_path}/j.sqlite",
                      options=RuntimeOptions(workers=1, port=None, triggers=False, lease_seconds=lease))
    runtime.start()
    try:
        runtime.ingest([(e, "send") for e in events])
        assert runtime.wait_idle(timeout=30)
        assert all(t.is_alive() for t in runtime._threads), "a runtime thread died"
    finally:
        runtime.stop()
    return runtime


def test_a_failing_emit_map_dead_letters_the_follow_up_and_the_worker_goes_on(tmp_path: Path) -> None:
    first, second = (Event(type="crm.changed", source="t", data={"n": i}) for i in range(2))
    runtime = run(tmp_path, [first, second])
    journal = Journal(f"sqlite:///{tmp_path}/j.sqlite")
    try:
        # both deliveries happened (the target did its work) ...
        assert journal.delivery(f"{first.id}:order:srm.create_po").status == "delivered"  # type: ignore[union-attr]
        assert journal.delivery(f"{second.id}:order:srm.create_po").status == "delivered"  # type: ignore[union-attr]
        # ... and each missing follow-up is in the dead-letter store, saying why
        letters = journal.dead_letters()
        assert len(letters) == 2
        assert all("follow-up 'po.created' not emitted" in r.reason and "number()" in r.reason for r in letters)
        assert sum(w.stats.delivered for w in runtime.workers) == 2
    finally:
        journal.close()


def test_a_bug_while_handling_is_retried_then_dead_lettered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bus.pipeline import Pipeline

    original = Pipeline.process
    poison = Event(type="crm.changed", source="t", data={"boom": True})

    def process(self: Pipeline, event: Event, **kw: object) -> object:
        if event.id == poison.id:
            raise RuntimeError("a bug")
        return original(self, event, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(Pipeline, "process", process)
    healthy = Event(type="crm.changed", source="t", data={"n": 1})
    run(tmp_path, [poison], lease=0.5)
    run(tmp_path, [healthy], lease=0.5)
    journal = Journal(f"sqlite:///{tmp_path}/j.sqlite")
    try:
        letters = [r for r in journal.dead_letters() if r.event_id is None]
        assert len(letters) == 1 and "internal error after 5 tries: RuntimeError: a bug" in letters[0].reason
        assert journal.delivery(f"{healthy.id}:order:srm.create_po").status == "delivered"  # type: ignore[union-attr]
    finally:
        journal.close()
