"""Follow-ups whose emit_map failed: the dead letter that keeps them, and re-driving it with ``ironbus dlq retry``.

Given a route whose target emits a follow-up through an emit_map that fails on the target's result, the
delivery stays delivered and a follow-up dead letter keeps the result. When the integrator fixes the map and
runs ``dlq retry``, the follow-up is built from the stored result, journaled with the id the worker would have
given it, and routed — and the target is not called again.
"""

from __future__ import annotations

import json
import sys
import textwrap
import uuid
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
import structlog

import cli
from adapters.base import Adapter
from adapters.stub import StubAdapter
from bus.config import load_config
from bus.envelope import Event
from bus.followups import followup_id, letter_body, parse_letter
from bus.journal import Journal, tables
from bus.journal.records import DeadLetter, DeadLetterRow
from bus.runtime import Runtime, RuntimeOptions, open_adapters

BROKEN = 'fields:\n  po: "number(result_po)"\n'
FIXED = "fields:\n  po: result_po\n  order: \"event('key')\"\n"


def write_routes(tmp_path: Path, emit_map: str = BROKEN) -> Path:
    (tmp_path / "emit.yaml").write_text(emit_map)
    path = tmp_path / "routes.yaml"
    path.write_text(textwrap.dedent("""\
        systems:
          crm: {adapter: stub}
          srm: {adapter: stub, settings: {result: {result_po: "PO-77"}}}
          scm: {adapter: stub}
        routes:
          - name: order
            from: crm.changed
            key: number
            to:
              - {operation: srm.create_po, emit: po.created, emit_map: emit.yaml}
          - name: po
            from: po.created
            to: [scm.record_po]
        """))
    return path


class Bus:
    """The bus of one test: its journal, and stub adapters shared by every run so their calls add up."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.routes = write_routes(tmp_path)
        self.journal_url = f"sqlite:///{tmp_path}/j.sqlite"
        self.adapters: dict[str, Adapter] = open_adapters(load_config(self.routes))

    def run(self, events: list[Event]) -> None:
        runtime = Runtime(self.routes, journal=self.journal_url, adapters=self.adapters,
                          options=RuntimeOptions(workers=1, port=None, triggers=False, lease_seconds=10))
        runtime.start()
        try:
            runtime.ingest([(e, "send") for e in events])
            assert runtime.wait_idle(timeout=30), f"bus not idle after 30s: {runtime.queue.depth()}"
        finally:
            runtime.stop()

    def calls(self, system: str) -> list[str]:
        adapter = self.adapters[system]
        assert isinstance(adapter, StubAdapter)
        return [call.idempotency_key for _, call in adapter.calls]

    def cli(self, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
        capsys.readouterr()  # what the bus logged before
        code = cli.main([*argv, "--journal", self.journal_url])
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        return code, out, err

    def journal(self) -> Journal:
        return Journal(self.journal_url)


@pytest.fixture
def bus(tmp_path: Path) -> Bus:
    return Bus(tmp_path)


@pytest.fixture(autouse=True)
def logs_outlive_capsys(monkeypatch: pytest.MonkeyPatch) -> None:
    """``cli.main`` points structlog at the sys.stderr of the moment and caches loggers. Under capsys that
    stream is closed after the test, while the bus threads of later tests still log: point logs at the
    process's own stderr instead (pytest still captures it)."""
    from bus import logs

    configure = logs.configure_logging

    def configure_logging(level: str = "info", fmt: str = "console") -> None:
        configure(level, fmt)
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.__stderr__))

    monkeypatch.setattr(logs, "configure_logging", configure_logging)


def dead_followup(bus: Bus) -> tuple[Event, DeadLetterRow]:
    """Run one order through the broken emit_map; return the order and its follow-up dead letter."""
    order = Event(type="crm.changed", source="t", data={"number": "SO-9"})
    bus.run([order])
    journal = bus.journal()
    try:
        [letter] = journal.dead_letters()
    finally:
        journal.close()
    assert letter.reason.startswith("follow-up 'po.created' not emitted:") and "number()" in letter.reason
    return order, letter


