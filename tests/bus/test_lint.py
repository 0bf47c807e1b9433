"""ironbus lint: every cross-reference problem of routes.yaml, each at the line that causes it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from textwrap import dedent
from typing import Any, ClassVar

import pytest

from adapters.base import Adapter, Call, Outcome, PollResult, operation, trigger
from bus import plugins
from bus.errors import Location
from bus.lint import Issue, adapter_operations, lint

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "routes"


class ProbeAdapter(Adapter):
    """A small adapter with a trigger, a fixed set of operations and a settings schema, for lint to check."""

    name: ClassVar[str] = "lintprobe"
    settings_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["url"],
        "properties": {
            "url": {"type": "string", "pattern": "^https?://"},
            "password": {"type": "string", "minLength": 20},
            "timeout": {"type": "number", "maximum": 60},
        },
    }

    @trigger("sale_changed", kind="poll")
    def sale_changed(self, watermark: str | None) -> PollResult:
        return PollResult([], watermark)

    @operation()
    def update_demand(self, call: Call) -> Outcome:
        return Outcome()


@pytest.fixture(autouse=True)
def probe_adapter(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(plugins._registered, "lintprobe", ProbeAdapter)
    yield


def _lint(tmp_path: Path, text: str, env: dict[str, str] | None = None,
          files: dict[str, str] | None = None) -> list[Issue]:
    for name, body in (files or {}).items():
        path = tmp_path / "mappings" / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(dedent(body).lstrip("\n"), encoding="utf-8")
    routes = tmp_path / "routes.yaml"
    routes.write_text(dedent(text).lstrip("\n"), encoding="utf-8")
    return lint(routes, env=env or {})


def _at(tmp_path: Path, line: int, column: int) -> Location:
    return Location(str(tmp_path / "routes.yaml"), line, column)


def test_the_order_flow_fixture_is_clean() -> None:
    assert lint(FIXTURES / "order_flow" / "routes.yaml", env={}) == []


def test_unknown_adapter_suggests_at_the_adapter_line(tmp_path: Path) -> None:
    issues = _lint(tmp_path, """
        systems:
          crm:
            adapter: lintprobe
            settings: {url: "https://crm"}
          scm:
            adapter: lintprob
        routes: []
    """)
    assert issues == [Issue("error", "system 'scm': unknown adapter 'lintprob'; did you mean 'lintprobe'?",
                            _at(tmp_path, 6, 5))]


def test_unknown_operation_on_an_adapter_and_on_a_stub_with_operations(tmp_path: Path) -> None:
    issues = _lint(tmp_path, """
        systems:
          scm: {adapter: lintprobe, settings: {url: "https://scm"}}
          crm: {adapter: stub, settings: {operations: [add_note]}}
          any: {adapter: stub}
        routes:
          - name: r
            from: scm.sale_changed
            to:
              - scm.update_demnd
              - operation: crm.add_notes
              - any.whatever_you_like
    """)
    assert [(str(i.location), i.message) for i in issues] == [
        (str(_at(tmp_path, 9, 9)), "system 'scm' (adapter 'lintprobe'): unknown operation 'update_demnd'; "
                                   "did you mean 'update_demand'?"),
        (str(_at(tmp_path, 10, 9)), "system 'crm' (adapter 'stub'): unknown operation 'add_notes'; "
                                    "did you mean 'add_note'?"),
    ]


def test_unknown_system_in_to(tmp_path: Path) -> None:
    issues = _lint(tmp_path, """
        systems:
          crm: {adapter: stub}
        routes:
          - name: r
            from: order.changed
            to: [crm.note, notfy.send]
    """)
    assert issues == [Issue("error", "unknown system 'notfy'; known: crm", _at(tmp_path, 6, 20))]


def test_unknown_trigger(tmp_path: Path) -> None:
    issues = _lint(tmp_path, """
        systems:
          crm: {adapter: lintprobe, settings: {url: "https://crm"}}
        routes:
          - {name: r, from: crm.sale_changd, to: [crm.update_demand]}
    """)
    assert issues == [Issue("error", "system 'crm' (adapter 'lintprobe'): unknown trigger 'sale_changd'; "
                                     "did you mean 'sale_changed'?", _at(tmp_path, 4, 15))]


def test_missing_mapping_files_on_route_and_targets(tmp_path: Path) -> None:
    issues = _lint(tmp_path, """
        systems:
          crm: {adapter: stub}
        routes:
          - name: r
            from: order.changed
            map: mappings/nope.yaml
            to:
              - operation: crm.note
                map: mappings/note.yaml
                emit: note.added
                emit_map: mappings/gone.yaml
    """)
    messages = [(i.location.line if i.location else None, i.message) for i in issues]
    assert messages == [
        (6, f"route 'r': map file 'mappings/nope.yaml' not found (looked at {tmp_path / 'mappings/nope.yaml'})"),
        (8, f"route 'r': map file 'mappings/note.yaml' not found (looked at {tmp_path / 'mappings/note.yaml'})"),
        (8, f"route 'r': emit_map file 'mappings/gone.yaml' not found (looked at {tmp_path / 'mappings/gone.yaml'})"),
    ]


def test_a_broken_mapping_file_is_reported_in_that_file(tmp_path: Path) -> None:
    issues = _lint(tmp_path, """
        systems:
          crm: {adapter: stub}
        routes:
          - {name: r, from: order.changed, map: mappings/m.yaml, to: [crm.note]}
    """, files={"m.yaml": """
        fields:
          id: number
          status: "value_map('nope', state)"
    """})
    assert len(issues) == 1
    assert issues[0].location == Location(str(tmp_path / "mappings" / "m.yaml"), 3, 3)
    assert "unknown value map 'nope'" in issues[0].message


def test_expressions_that_do_not_compile(tmp_path: Path) -> None:
    issues = _lint(tmp_path, """
        systems:
          crm: {adapter: stub}
        routes:
          - name: r
            from: order.changed
            filter: "state != 'draft"
            key: "order_id[["
            to:
              - operation: crm.note
                when: "status =="
    """)
    assert [i.location.line if i.location else None for i in issues] == [6, 7, 9]
    assert issues[0].message.startswith("route 'r' filter: expression \"state != 'draft\" does not compile: ")
    assert issues[1].message.startswith("route 'r' key: expression 'order_id[[' does not compile: ")
    assert issues[2].message.startswith("route 'r' target crm.note when: expression 'status ==' does not compile")


def test_emit_when_needs_emit_and_must_compile(tmp_path: Path) -> None:
    issues = _lint(tmp_path, """
        systems:
          crm: {adapter: stub}
        routes:
          - name: r
            from: order.changed
            to:
              - operation: crm.note
                emit_when: created
              - operation: crm.other
                emit: note.added
                emit_when: "created &&"
    """)
    assert [(i.severity, i.location.line if i.location else None) for i in issues] == [("error", 7), ("error", 9)]
    assert issues[0].message == ("route 'r' target crm.note: emit_when needs 'emit' (the follow-up event it lets "
                                 "through)")
    assert issues[1].message.startswith("route 'r' target crm.other emit_when: expression 'created &&' does not "
                                        "compile")


def test_unknown_schema(tmp_path: Path) -> None:
    issues = _lint(tmp_path, """
        systems:
          crm: {adapter: stub}
        routes:
          - {name: r, from: order.changed, to: [crm.note],
             validate: order.chnaged}
    """)
    assert len(issues) == 1
    assert issues[0].location == _at(tmp_path, 5, 6)
    assert issues[0].message.startswith("unknown schema 'order.chnaged'; did you mean 'order.changed'")


def test_settings_are_checked_against_the_adapter_schema(tmp_path: Path) -> None:
    issues = _lint(tmp_path, """
        systems:
          crm:
            adapter: lintprobe
            settings:
              url: ftp://crm
              timout: 5
          scm:
            adapter: lintprobe
            settings: {timeout: 600}
          notify:
            adapter: stub
            settings: {fail: sometimes}
        routes: []
    """)
    assert [(i.location.line if i.location else None, i.message) for i in issues] == [
        (5, "system 'crm': settings.url: pattern check failed (expected '^https?://')"),
        (6, "system 'crm': unknown setting 'timout'; did you mean 'timeout'?"),
        (9, "system 'scm': settings: 'url' is a required property"),
        (9, "system 'scm': settings.timeout: maximum check failed (expected 60)"),
        (12, "system 'notify': settings.fail: enum check failed (expected ['none', 'transient', 'permanent'])"),
    ]


def test_settings_errors_never_show_a_secret_value(tmp_path: Path) -> None:
    secret = "hunter2-short"
    issues = _lint(tmp_path, """
        systems:
          crm:
            adapter: lintprobe
            settings: {url: "https://crm", password: "${CRM_PASSWORD}"}
        routes: []
    """, env={"CRM_PASSWORD": secret})
    assert [i.message for i in issues] == ["system 'crm': settings.password: minLength check failed (expected 20)"]
    assert secret not in str(issues[0])


def test_an_event_type_nothing_produces_is_a_warning(tmp_path: Path) -> None:
    issues = _lint(tmp_path, """
        systems:
          crm: {adapter: stub, settings: {operations: [note]}}
        routes:
          - name: a
            from: made.up
            to: [crm.note]
          - name: b
            from: note.added
            to: [crm.note]
          - name: c
            from: order.changed
            to: [{operation: crm.note, emit: note.added}]
    """)
    assert issues == [Issue("warning", "route 'a': nothing in routes.yaml produces event type 'made.up' (no trigger, "
                                       "no 'emit:'); only 'ironbus send' will feed it", _at(tmp_path, 5, 5))]
    assert str(issues[0]).startswith(f"{tmp_path / 'routes.yaml'}:5:5: warning: route 'a'")


def test_a_structural_error_is_the_only_issue(tmp_path: Path) -> None:
    issues = _lint(tmp_path, "routes:\n  - name: r\n    from: a.b\n    to: [crm.x]\n    tming: realtime\n")
    assert issues == [Issue("error", "routes/0: unknown field 'tming'; did you mean 'timing'?", _at(tmp_path, 5, 5))]


def test_every_problem_is_reported_in_reading_order() -> None:
    path = FIXTURES / "broken" / "routes.yaml"
    issues = lint(path, env={})
    assert all(i.severity == "error" and i.location is not None and i.location.file == str(path) for i in issues)
    lines = [i.location.line or 0 for i in issues if i.location]
    assert lines == sorted(lines) and len(issues) == 8
    assert set(lines) == {4, 9, 10, 14, 15, 16, 18, 19}


def test_adapter_operations() -> None:
    from adapters.stub import StubAdapter

    assert adapter_operations(StubAdapter, {}) is None
    assert adapter_operations(StubAdapter, {"operations": ["b", "a"]}) == ["a", "b"]
    assert adapter_operations(ProbeAdapter, {"url": "x"}) == ["update_demand"]


def test_a_when_expression_may_use_the_shared_value_maps(tmp_path: Path) -> None:
    # Given a target condition that reads a value map declared in routes.yaml, as the running bus allows
    routes = tmp_path / "routes.yaml"
    routes.write_text(dedent("""\
        systems:
          crm: {adapter: stub}
          scm: {adapter: stub}
        value_maps:
          tiers: {g: gold, s: silver}
        routes:
          - name: gold-only
            from: crm.changed
            to:
              - {operation: scm.update_demand, when: "value_map('tiers', tier) == 'gold'"}
        """))
    # Then lint accepts it (it once compiled `when` without the route's value maps)
    assert [i for i in lint(routes) if i.severity == "error"] == []
