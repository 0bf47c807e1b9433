"""What a new user trips over (issue 12, item 12): read commands on a journal that is not there, the README's
five-minute example, the demo's Tryton kept running, mapping expressions that find nothing, ``--version`` and
"did you mean" for a misspelt command. (A schedule on an event route: tests/bus/test_schedule_hold.py.)"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers.pg import pg_schema_url
from tests.helpers.services import skip_or_fail

ROOT = Path(__file__).resolve().parent.parent


def cli(*argv: str, cwd: Path = ROOT, env: dict[str, str] | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "import sys, cli; sys.exit(cli.main())", *argv], cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, capture_output=True, text=True,
                          timeout=timeout, check=False)


# -- read commands on a journal that does not exist ----------------------------------------------------------
@pytest.mark.parametrize("argv", [["status"], ["trace", "--key", "SO-1"], ["dlq", "list"], ["replay", "--key", "x"]])
def test_read_commands_refuse_a_missing_sqlite_journal(tmp_path: Path, argv: list[str]) -> None:
    missing = tmp_path / "nowhere" / "journal.sqlite"
    result = cli(*argv, "--journal", f"sqlite:///{missing}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert f"journal sqlite:///{missing} does not exist" in result.stderr and "Traceback" not in result.stderr
    assert not missing.exists() and not missing.parent.exists()


@pytest.fixture
def empty_pg_schema(postgres_url: str) -> Iterator[str]:
    yield from pg_schema_url(postgres_url, prefix="ibh_empty")


def test_read_commands_refuse_a_database_without_a_journal(empty_pg_schema: str) -> None:
    result = cli("status", "--journal", empty_pg_schema)
    assert result.returncode == 2 and "holds no ironbus journal" in result.stderr, result.stderr


# -- the README's five minutes ------------------------------------------------------------------------------
def readme_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    block = text.split("## Five minutes with ironbus", 1)[1].split("```")[1]
    return [shlex.split(line.split("#", 1)[0]) for line in block.splitlines() if line.strip()]


def test_readme_send_example_files_are_shipped_and_consumed() -> None:
    sends = [c for c in readme_commands() if c[:2] == [".venv/bin/ironbus", "send"]]
    assert sends, "the README shows no 'ironbus send'"
    routes = (ROOT / "routes.yaml").read_text()
    for command in sends:
        event_type, file = command[2], command[3]
        assert (ROOT / file).is_file(), f"README sends {file}, which is not shipped"
        assert f"from: {event_type}" in routes, f"no shipped route consumes {event_type}"


def test_readme_five_minute_flow_delivers(tmp_path: Path) -> None:
    env = {"IRONBUS_JOURNAL": f"sqlite:///{tmp_path}/j.sqlite", "IRONBUS_OUTBOX": str(tmp_path / "outbox")}
    flow = [c for c in readme_commands() if c[1:3] == ["xref", "set"] or c[1] == "send"]
    for command in flow:
        result = cli(*command[1:], env=env)
        assert result.returncode == 0, (command, result.stderr)
    run = cli("run", "--until-idle", "--no-triggers", "--no-http", "--max-seconds", "60", env=env)
    assert run.returncode == 0 and "1 delivered" in run.stderr, run.stderr
    written = list((tmp_path / "outbox").glob("*.json"))
    assert len(written) == 1 and json.loads(written[0].read_text())["customer"]["id"] == "C-ACME"


# -- make demo-up / demo-down ---------------------------------------------------------------------------------
def test_demo_up_keeps_tryton_running_until_demo_down(tmp_path: Path) -> None:
    from tryton import tryton_env

    if not tryton_env.installed():
        skip_or_fail("trytond is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "IRONBUS_DEMO_PORT": str(port),
           "IRONBUS_DEMO_DIR": str(tmp_path / "demo")}
    journal = f"sqlite:///{tmp_path}/j.sqlite"
    up = subprocess.run([sys.executable, "-m", "demo.up", "start", "--journal", journal], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300, check=False)
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        # the command has returned; trytond goes on serving, with the demo's master data linked in the journal
        for db in tryton_env.DEFAULT_DBS:
            login = {"id": 1, "method": "common.db.login",
                     "params": [tryton_env.ADMIN_USER, {"password": tryton_env.ADMIN_PASSWORD}, "en"]}
            answer = httpx.post(f"http://127.0.0.1:{port}/{db}/rpc/", json=login, timeout=10)
            assert answer.status_code == 200 and "result" in answer.json(), answer.text
        xref = cli("xref", "export", "--journal", journal)
        assert "C-ACME" in xref.stdout
    finally:
        down = subprocess.run([sys.executable, "-m", "demo.up", "stop"], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=60, check=False)
    assert down.returncode == 0 and "stopped" in down.stdout, down.stdout + down.stderr
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=2)


def test_makefile_has_demo_up_and_down() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo-up:.*\n\t\$\(PY\) -m demo\.up start$", makefile, re.M)
    assert re.search(r"^demo-down:.*\n\t\$\(PY\) -m demo\.up stop$", makefile, re.M)


# -- expressions that find nothing ----------------------------------------------------------------------------
@pytest.fixture
def mapping_files(tmp_path: Path) -> Path:
    (tmp_path / "m.yaml").write_text(textwrap.dedent("""\
        fields:
          id: number
          customer: custmer.name
          city: {expr: address.city, default: unknown}
          lines:
            each: items
            fields:
              sku: sku
              qty: quantty
        """))
    (tmp_path / "in.json").write_text('{"number": "SO-1", "customer": {"name": "ACME"}, "items": [{"sku": "W"}]}')
    (tmp_path / "m.test.yaml").write_text(textwrap.dedent("""\
        tests:
          - name: maps an order
            mapping: m.yaml
            input_file: in.json
            expect: {json_contains: {id: SO-1}}
        """))
    return tmp_path


def test_map_names_expressions_that_find_nothing(mapping_files: Path) -> None:
    result = cli("map", "m.yaml", "in.json", cwd=mapping_files)
    assert result.returncode == 0
    assert json.loads(result.stdout) == {"id": "SO-1", "city": "unknown", "lines": [{"sku": "W"}]}
    notes = [line for line in result.stderr.splitlines() if "note:" in line]
    assert notes == [
        "ironbus: note: m.yaml: field 'customer' is left out: 'custmer.name' finds nothing in in.json",
        "ironbus: note: m.yaml: field 'lines[0].qty' is left out: 'quantty' finds nothing in in.json",
    ]


def test_test_names_expressions_that_find_nothing(mapping_files: Path) -> None:
    result = cli("test", "m.test.yaml", cwd=mapping_files)
    assert result.returncode == 0, result.stdout
    assert "note: field 'customer' is left out: 'custmer.name' finds nothing in the input" in result.stdout
    assert "note: field 'lines[0].qty' is left out: 'quantty' finds nothing in the input" in result.stdout
    as_json = json.loads(cli("test", "m.test.yaml", "--json", cwd=mapping_files).stdout)
    assert len(as_json[0]["notes"]) == 2


# -- --version and did you mean ---------------------------------------------------------------------------------
def test_version() -> None:
    result = cli("--version")
    assert result.returncode == 0 and re.fullmatch(r"ironbus \S+\n", result.stdout)


@pytest.mark.parametrize(("argv", "expected"), [
    (["stauts"], "unknown command 'stauts'; did you mean 'status'?"),
    (["dlq", "lsit"], "unknown command 'lsit'; did you mean 'list'?"),
    (["tarce", "x"], "did you mean 'trace'?"),
])
def test_did_you_mean_for_a_misspelt_command(argv: list[str], expected: str) -> None:
    result = cli(*argv)
    assert result.returncode == 2 and expected in result.stderr, result.stderr
