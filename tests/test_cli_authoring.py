"""The integrator-facing commands through cli.main: exit codes 0/1/2 and one-line located errors, no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import cli

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "routes"
FLOW = FIXTURES / "order_flow"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def test_lint_clean_file(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "lint", str(FLOW / "routes.yaml"))
    assert (code, err) == (0, "")
    assert out == f"{FLOW / 'routes.yaml'}: OK — 3 systems, 2 routes\n"


def test_lint_broken_file_lists_every_error_with_its_location(capsys: pytest.CaptureFixture[str]) -> None:
    path = FIXTURES / "broken" / "routes.yaml"
    code, out, err = _run(capsys, "lint", str(path))
    assert code == 1
    lines = err.splitlines()
    assert len(lines) == 9
    assert lines[0] == f"{path}:4:5: error: system 'crm': unknown adapter 'stb'; did you mean 'stub'?"
    assert lines[-1] == f"{path}: 8 error(s); fix them and run 'ironbus lint' again"
    assert all(line.startswith(f"{path}:") for line in lines)


def test_lint_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "lint", "--json", str(FIXTURES / "broken" / "routes.yaml"))
    issues = json.loads(out)
    assert code == 1 and len(issues) == 8
    assert issues[-1] == {"severity": "error", "message": "unknown system 'notify'; known: crm, scm",
                          "location": f"{FIXTURES / 'broken' / 'routes.yaml'}:19:9"}


def test_lint_names_an_unset_variable_and_never_a_set_one(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text("systems:\n  crm:\n    adapter: stub\n    settings: {result: '${CLI_T_USER}:${CLI_T_PASS}'}\n"
                      "routes: []\n")
    monkeypatch.setenv("CLI_T_USER", "svc-integration-77")
    monkeypatch.delenv("CLI_T_PASS", raising=False)
    code, out, err = _run(capsys, "lint", str(routes))
    assert code == 1
    assert err.splitlines()[0] == (f"{routes}:4:16: error: environment variable ${{CLI_T_PASS}} is not set "
                                   "(and has no ':-default')")
    assert "svc-integration-77" not in out + err


def test_lint_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "lint", str(tmp_path / "routes.yaml"))
    assert code == 1
    assert err.splitlines()[0] == f"{tmp_path / 'routes.yaml'}: error: file not found"


def test_map_prints_the_result(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = tmp_path / "in.json"
    doc.write_text('{"order_id": "A-1"}')
    code, out, err = _run(capsys, "map", str(FLOW / "mappings" / "order_to_note.yaml"), str(doc))
    assert (code, err) == (0, "")
    assert json.loads(out) == {"order": "A-1", "text": "Order A-1 was cancelled"}


@pytest.mark.parametrize(("content", "message"), [
    (None, "{doc}: file not found"),
    ('{"order_id":\n', "{doc}:2:1: invalid JSON: "),
    ('{"order_id": [1, 2]}', "field 'text': "),
])
def test_map_user_errors_are_one_line_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  content: str | None, message: str) -> None:
    doc = tmp_path / "in.json"
    if content is not None:
        doc.write_text(content)
    code, out, err = _run(capsys, "map", str(FLOW / "mappings" / "order_to_note.yaml"), str(doc))
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and err.startswith("ironbus: ")
    assert message.format(doc=doc) in err


def test_map_validate_failure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = tmp_path / "in.json"
    doc.write_text('{"order_id": "A-1"}')
    code, _, err = _run(capsys, "map", str(FLOW / "mappings" / "order_to_note.yaml"), str(doc),
                        "--validate", "order.changed")
    assert code == 2
    assert err.startswith("ironbus: does not match schema 'order.changed': ")


def test_test_command_pass_fail_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "test", str(FLOW / "tests"))
    assert code == 0 and out.endswith("4 passed, 0 failed\n")
    code, out, _ = _run(capsys, "test", str(FIXTURES / "order_flow_failing"))
    assert code == 1 and out.endswith("0 passed, 5 failed\n")
    code, out, _ = _run(capsys, "test", "--json", str(FLOW / "tests"), str(FIXTURES / "order_flow_failing"))
    results = json.loads(out)
    assert code == 1
    assert [r["passed"] for r in results] == [True] * 4 + [False] * 5
    assert results[-1]["details"] == ["unknown expectation 'filtred'; did you mean 'filtered'?"]


def test_test_command_without_tests_or_with_a_missing_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "test", str(tmp_path))
    assert code == 1 and "no tests found" in err
    code, _, err = _run(capsys, "test", str(tmp_path / "missing"))
    assert (code, err) == (2, f"ironbus: {tmp_path / 'missing'}: no such file or folder\n")


def test_adapters_lists_the_stub(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "adapters", "--json", "stub")
    rows = json.loads(out)
    assert code == 0
    assert rows[0]["name"] == "stub" and rows[0]["operations"] == ["(any)"]
    assert rows[0]["settings"] == ["fail", "operations", "result"]


def test_graph(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = _run(capsys, "graph", "--routes", str(FLOW / "routes.yaml"))
    assert code == 0
    assert out.startswith("flowchart LR\n")
    assert 'procurement_requested -- "procurement-to-po (shadow)" --> srm_create_purchase_order' in out
    assert "srm_create_purchase_order -. emits .-> purchase_order_created" in out
    code, _, err = _run(capsys, "graph", "--routes", str(tmp_path / "routes.yaml"))
    assert (code, err) == (2, f"ironbus: {tmp_path / 'routes.yaml'}: file not found\n")


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(["lnt"])
    assert caught.value.code == 2
    assert "unknown command 'lnt'; did you mean 'lint'?" in capsys.readouterr().err
