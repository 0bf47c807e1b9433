"""Events journaled by a process that died before publishing them are found and published (issue 12, item 9).

A real subprocess journals a group of events and is killed (``os._exit``) before its publish (RabbitMQ +
PostgreSQL). ``ironbus status`` then shows them as unpublished; a bus started afterwards publishes them through
its outbox relay and delivers each once. A publish that fails is answered to its caller and its events are
marked refused, never published later. With the embedded queue (SQLite or PostgreSQL) events and their
messages commit in one transaction: a process killed before that commit leaves neither behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bus.envelope import Event
from bus.errors import TransientError
from bus.ingest import Ingestor
from bus.journal import Journal
from bus.outbox import OutboxRelay, outbox_counts
from bus.queue.base import Message
from bus.queue.embedded import EmbeddedQueue
from bus.runtime import Runtime, RuntimeOptions
from bus.tracing import build_trace, render_trace
from tests.helpers.backends import Backend
from tests.helpers.routes import write_routes
from tests.helpers.sink import Sink
from tests.helpers.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]
DIE_BEFORE_PUBLISH = textwrap.dedent("""\
    import os, sys
    from bus.envelope import Event
    from bus.ingest import Ingestor
    from bus.journal import Journal
    from bus.queue.open import open_queue

    journal = Journal(sys.argv[1])
    queue = open_queue(sys.argv[2] or None, journal)
    queue.publish = lambda messages: os._exit(9)  # killed between the journal's commit and the publish
    queue.publish_within = lambda unit, messages: os._exit(9)  # embedded: killed inside the one transaction
    queue.publish_held = lambda unit, messages: os._exit(9)
    events = [Event(type="crm.order_changed", source="ironbus/test", data={"number": f"SO-{i}", "qty": "1",
                    "rev": 1}) for i in range(int(sys.argv[3]))]
    Ingestor(journal, queue).ingest([(e, "webhook") for e in events])
    """)


def test_events_journaled_by_a_dead_process_are_relayed_and_delivered_once(
        backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bus.outbox.GRACE_SECONDS", 0.5)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "IRONBUS_OUTBOX_GRACE": "0.5"}
    Path(tmp_path / "var").mkdir(exist_ok=True)
    died = subprocess.run([sys.executable, "-c", DIE_BEFORE_PUBLISH, backend.journal, backend.broker or "", "11"],
                          env=env, capture_output=True, text=True, timeout=60, check=False)
    assert died.returncode == 9, died.stderr
    if backend.broker is None:  # embedded: the events and their messages would have committed together
        journal = Journal(backend.journal)
        try:
            assert journal.status_counts()["events"] == 0
            assert outbox_counts(journal, grace=0) == {"unpublished": 0, "refused": 0}
            assert EmbeddedQueue(journal.engine).depth() == {"ready": 0, "leased": 0, "delayed": 0}
        finally:
            journal.close()
        return

    def inbound() -> dict[str, int]:
        status = subprocess.run([sys.executable, "-m", "cli", "status", "--json", "--journal", backend.journal,
                                 *(["--broker", backend.broker] if backend.broker else [])], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=60, check=False)
        assert status.returncode == 0, status.stderr
        counts: dict[str, int] = json.loads(status.stdout)["inbound"]
        return counts

    # the rows count as unpublished once they are older than the grace period (0.5 s here)
    wait_until(lambda: inbound() == {"unpublished": 11, "refused": 0}, timeout=30,
               what="status to show the 11 unpublished events")
    with Sink("ok") as sink:
        runtime = Runtime(write_routes(tmp_path, sink.url), journal=backend.journal, broker=backend.broker,
                          options=RuntimeOptions(workers=2, port=None, triggers=False, lease_seconds=5))
        runtime.start()
        try:
            wait_until(lambda: len(sink.delivered) == 22, timeout=60, what="the relayed events to be delivered")
            assert runtime.wait_idle(timeout=30)
        finally:
            runtime.stop()
        # each of the 11 orders went to the SCM and on to the SRM, each exactly once
        assert set(sink.delivered.values()) == {1}
    journal = Journal(backend.journal)
    try:
        assert outbox_counts(journal, grace=0) == {"unpublished": 0, "refused": 0}
    finally:
        journal.close()


class RefusingQueue:
    """A broker that refuses every publish (its messages cannot join the journal's transaction)."""

    def publish(self, messages: list[Message]) -> None:
        raise TransientError("broker down")


def test_refused_events_are_never_relayed(tmp_path: Path) -> None:
    journal = Journal(f"sqlite:///{tmp_path}/j.sqlite")
    ingestor = Ingestor(journal, RefusingQueue())  # type: ignore[arg-type]
    event = Event(type="t", source="s", data={})
    with pytest.raises(TransientError):
        ingestor.ingest([(event, "webhook")])
    ingestor.close()
    assert outbox_counts(journal, grace=0) == {"unpublished": 0, "refused": 1}
    queue = EmbeddedQueue(journal.engine)
    assert OutboxRelay(journal, queue, grace=0).relay_once() == 0
    assert queue.depth()["ready"] == 0
    # trace tells the refused event from accepted ones
    assert "REFUSED (answered 503" in render_trace(build_trace(journal, event_id=event.id), everything=True)
    journal.close()


def test_published_events_leave_no_outbox_rows(tmp_path: Path) -> None:
    journal = Journal(f"sqlite:///{tmp_path}/j.sqlite")
    queue = EmbeddedQueue(journal.engine)
    ingestor = Ingestor(journal, queue)
    for n in range(5):
        ingestor.ingest([(Event(type="t", source="s", data={"n": n}), "send")])
    ingestor.close()
    assert outbox_counts(journal, grace=0) == {"unpublished": 0, "refused": 0}
    assert OutboxRelay(journal, queue, grace=0).relay_once() == 0  # nothing published twice
    assert queue.depth()["ready"] == 5
    journal.close()
