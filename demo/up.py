"""``make demo-up`` / ``make demo-down``: keep the demo's Tryton running to play with the shipped routes.

``make demo`` runs both flows and stops everything; this leaves one trytond serving ``crm``, ``scm`` and
``srm`` on http://127.0.0.1:8765 (the URL ``routes.yaml`` uses when ``TRYTON_URL`` is not set), with the demo's
master data and its cross references imported into the default journal, so that ``ironbus run`` with the
shipped routes polls real databases instead of warning that nothing answers. ``stop`` ends the trytond.

Command line: ``python -m demo.up start|stop|status``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from demo.stack import REPO

__all__ = ["main"]

# Overridable so a test can run it beside a developer's own demo.
RUN_DIR = Path(os.environ.get("IRONBUS_DEMO_DIR") or REPO / "var" / "demo-up")
PORT = int(os.environ.get("IRONBUS_DEMO_PORT") or 8765)
PID_FILE = RUN_DIR / "tryton" / "trytond.pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pid() -> int | None:
    try:
        pid = int(PID_FILE.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def start(journal: str) -> int:
    from adapters.tryton import TrytonAdapter
    from demo.masterdata import provision, write_xref_csv
    from tryton import tryton_env

    if _pid() is not None:
        print(f"demo Tryton already running (pid {_pid()}) at http://127.0.0.1:{PORT}; 'make demo-down' stops it")
        return 0
    if not tryton_env.installed():
        print("trytond is not installed: run 'make install' first", file=sys.stderr)
        return 2
    print(f"starting trytond with crm, scm and srm on http://127.0.0.1:{PORT} (the first start builds the "
          "database template, about a minute)…", flush=True)
    server = tryton_env.start(tryton_env.DEFAULT_DBS, port=PORT, run_dir=RUN_DIR / "tryton")
    adapters = {db: TrytonAdapter(db, {"url": server.url, "database": db, "user": tryton_env.ADMIN_USER,
                                       "password": tryton_env.ADMIN_PASSWORD}) for db in tryton_env.DEFAULT_DBS}
    try:
        for adapter in adapters.values():
            adapter.open()
        links = provision(adapters)
    except BaseException:
        server.stop()
        raise
    finally:
        for adapter in adapters.values():
            adapter.close()
    server.process = None  # detach: the server outlives this command; `stop` finds it by its pid file
    xref = write_xref_csv(links, RUN_DIR / "xref.csv")
    import cli

    code = cli.main(["xref", "import", str(xref), "--journal", journal])
    if code != 0:
        print(f"ironbus xref import {xref} failed (exit {code})", file=sys.stderr)
        return code
    print(f"demo Tryton ready at {server.url} (user {tryton_env.ADMIN_USER}); master data linked in {journal}.\n"
          "Now: .venv/bin/ironbus run            # the shipped routes against it (Ctrl-C stops)\n"
          "     make demo-down                   # stop trytond")
    return 0


def stop() -> int:
    pid = _pid()
    if pid is None:
        print("demo Tryton is not running")
        PID_FILE.unlink(missing_ok=True)
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
    PID_FILE.unlink(missing_ok=True)
    print(f"demo Tryton stopped (pid {pid})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo.up", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["start", "stop", "status"])
    parser.add_argument("--journal", default=os.environ.get("IRONBUS_JOURNAL") or "sqlite:///var/ironbus.sqlite")
    args = parser.parse_args(argv)
    Path(REPO / "var").mkdir(exist_ok=True)
    os.chdir(REPO)  # the journal URL and routes.yaml are relative to the repository
    if args.command == "start":
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        return start(args.journal)
    if args.command == "stop":
        return stop()
    pid = _pid()
    print(f"demo Tryton running (pid {pid}) at http://127.0.0.1:{PORT}" if pid else "demo Tryton is not running")
    return 0 if pid else 1


if __name__ == "__main__":
    sys.exit(main())
