"""The worker's policy steps (bus.steps), each on its own, and their order."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import structlog

from bus.config import load_config
from bus.envelope import Event
from bus.journal.journal import ParkedAhead
from bus.pipeline import Dispatch, Pipeline
from bus.queue.base import Message
from bus.settle import Batch
from bus.steps import DEFAULT_STEPS, Due, HeldBehindParked, Shadow, Stale, Unchanged, default_steps


class _Lease:
    def __init__(self) -> None:
        self.message = Message(b"{}")
        self.delivery_count = 1

    def ack(self) -> None: ...

    def release(self, delay: float = 0.0, *, park: bool = False) -> None: ...


@pytest.fixture
def pipeline(tmp_path: Path) -> Pipeline:
    (tmp_path / "routes.yaml").write_text(textwrap.dedent("""\
        systems:
          crm: {adapter: stub}
          erp: {adapter: stub}
        routes:
          - name: orders
            from: crm.order_changed
            key: number
            sequence: rev
            skip_unchanged: true
            to: [erp.upsert]
          - name: mirror
            from: crm.order_changed
            mode: shadow
            to: [erp.mirror]
        """))
    return Pipeline(load_config(tmp_path / "routes.yaml"))


def _due(pipeline: Pipeline, route: str, *, rev: int = 5, force: bool = False) -> Due:
    event = Event(type="crm.order_changed", source="t", data={"number": "SO-1", "rev": rev})
    dispatch: Dispatch = pipeline.process(pipeline.assign_key(event), route=route)[0].dispatches[0]
    base: dict[str, Any] = dict(idempotency_key=dispatch.idempotency_key, event_id=event.id, route=route,
                                target=dispatch.target.config.name)
    return Due(_Lease(), dispatch, base, structlog.get_logger(), force)


def test_the_steps_apply_in_the_documented_order() -> None:
    assert [s.name for s in DEFAULT_STEPS] == ["stale", "unchanged", "shadow", "held"]
    assert default_steps(None) == DEFAULT_STEPS


def test_stale_decides_only_an_older_sequence(pipeline: Pipeline) -> None:
    batch = Batch(last_applied={("orders:erp.upsert", "SO-1"): 5})
    assert Stale().decide(_due(pipeline, "orders", rev=5), batch) is None  # a repeat of the version applied
    assert Stale().decide(_due(pipeline, "orders", rev=4), batch) == "stale"
    assert [u.status for u in batch.updates] == ["stale"] and "older than" in str(batch.updates[0].error)


def test_unchanged_skips_the_same_payload_unless_forced(pipeline: Pipeline) -> None:
    due = _due(pipeline, "orders")
    batch = Batch(last_digests={("orders:erp.upsert", "SO-1"): due.dispatch.payload_digest()})
    assert Unchanged().decide(_due(pipeline, "orders", force=True), batch) is None
    assert Unchanged().decide(_due(pipeline, "orders", rev=6), batch) is None  # another payload
    assert Unchanged().decide(due, batch) == "unchanged"


def test_shadow_records_without_sending(pipeline: Pipeline) -> None:
    batch = Batch()
    assert Shadow().decide(_due(pipeline, "orders"), batch) is None
    assert Shadow().decide(_due(pipeline, "mirror"), batch) == "shadow"
    assert [u.status for u in batch.updates] == ["shadow"]


def test_a_later_event_is_held_behind_a_parked_one_of_its_key(pipeline: Pipeline) -> None:
    due = _due(pipeline, "orders")
    ahead = ParkedAhead("earlier:orders:erp.upsert", received_at=100.0, next_attempt_at=160.0)
    batch = Batch(parked_ahead={("orders", "erp.upsert", "SO-1"): ahead},
                  received_at={due.dispatch.source.id: 200.0})
    assert HeldBehindParked().decide(_due(pipeline, "orders", force=True), batch) is None
    assert HeldBehindParked().decide(due, batch) == "parked"
    held = batch.updates[0]
    assert (held.status, held.attempt, held.next_attempt_at) == ("parked", 0, 160.0)
    # an event that arrived before the parked one goes first
    earlier = _due(pipeline, "orders")
    assert HeldBehindParked().decide(earlier, Batch(parked_ahead=batch.parked_ahead,
                                                    received_at={earlier.dispatch.source.id: 50.0})) is None
