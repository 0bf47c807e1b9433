"""Instructions per event of the durable path, this tree against an earlier commit, under callgrind.

On a shared machine the wall-clock and CPU figures of ``bench/e2e.py`` move with other users' load by more than
one change buys; instructions do not. Each side runs the same driver under ``valgrind --tool=callgrind``: a
``Runtime`` on the embedded default (SQLite journal and queue, stub adapters, no HTTP), not started; events go
in through the front door and the ingest thread's group commit (as a webhook's do), 64 at a time, and after
each group one worker in the main thread consumes and handles what is queued, settles and acks it — the steady
state of ``ironbus run``. N1 and N2 events per side; the instructions of the N2 - N1 extra events divided by
their number (start-up cancels). What it leaves out: the webhook server and the HTTP delivery (neither is
journal or queue work), and I/O waits (instructions, not time). The count is not exact to the instruction: the
ingest thread's group window and the queue's "is a consumer consuming" test read the clock, which valgrind
slows; two runs of the same pair of trees agreed within 2 %, so read a ratio to ±0.02.

The baseline is checked out with ``git worktree`` into a temporary folder and removed afterwards; both sides
run with this tree's virtualenv. ``--journal postgresql`` puts the journal and its queue in PostgreSQL (a schema
per run on ``$IRONBUS_TEST_POSTGRES`` or the local server, dropped afterwards): the bus's client side of the same
path; the server's work is not counted. Usage: ``python bench/instructions.py [--baseline REV] [--events N1 N2]
[--journal sqlite|postgresql]`` (default: the commit before HEAD, 200 and 1,000 events, SQLite). The last line
is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from callgrind import RUNTIME, instructions  # bench/ is the script's folder, first on sys.path

ROOT = Path(__file__).resolve().parent.parent

DRIVER = RUNTIME + '''
worker = runtime._worker("callgrind")
runtime.queue.consume(64, timeout=0)  # a consumer is consuming, as in `ironbus run`
delivered = 0
for start in range(0, n, 64):
    runtime.ingest([(Event(type="crm.order_changed", source="ironbus/crm",
                           data={"number": f"SO-{i}", "qty": i, "lines": [{"sku": "A-1", "qty": 2}] * 4}), "webhook")
                    for i in range(start, min(n, start + 64))])
    while leases := runtime.queue.consume(64, timeout=0):
        worker.handle(leases)
        delivered += len(leases)
assert worker.stats.delivered == n, (worker.stats.delivered, n)
import os
os._exit(0)  # skip the interpreter's teardown: not the hot path
'''


@contextmanager
def journals(kind: str, runs: list[tuple[str, int]]) -> Iterator[dict[tuple[str, int], dict[str, str]]]:
    """Each run's ``BENCH_JOURNAL``: none for SQLite (the driver's folder), else a PostgreSQL schema of its own,
    dropped at the end."""
    if kind == "sqlite":
        yield {}
        return
    import sqlalchemy as sa

    server = os.environ.get("IRONBUS_TEST_POSTGRES") or "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    schemas = {run: f"bench_instr_{uuid.uuid4().hex[:8]}" for run in runs}
    admin = sa.create_engine(server)
    try:
        with admin.begin() as conn:
            for schema in schemas.values():
                conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
        yield {run: {"BENCH_JOURNAL": f"{server}?options=-csearch_path%3D{schema}"} for run, schema in schemas.items()}
    finally:
        with admin.begin() as conn:
            for schema in schemas.values():
                conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", default="HEAD~1", help="the commit to compare with (default HEAD~1)")
    parser.add_argument("--events", type=int, nargs=2, default=[200, 1000], metavar=("N1", "N2"))
    parser.add_argument("--journal", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (Debian: apt-get install valgrind)")
    small, large = sorted(args.events)
    if large <= small:
        sys.exit("--events: N2 must be larger than N1")
    rev = subprocess.run(["git", "rev-parse", "--short", args.baseline], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="ironbus-instr-") as tmp:
        folder = Path(tmp)
        baseline = folder / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(baseline), rev], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            print(f"instructions per event, this tree vs {rev} ({small} and {large} events each, under callgrind)",
                  flush=True)
            runs = {(side, n): tree for side, tree in (("this", ROOT), ("baseline", baseline)) for n in (small, large)}
            with journals(args.journal, list(runs)) as env:
                ir = instructions(DRIVER, runs, folder, env)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(baseline)], cwd=ROOT, capture_output=True)
    per_event = {side: (ir[(side, large)] - ir[(side, small)]) / (large - small) for side in ("this", "baseline")}
    for side, value in per_event.items():
        print(f"  {side:<8} {value:>12,.0f} instructions per event")
    ratio = per_event["this"] / per_event["baseline"]
    print(f"  this / baseline: {ratio:.3f}x")
    figures: dict[str, Any] = {"baseline": rev, "events": [small, large], "journal": args.journal,
                               "instructions_per_event": {k: round(v) for k, v in per_event.items()},
                               "ratio": round(ratio, 4)}
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
