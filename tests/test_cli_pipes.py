"""A reader that closes the pipe early (``ironbus trace … | head``) stops any command quietly (issue 12, item 4)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ROUTES = ROOT / "tests" / "fixtures" / "routes" / "order_flow" / "routes.yaml"


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("pipes")
    url = f"sqlite:///{folder}/j.sqlite"
    data = folder / "event.json"
    data.write_text('{"number": "SO-1", "lines": []}')
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for _ in range(3):
        subprocess.run([sys.executable, "-m", "cli", "send", "crm.order_changed", str(data), "--key", "SO-1",
                        "--journal", url, "--routes", str(ROUTES)], cwd=ROOT, env=env, check=True,
                       capture_output=True, timeout=60)
    return url


@pytest.mark.parametrize("argv", [
    ["--help"], ["adapters"], ["adapters", "--json"], ["lint", str(ROUTES)], ["graph", "--routes", str(ROUTES)],
    ["status", "--journal", "JOURNAL"], ["trace", "--key", "SO-1", "--journal", "JOURNAL"],
    ["dlq", "list", "--journal", "JOURNAL"],
])
def test_closed_pipe_ends_quietly(argv: list[str], journal: str) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first write: every write fails with EPIPE
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        result = subprocess.run([sys.executable, "-m", "cli", *[journal if a == "JOURNAL" else a for a in argv]],
                                cwd=ROOT, env=env, stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60,
                                check=False)
    finally:
        os.close(write_end)
    assert "Traceback" not in result.stderr and "BrokenPipeError" not in result.stderr, result.stderr
    assert result.returncode in (0, 141)
