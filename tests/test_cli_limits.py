"""Every YAML and JSON file the bus reads is bounded (issue 12, item 3): alias bombs, deep nesting and
recursive aliases fail fast, small and in one line naming the file — in routes, mappings, test files, ``send``
and ``map`` — never with a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bus.errors import ConfigError
from bus.yamlfile import load_json_text, load_yaml_text

ROOT = Path(__file__).resolve().parent.parent
# 1 GiB of address space, set by the child itself: the old loader grew to several GB on the bomb before failing.
# Not a preexec_fn: Python code between fork and exec runs gRPC's fork handlers when an earlier test in this
# worker imported grpc, and its restarted poller thread aborts the child once Popen closes the inherited fds
# (grpc/grpc#43055; seen here as a SIGABRT in `ironbus map`).
IRONBUS = [sys.executable, "-c", "import resource; resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30)); "
                                 "import sys, cli; sys.exit(cli.main())"]

# 342 bytes that expand to 9**9 (387 million) strings
LOL = ",".join(['"lol"'] * 9)
BOMB = "".join(f"{name}: &{name} [{','.join([f'*{prev}'] * 9) if prev else LOL}]\n"
               for prev, name in zip(["", *"abcdefgh"], "abcdefghi", strict=True))
DEEP_YAML = "[" * 3000 + "]" * 3000
DEEP_JSON = "[" * 400 + "]" * 400


def run_cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([*IRONBUS, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=60,
                          check=False)


def assert_one_line_error(result: subprocess.CompletedProcess[str], file: str, what: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("ironbus:")]
    assert len(lines) == 1 and file in lines[0] and what in lines[0], result.stderr[-2000:]


def test_bomb_is_342_bytes_and_fails_fast_in_the_loader() -> None:
    assert len(BOMB.encode()) == 342
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"^bomb\.yaml:\d+:\d+: document expands to more than"):
        load_yaml_text(BOMB, "bomb.yaml")
    assert time.monotonic() - started < 2


@pytest.mark.parametrize(("text", "what"), [
    (DEEP_YAML, "nested deeper than"),
    ("a: &a [*a]\n", "refers to a value that contains it"),
    ("a: &a {b: *a}\n", "refers to a value that contains it"),
])
def test_yaml_depth_and_recursion_are_one_config_error(text: str, what: str) -> None:
    with pytest.raises(ConfigError, match=what):
        load_yaml_text(text, "f.yaml")


def test_aliases_and_merges_still_work() -> None:
    doc = load_yaml_text("base: &b {x: 1, y: [1, 2]}\nuse: {<<: *b, y: 3}\nref: *b\n", "f.yaml")
    assert doc["use"] == {"x": 1, "y": 3} and doc["ref"] == {"x": 1, "y": [1, 2]}


@pytest.mark.parametrize("text", [DEEP_JSON, "[" * 2000 + "]" * 2000])
def test_json_depth_is_one_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^d\.json.*nested"):
        load_json_text(text, "d.json")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "mappings").mkdir()
    (tmp_path / "mappings" / "m.yaml").write_text("fields:\n  id: id\n")
    (tmp_path / "routes.yaml").write_text(textwrap.dedent("""\
        systems:
          crm: {adapter: stub}
        routes:
          - {name: r, from: crm.changed, map: mappings/m.yaml, to: [crm.store]}
        """))
    (tmp_path / "bomb.yaml").write_text(BOMB)
    (tmp_path / "deep.yaml").write_text(DEEP_YAML)
    (tmp_path / "deep.json").write_text(DEEP_JSON)
    return tmp_path


@pytest.mark.parametrize(("file", "what"), [
    ("bomb.yaml", "expands to more than"), ("deep.yaml", "nested deeper than"), ("deep.json", "nested deeper"),
])
def test_send_and_map_refuse_bombs_in_one_line(project: Path, file: str, what: str) -> None:
    journal = f"sqlite:///{project}/j.sqlite"
    assert_one_line_error(run_cli("send", "crm.changed", file, "--journal", journal, cwd=project), file, what)
    assert_one_line_error(run_cli("map", "mappings/m.yaml", file, cwd=project), file, what)


def test_bomb_as_routes_mapping_or_test_file(project: Path) -> None:
    (project / "mappings" / "m.yaml").write_text(BOMB)
    result = run_cli("lint", "routes.yaml", cwd=project)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "mappings/m.yaml" in result.stderr and "expands to more than" in result.stderr
    result = run_cli("lint", "bomb.yaml", cwd=project)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[0].startswith("bomb.yaml:7:4: error: document expands to more than")
    (project / "t.test.yaml").write_text(BOMB)
    result = run_cli("test", "t.test.yaml", cwd=project)
    assert result.returncode in (1, 2) and "Traceback" not in result.stderr + result.stdout
    assert "expands to more than" in result.stderr + result.stdout
