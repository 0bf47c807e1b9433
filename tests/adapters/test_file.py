"""The file adapter: drop-folder trigger (through the real TriggerRunner) and atomic writes."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from adapters.base import Adapter
from adapters.file import FileAdapter, MalformedFile, parse_file
from bus.envelope import Event
from bus.errors import PermanentError, TransientError
from bus.testing import AdapterContract, make_call
from bus.triggers import MemoryWatermarkStore, TriggerPlan, TriggerRunner

PLAN = TriggerPlan("files", "dropped", interval=1)


def drop(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    old = path.stat().st_mtime - 60  # pretend it was written a minute ago (settled)
    os.utime(path, (old, old))
    return path


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    folder = tmp_path / "inbox"
    folder.mkdir()
    return folder


def inbox_adapter(inbox: Path, **extra: Any) -> FileAdapter:
    adapter = FileAdapter("files", {"inbox": str(inbox), **extra})
    adapter.open()
    return adapter


class Emitted:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.fail = False

    def __call__(self, events: list[Event]) -> None:
        if self.fail:
            raise RuntimeError("journal down")
        self.events.extend(events)


# -- inbound -------------------------------------------------------------------------------------------

def test_each_format_gives_its_payloads(inbox: Path) -> None:
    drop(inbox, "a.json", '{"order": 1}')
    drop(inbox, "b.json", '[{"order": 2}, {"order": 3}]')
    drop(inbox, "c.jsonl", '{"order": 4}\n\n{"order": 5}\n')
    drop(inbox, "d.csv", "order,qty\n6,10\n\n7,20\n")
    result = inbox_adapter(inbox).poll("dropped", None)
    assert [p for _, p in result.records] == [
        {"order": 1}, {"order": 2}, {"order": 3}, {"order": 4}, {"order": 5},
        {"order": "6", "qty": "10"}, {"order": "7", "qty": "20"}]
    keys = [k for k, _ in result.records]
    assert len(set(keys)) == len(keys)
    assert keys[-1].startswith("d.csv@") and keys[-1].endswith("#4")  # CSV keys carry the line number


def test_files_move_to_processed_only_after_the_watermark_came_back(inbox: Path) -> None:
    drop(inbox, "a.json", '{"order": 1}')
    adapter = inbox_adapter(inbox)
    first = adapter.poll("dropped", None)
    assert (inbox / "a.json").exists()  # not yet: the events are not journaled yet
    # The bus did not store the watermark (crash): the same records come back, same keys.
    again = adapter.poll("dropped", None)
    assert [k for k, _ in again.records] == [k for k, _ in first.records]
    # The bus stored it: now the file is moved and nothing is read twice.
    after = adapter.poll("dropped", first.watermark)
    assert after.records == []
    assert not (inbox / "a.json").exists() and (inbox / "processed" / "a.json").exists()


def test_a_file_rewritten_after_it_was_read_is_read_again(inbox: Path) -> None:
    drop(inbox, "a.json", '{"v": 1}')
    adapter = inbox_adapter(inbox)
    first = adapter.poll("dropped", None)
    path = drop(inbox, "a.json", '{"v": 2, "more": true}')
    os.utime(path, ns=(path.stat().st_mtime_ns + 10**9, path.stat().st_mtime_ns + 10**9))
    second = adapter.poll("dropped", first.watermark)
    assert [p for _, p in second.records] == [{"v": 2, "more": True}]


@pytest.mark.parametrize(("name", "text", "line", "reason"), [
    ("bad.csv", "order,qty\n1,2\n3,4,5\n", 3, "expected 2 fields"),
    ("bad.json", '{\n  "order": 1,\n  "qty": \n}', 4, "invalid JSON"),
    ("bad.jsonl", '{"a": 1}\n{"a": \n', 2, "invalid JSON"),
    ("empty.csv", "", 1, "header row"),
    ("dup.csv", "a,a\n1,2\n", 1, "duplicate"),
])
def test_malformed_file_goes_to_failed_with_an_explanation(inbox: Path, name: str, text: str, line: int,
                                                           reason: str) -> None:
    drop(inbox, name, text)
    drop(inbox, "good.json", '{"ok": true}')
    result = inbox_adapter(inbox).poll("dropped", None)
    assert [p for _, p in result.records] == [{"ok": True}]  # the good file still flows
    assert not (inbox / name).exists()
    assert (inbox / "failed" / name).read_text() == text  # kept intact
    report = (inbox / "failed" / f"{name}.error.txt").read_text()
    assert f"line {line}" in report and reason in report and name in report


def test_bad_encoding_names_the_line() -> None:
    with pytest.raises(MalformedFile) as info:
        parse_file("x.csv", b"a,b\n1,2\n\xff,3\n")
    assert info.value.line == 3 and "utf-8" in info.value.reason


def test_unsettled_hidden_and_in_progress_files_are_left_alone(inbox: Path) -> None:
    (inbox / "fresh.json").write_text('{"a": 1}')  # just written
    drop(inbox, ".hidden.json", "{}")
    drop(inbox, "upload.json.part", "{")
    drop(inbox, "notes.txt", "hello")
    adapter = inbox_adapter(inbox, settle=30)
    assert adapter.poll("dropped", None).records == []
    assert inbox_adapter(inbox, settle=0).poll("dropped", None).records[0][1] == {"a": 1}


def test_source_field_and_max_files(inbox: Path) -> None:
    for i in range(3):
        drop(inbox, f"{i}.csv", "a\nx\n")
    result = inbox_adapter(inbox, source_field="_src", max_files=2).poll("dropped", None)
    assert [p["_src"] for _, p in result.records] == [{"file": "0.csv", "line": 2}, {"file": "1.csv", "line": 2}]


def test_through_the_trigger_runner_with_a_restart_and_a_failed_emit(inbox: Path) -> None:
    drop(inbox, "a.csv", "id\n1\n2\n")
    store, sink = MemoryWatermarkStore(), Emitted()
    adapter = inbox_adapter(inbox)
    runner = TriggerRunner({"files": adapter}, [PLAN], store, sink)
    sink.fail = True
    with pytest.raises(RuntimeError):
        runner.run_once(PLAN)
    sink.fail = False
    runner.run_once(PLAN)
    drop(inbox, "b.json", '{"id": "3"}')
    restarted = TriggerRunner({"files": inbox_adapter(inbox)}, [PLAN], store, sink)
    restarted.run_once(PLAN)
    restarted.run_once(PLAN)
    assert [e.data["id"] for e in sink.events] == ["1", "2", "3"]
    assert sorted(p.name for p in (inbox / "processed").iterdir()) == ["a.csv", "b.json"]
    assert [p.name for p in inbox.iterdir() if p.is_file()] == []


# -- outbound ------------------------------------------------------------------------------------------

def test_write_json_named_by_idempotency_key_and_idempotent(tmp_path: Path) -> None:
    adapter = FileAdapter("out", {"outbox": str(tmp_path / "out")})
    outcome = adapter.call("write", make_call({"po": "PO-1"}, idempotency_key="evt-1:out.write"))
    assert outcome.reference == "evt-1_out.write.json"
    target = tmp_path / "out" / "evt-1_out.write.json"
    assert json.loads(target.read_text()) == {"po": "PO-1"}
    adapter.call("write", make_call({"po": "PO-1"}, idempotency_key="evt-1:out.write"))  # a retry
    assert os.listdir(tmp_path / "out") == ["evt-1_out.write.json"]  # no duplicates, no temp files left


def test_write_csv_with_a_name_template(tmp_path: Path) -> None:
    adapter = FileAdapter("out", {"outbox": str(tmp_path), "format": "csv", "name": "po-{{ po }}.csv",
                                  "columns": ["po", "qty", "tags"]})
    with pytest.raises(PermanentError, match="null or missing"):  # a list has no single 'po'
        adapter.call("write", make_call([{"po": "7", "qty": 2, "tags": ["a"]}, {"po": "7", "qty": 3}]))
    adapter = FileAdapter("out", {"outbox": str(tmp_path), "format": "csv", "name": "po-{{ [0].po }}.csv",
                                  "columns": ["po", "qty", "tags"]})
    adapter.call("write", make_call([{"po": "7", "qty": 2, "tags": ["a"]}, {"po": "7", "qty": 3}]))
    rows = list(csv.reader(io.StringIO((tmp_path / "po-7.csv").read_text())))
    assert rows == [["po", "qty", "tags"], ["7", "2", '["a"]'], ["7", "3", ""]]


@pytest.mark.parametrize("name", ["../escape.json", ".hidden", "a/b.json"])
def test_write_refuses_names_that_leave_the_folder(tmp_path: Path, name: str) -> None:
    adapter = FileAdapter("out", {"outbox": str(tmp_path / "out"), "name": "{{ n }}"})
    with pytest.raises(PermanentError, match="not a plain file name"):
        adapter.call("write", make_call({"n": name}))
    assert not (tmp_path / "escape.json").exists()


def test_write_errors_are_classified(tmp_path: Path) -> None:
    missing = FileAdapter("out", {"outbox": str(tmp_path / "mount"), "create_dirs": False})
    with pytest.raises(TransientError, match="mount"):
        missing.call("write", make_call({"a": 1}))
    too_long = FileAdapter("out", {"outbox": str(tmp_path), "name": "{{ n }}"})
    with pytest.raises(PermanentError):
        too_long.call("write", make_call({"n": "x" * 300}))
    csv_adapter = FileAdapter("out", {"outbox": str(tmp_path), "format": "csv"})
    with pytest.raises(PermanentError, match="object"):
        csv_adapter.call("write", make_call("just a string"))


class TestFileContract(AdapterContract):
    @pytest.fixture
    def adapter_factory(self) -> Callable[[Mapping[str, Any]], Adapter]:
        return lambda settings: FileAdapter("files", settings)

    @pytest.fixture
    def good_settings(self, tmp_path: Path) -> Mapping[str, Any]:
        self.tmp = tmp_path
        (tmp_path / "in").mkdir()
        return {"inbox": str(tmp_path / "in"), "outbox": str(tmp_path / "out"), "settle": 0}

    def junk_settings(self, good_settings: Mapping[str, Any]) -> list[Any]:
        return [{}, {"settle": 0}, {**good_settings, "format": "xml"}, {**good_settings, "delimiter": ";;"}]

    def arrange_success(self, adapter: Adapter) -> tuple[str, Any]:
        return "write", {"order": "SO-1"}

    def arrange_transient(self, adapter: Adapter) -> tuple[str, Any]:
        assert isinstance(adapter, FileAdapter)
        adapter.outbox, adapter.create_dirs = self.tmp / "unmounted", False
        return "write", {"order": "SO-1"}

    def arrange_permanent(self, adapter: Adapter) -> tuple[str, Any]:
        assert isinstance(adapter, FileAdapter)
        adapter.format = "csv"
        return "write", ["not", "objects"]

    def observed_idempotency_key(self, adapter: Adapter) -> str | None:
        (written,) = os.listdir(self.tmp / "out")
        return written.removesuffix(".json")

    def arrange_poll(self, adapter: Adapter) -> str:
        drop(self.tmp / "in", "orders.csv", "order,qty\nSO-1,2\nSO-2,3\n")
        return "dropped"


def test_a_file_taken_away_by_another_process_is_skipped(inbox: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    drop(inbox, "a.json", '{"a": 1}')
    drop(inbox, "b.json", '{"b": 2}')
    adapter = inbox_adapter(inbox)
    first = adapter.poll("dropped", None)
    listed = adapter._candidates()
    (inbox / "a.json").rename(inbox / "elsewhere.txt")  # gone between the listing and the read
    monkeypatch.setattr(adapter, "_candidates", lambda: listed)
    result = adapter.poll("dropped", first.watermark)  # also settles a.json, which is no longer there
    assert [p for _, p in result.records] == []
    assert (inbox / "processed" / "b.json").exists()