def test_the_follow_up_id_is_the_one_the_worker_always_gave() -> None:
    # a changed id would emit a follow-up twice when a batch from before an upgrade is handed out again
    namespace = uuid.UUID("6f1c2a52-8a51-4d8e-9d1e-4b8f2b0c9e11")
    assert followup_id("E-1:order:srm.create_po", "po.created") == str(
        uuid.uuid5(namespace, "E-1:order:srm.create_po>po.created"))


def test_a_follow_up_letter_names_its_type_delivery_and_result(bus: Bus) -> None:
    order, letter = dead_followup(bus)
    key = f"{order.id}:order:srm.create_po"
    assert orjson.loads(letter.body) == {"followup": "po.created", "delivery": key, "result": {"result_po": "PO-77"}}
    assert (letter.event_id, letter.route, letter.target) == (order.id, "order", "srm.create_po")
    parsed = parse_letter(letter)
    assert parsed is not None and (parsed.type, parsed.delivery) == ("po.created", key)


@pytest.mark.parametrize("body", [
    Event(type="crm.changed", source="t", id="E-1", data={"delivery": "E-1:order:srm.create_po"}).encode(),
    orjson.dumps({"delivery": "E-2:order:srm.create_po", "result": 1}),  # another delivery's key
    orjson.dumps({"delivery": "E-1:order:srm.create_po", "result": 1, "extra": True}),
    orjson.dumps({"followup": 5, "delivery": "E-1:order:srm.create_po", "result": 1}),
    b"\x00not json{",
    b"[1, 2]",
])
def test_other_letters_are_not_taken_for_follow_ups(body: bytes) -> None:
    row = DeadLetterRow(1, "E-1", "order", "srm.create_po", "follow-up 'x' not emitted: …", "permanent", 0, body,
                        0.0, "dead")
    assert parse_letter(row) is None


def test_a_letter_from_before_follow_ups_were_named_is_recognised() -> None:
    body = orjson.dumps({"delivery": "E-1:order:srm.create_po", "result": {"a": 1}})
    row = DeadLetterRow(1, "E-1", "order", "srm.create_po", "follow-up 'po.created' not emitted: …", "permanent", 0,
                        body, 0.0, "dead")
    parsed = parse_letter(row)
    assert parsed is not None and (parsed.type, parsed.result) == (None, {"a": 1})


def test_retry_after_the_map_is_fixed_emits_the_follow_up_without_calling_the_target_again(
        bus: Bus, capsys: pytest.CaptureFixture[str]) -> None:
    order, letter = dead_followup(bus)
    key = f"{order.id}:order:srm.create_po"
    assert bus.calls("srm") == [key] and bus.calls("scm") == []
    # Given the integrator fixed the emit_map
    (bus.tmp_path / "emit.yaml").write_text(FIXED)
    # When the operator retries the letter
    code, out, err = bus.cli(capsys, "dlq", "retry", str(letter.id), "--routes", str(bus.routes))
    # Then the follow-up is journaled and queued under the id the worker would have given it
    follow_id = followup_id(key, "po.created")
    assert (code, err) == (0, "")
    assert out == (f"emitted 1 follow-up(s) from dead letters: #{letter.id} po.created {follow_id} "
                   "(their deliveries are not repeated)\n")
    journal = bus.journal()
    try:
        follow = journal.get_event(follow_id)
        assert follow is not None
        assert (follow.type, follow.data) == ("po.created", {"po": "PO-77", "order": "SO-9"})
        assert (follow.correlationid, follow.causationid, follow.key) == (order.id, order.id, "SO-9")
        with journal.engine.connect() as conn:
            origin = conn.execute(sa.select(tables.events.c.origin).where(tables.events.c.id == follow_id)).scalar()
        assert origin == "followup"
        retried = journal.dead_letter_by_id(letter.id)
        assert retried is not None and retried.state == "retried"
    finally:
        journal.close()
    # ... and a running bus routes it; the target of the original delivery was called exactly once overall
    bus.run([])
    assert bus.calls("scm") == [f"{follow_id}:po:scm.record_po"]
    assert bus.calls("srm") == [key]
    journal = bus.journal()
    try:
        assert [a.status for a in journal.attempts_for(key)] == ["ok"]
        assert journal.dead_letters() == []
    finally:
        journal.close()


