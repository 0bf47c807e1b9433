"""A third-party adapter package, pip-installed on its own, is found through the 'ironbus.adapters' entry points.

The package (``ironbus-acme/``) is installed with ``pip install --target`` into a temporary folder, never into
the project's venv, and a subprocess with that folder on PYTHONPATH loads a routes.yaml naming ``adapter: acme``
and delivers through it, as ``ironbus run`` would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent / "ironbus-acme"

SCRIPT = textwrap.dedent("""
    import json, sys
    import jsonschema
    from bus.config import load_config
    from bus.delivery import deliver_with_retries
    from bus.config import RetryPolicy
    from bus.errors import ConfigError
    from bus.plugins import adapter_names, load_adapter_class
    from bus.testing import make_call

    config = load_config("routes.yaml")
    system = config.system("widgets")
    try:
        cls = load_adapter_class(system.adapter, system.location)
    except ConfigError as exc:
        print(json.dumps({"error": str(exc)}))
        sys.exit(0)
    jsonschema.Draft202012Validator(dict(cls.settings_schema)).validate(dict(system.settings))
    adapter = cls(system.name, system.settings)
    adapter.open()
    target = config.routes[0].targets[0]
    call = make_call({"name": "sprocket"}, idempotency_key="evt-1:widgets.create_widget")
    attempted = deliver_with_retries(lambda attempt: adapter.call(target.operation, call), RetryPolicy(attempts=1))
    adapter.close()
    print(json.dumps({"names": adapter_names(), "module": cls.__module__, "status": attempted.status,
                      "reference": attempted.outcome.reference if attempted.outcome else None,
                      "file": sys.modules[cls.__module__].__file__}))
""")

ROUTES = """
systems:
  widgets: {adapter: acme, settings: {sink: "${SINK}"}}
routes:
  - name: make-widgets
    from: order.changed
    to: [widgets.create_widget]
"""


def run_script(cwd: Path, pythonpath: str | None) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["SINK"] = str(cwd / "widgets.jsonl")
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.slow
def test_third_party_adapter_is_installed_found_and_delivers(tmp_path: Path) -> None:
    (tmp_path / "routes.yaml").write_text(ROUTES)

    # Not installed yet: the name is unknown, with the installed names listed.
    before = run_script(tmp_path, None)
    assert "unknown adapter 'acme'" in str(before["error"])

    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--no-build-isolation",
         "--disable-pip-version-check", "--target", str(site), str(PACKAGE)],
        capture_output=True, text=True, timeout=120)
    assert install.returncode == 0, install.stderr
    assert (site / "ironbus_acme-0.1.0.dist-info" / "entry_points.txt").exists()

    after = run_script(tmp_path, str(site))
    assert after["status"] == "delivered" and after["reference"] == "W-sprocket"
    assert after["module"] == "ironbus_acme" and str(after["file"]).startswith(str(site))
    assert "acme" in after["names"] and "stub" in after["names"]  # type: ignore[operator]
    written = [json.loads(line) for line in (tmp_path / "widgets.jsonl").read_text().splitlines()]
    assert written == [{"name": "sprocket", "key": "evt-1:widgets.create_widget"}]
