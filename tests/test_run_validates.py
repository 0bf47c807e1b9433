"""``ironbus run`` refuses to start on any error ``ironbus lint`` reports (issue 12, item 6)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bus.errors import ConfigError
from bus.runtime import Runtime, RuntimeOptions

ROOT = Path(__file__).resolve().parent.parent
MISSPELT = textwrap.dedent("""\
    systems:
      vendor:
        adapter: webhook
        settings:
          signature: {scheme: hmac-sha256, secret: "${VENDOR_SECRET}", header: X-Signature,
                      timestamp_heder: X-Timestamp, tolerance: 300}
      sink: {adapter: stub}
    routes:
      - {name: inbound, from: vendor.received, to: [sink.store]}
    """)


def cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VENDOR_SECRET": "vendor-shared-secret-1"}
    return subprocess.run([sys.executable, "-c", "import sys, cli; sys.exit(cli.main())", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_run_refuses_settings_lint_rejects(tmp_path: Path) -> None:
    (tmp_path / "routes.yaml").write_text(MISSPELT)
    lint = cli("lint", "routes.yaml", cwd=tmp_path)
    assert lint.returncode == 1 and "timestamp_heder" in lint.stderr
    run = cli("run", "--no-http", "--max-seconds", "5", "--journal", f"sqlite:///{tmp_path}/j.sqlite", cwd=tmp_path)
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr and "ironbus: running" not in run.stderr
    assert "timestamp_heder" in run.stderr and "did you mean 'timestamp_header'" in run.stderr
    assert "vendor-shared-secret-1" not in run.stderr
    assert not (tmp_path / "j.sqlite").exists()  # refused before anything was opened


def test_run_refuses_route_errors_too(tmp_path: Path) -> None:
    (tmp_path / "routes.yaml").write_text(MISSPELT.replace("timestamp_heder", "timestamp_header")
                                          .replace("mappings/x.yaml", "").replace("to: [sink.store]",
                                                                                 "map: nowhere.yaml, to: [sink.store]"))
    run = cli("run", "--no-http", "--max-seconds", "5", "--journal", f"sqlite:///{tmp_path}/j.sqlite", cwd=tmp_path)
    assert run.returncode == 2 and "nowhere.yaml" in run.stderr, run.stderr


def test_runtime_refuses_invalid_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VENDOR_SECRET", "vendor-shared-secret-1")
    (tmp_path / "routes.yaml").write_text(MISSPELT)
    with pytest.raises(ConfigError, match="timestamp_heder"):
        Runtime(tmp_path / "routes.yaml", journal=f"sqlite:///{tmp_path}/j.sqlite",
                options=RuntimeOptions(port=None, triggers=False))