def test_retry_with_the_map_still_broken_keeps_the_letter_dead_and_says_what_to_fix(
        bus: Bus, capsys: pytest.CaptureFixture[str]) -> None:
    order, letter = dead_followup(bus)
    # Given an emit_map that is still wrong, differently
    (bus.tmp_path / "emit.yaml").write_text('fields:\n  po_number: "number(result_po)"\n')
    # When the operator retries
    code, out, err = bus.cli(capsys, "dlq", "retry", "--routes", str(bus.routes))
    # Then it fails (exit 1), naming the letter, the mapping, its field and error, and what to do next
    assert (code, out) == (1, "")
    first, second = err.splitlines()
    assert first.startswith(f"dead letter #{letter.id} stays dead: follow-up 'po.created' not emitted: ")
    assert "emit.yaml: field 'po_number': number()" in first and "PO-77" in first
    assert second.startswith("    next: fix emit_map 'emit.yaml' of route 'order' target srm.create_po (")
    assert second.endswith(f"'ironbus map emit.yaml RESULT.json'; then 'ironbus dlq retry {letter.id}'")
    # ... and the letter stays dead with the new reason; nothing was emitted or delivered again
    journal = bus.journal()
    try:
        again = journal.dead_letter_by_id(letter.id)
        assert again is not None and again.state == "dead" and again.attempts == letter.attempts + 1
        assert "field 'po_number'" in again.reason and again.body == letter.body
        assert journal.get_event(followup_id(f"{order.id}:order:srm.create_po", "po.created")) is None
    finally:
        journal.close()
    bus.run([])
    assert bus.calls("srm") == [f"{order.id}:order:srm.create_po"] and bus.calls("scm") == []


def test_retry_once_emit_when_refuses_the_result_keeps_the_letter_and_says_to_purge(
        bus: Bus, capsys: pytest.CaptureFixture[str]) -> None:
    order, letter = dead_followup(bus)
    # Given the integrator fixed the map and now emits only for results that say the record was created
    (bus.tmp_path / "emit.yaml").write_text(FIXED)
    bus.routes.write_text(bus.routes.read_text().replace(
        "emit: po.created, emit_map: emit.yaml}", "emit: po.created, emit_map: emit.yaml, emit_when: created}"))
    # When the operator retries
    code, out, err = bus.cli(capsys, "dlq", "retry", str(letter.id), "--routes", str(bus.routes))
    # Then nothing is emitted: the stored result (no 'created') no longer makes a follow-up, and the letter says so
    assert (code, out) == (1, "")
    first, second = err.splitlines()
    assert first == (f"dead letter #{letter.id} stays dead: follow-up 'po.created' not emitted: route 'order' target "
                     "srm.create_po's emit_when is now false on the stored result")
    assert second.startswith("    next: purge the letter: the target no longer emits for this result")
    journal = bus.journal()
    try:
        assert journal.get_event(followup_id(f"{order.id}:order:srm.create_po", "po.created")) is None
    finally:
        journal.close()


def test_a_letter_written_before_follow_ups_were_named_is_retried_too(
        bus: Bus, capsys: pytest.CaptureFixture[str]) -> None:
    order, letter = dead_followup(bus)
    key = f"{order.id}:order:srm.create_po"
    journal = bus.journal()
    try:
        # Given the letter as earlier versions wrote it (no "followup" member)
        journal.mark_dead_letters([letter.id], "purged")
        journal.dead_letter([DeadLetter(orjson.dumps({"delivery": key, "result": {"result_po": "PO-77"}}),
                                        letter.reason, order.id, "order", "srm.create_po")])
    finally:
        journal.close()
    (bus.tmp_path / "emit.yaml").write_text(FIXED)
    code, out, _ = bus.cli(capsys, "dlq", "retry", "--routes", str(bus.routes))
    assert code == 0 and out.startswith("emitted 1 follow-up(s)")
    bus.run([])
    assert bus.calls("scm") == [f"{followup_id(key, 'po.created')}:po:scm.record_po"]
    assert bus.calls("srm") == [key]


def test_retry_re_queues_ordinary_letters_and_re_emits_follow_ups_in_one_go(
        bus: Bus, capsys: pytest.CaptureFixture[str]) -> None:
    order, letter = dead_followup(bus)
    journal = bus.journal()
    try:
        # an ordinary dead letter next to the follow-up one: an event that had failed on route 'po'
        stray = Event(type="po.created", source="t", data={"po": "PO-1"})
        journal.record_events([(stray, "send")])
        journal.dead_letter([DeadLetter(stray.encode(), "scm.record_po: 400", stray.id, "po", "scm.record_po")])
    finally:
        journal.close()
    (bus.tmp_path / "emit.yaml").write_text(FIXED)
    code, out, _ = bus.cli(capsys, "dlq", "retry", "--routes", str(bus.routes))
    assert code == 0
    assert out.splitlines()[0].startswith("re-queued 1 dead letter(s)")
    assert out.splitlines()[1].startswith("emitted 1 follow-up(s)")
    bus.run([])
    assert sorted(bus.calls("scm")) == sorted([f"{stray.id}:po:scm.record_po",
                                               f"{followup_id(f'{order.id}:order:srm.create_po', 'po.created')}"
                                               ":po:scm.record_po"])


def test_retry_without_the_routes_file_refuses_before_touching_anything(
        bus: Bus, capsys: pytest.CaptureFixture[str]) -> None:
    _, letter = dead_followup(bus)
    code, _, err = bus.cli(capsys, "dlq", "retry", "--routes", str(bus.tmp_path / "missing.yaml"))
    assert code == 2 and f"dead letter(s) {letter.id} are follow-ups not emitted" in err
    journal = bus.journal()
    try:
        assert [r.id for r in journal.dead_letters()] == [letter.id]
    finally:
        journal.close()


def test_show_says_it_is_a_follow_up_and_of_which_delivery(bus: Bus, capsys: pytest.CaptureFixture[str]) -> None:
    order, letter = dead_followup(bus)
    key = f"{order.id}:order:srm.create_po"
    code, out, _ = bus.cli(capsys, "dlq", "show", str(letter.id))
    assert code == 0
    assert f"  followup: po.created was not emitted after delivery {key} (delivered)\n" in out
    assert f"'ironbus dlq retry {letter.id}' builds it from the stored result" in out
    assert "it does not call the target again" in out
    code, out, _ = bus.cli(capsys, "dlq", "show", str(letter.id), "--json")
    assert json.loads(out)["followup"] == {"type": "po.created", "delivery": key, "delivery_status": "delivered"}


def test_show_says_nothing_of_follow_ups_for_an_ordinary_letter(bus: Bus, capsys: pytest.CaptureFixture[str]) -> None:
    journal = bus.journal()
    try:
        event = Event(type="crm.changed", source="t", data={})
        journal.dead_letter([DeadLetter(letter_body("x", "po.created", 1), "boom", event.id, "order", "srm.create_po")])
        [row] = journal.dead_letters()
    finally:
        journal.close()
    code, out, _ = bus.cli(capsys, "dlq", "show", str(row.id), "--json")
    assert code == 0 and "followup" not in json.loads(out)
