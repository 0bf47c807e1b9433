"""Replay and dead-letter retry at scale: peak RSS and events/s of ``ironbus replay`` and ``ironbus dlq retry``.

Builds an embedded journal (SQLite) holding N journaled events (default 1,000,000, ~1 KB orders) and M dead
letters (default 100,000) by bulk insert, then runs, as a user would, ``ironbus replay --since 1d --rate 0``
and ``ironbus dlq retry`` in a child process whose stderr is a terminal (a pseudo-terminal), so the progress
bar draws as it does for a person. Peak RSS comes from ``wait4`` (the child's ``ru_maxrss``), the rate is the
count over the command's whole wall time (start-up included); the CPU it used per event (``wait4``'s user +
system time) is printed too, the figure a busy shared machine disturbs least. Targets (issue 18): RSS < 200 MB and
>= 10,000 events/s for both; the figures and their ratio to the target are printed, then one JSON line.

Usage: ``python bench/replay.py [--events N] [--letters M]``. Everything is created in a temporary folder
and removed at the end; no shared service is used.
"""

from __future__ import annotations

import argparse
import json
import os
import pty
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RSS_TARGET_MB = 200.0
RATE_TARGET = 10_000.0
ROUTES = """\
systems:
  sink:
    adapter: http
    settings:
      base_url: http://127.0.0.1:9
      operations:
        update_demand: {method: POST, path: /demand}
routes:
  - name: orders
    from: shop.received
    to: [sink.update_demand]
"""


def order(i: int) -> dict[str, Any]:
    return {"number": f"SO-{i:07d}", "state": "confirmed", "party": {"id": 42, "name": "Acme Retail GmbH"},
            "comment": "Please deliver to gate 4 before noon." * 6,
            "lines": [{"id": n, "product": {"code": f"W-{100 + n}"}, "quantity": f"{n + 1},5"} for n in range(5)]}


def build(path: Path, events: int, letters: int) -> None:
    """A migrated journal, then rows written straight through sqlite3 (the fastest bulk load there is)."""
    from bus.envelope import Event
    from bus.journal import Journal

    Journal(f"sqlite:///{path}").close()  # creates and migrates the schema
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    now = time.time() - 3600
    template = order(0)
    batch: list[tuple[Any, ...]] = []
    for i in range(events):
        template["number"] = f"SO-{i:07d}"
        e = Event(type="shop.received", source="bench", data=template, key=f"SO-{i % 50_000:07d}")
        # a hundred events share a received_at, as one ingest batch does
        batch.append((e.id, e.type, e.source, e.key, e.correlationid, now + (i // 100) * 0.001, "webhook",
                      e.encode()))
        if len(batch) == 10_000 or i == events - 1:
            db.executemany("INSERT INTO ib_events (id, type, source, key, correlationid, received_at, origin, body) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", batch)
            db.commit()
            batch.clear()
    body = Event(type="shop.received", source="bench", data=order(1)).encode()
    db.executemany("INSERT INTO ib_dead_letters (event_id, route, target, reason, error_kind, attempts, body, "
                   "created_at, state) VALUES (?, 'orders', 'sink.update_demand', 'HTTP 500', 'permanent', 3, ?, ?, "
                   "'dead')", ((f"ev-{i}", body, now) for i in range(letters)))
    db.commit()
    db.close()


def run_measured(cmd: list[str], cwd: Path) -> tuple[float, float, float, str]:
    """Run ``cmd`` with stderr on a pseudo-terminal; (wall seconds, CPU seconds, peak RSS in MB, what it
    printed)."""
    master, slave = pty.openpty()
    seen: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            seen.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=slave, stderr=slave, env={**os.environ, "PYTHONPATH": str(ROOT)})
    os.close(slave)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    reader.join(timeout=5)
    os.close(master)
    text = b"".join(seen).decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[2:])} failed ({proc.returncode}): {text[-2000:]}")
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024.0, text


def queued(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("SELECT count(*) FROM ib_queue").fetchone()[0])
    finally:
        db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--letters", type=int, default=100_000)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="ironbus-replay-"))
    figures: dict[str, Any] = {"events": args.events, "letters": args.letters, "rss_target_mb": RSS_TARGET_MB,
                               "rate_target": RATE_TARGET}
    try:
        (folder / "routes.yaml").write_text(ROUTES)
        journal = folder / "journal.sqlite"
        started = time.perf_counter()
        build(journal, args.events, args.letters)
        print(f"built a journal of {args.events:,} events and {args.letters:,} dead letters in "
              f"{time.perf_counter() - started:.0f}s")
        base = [sys.executable, "-m", "cli"]
        url = f"sqlite:///{journal}"
        seconds, cpu, rss, text = run_measured([*base, "replay", "--since", "1d", "--rate", "0", "--journal", url],
                                               folder)
        if queued(journal) != args.events or "replaying [" not in text:
            raise RuntimeError(f"replay queued {queued(journal)} of {args.events} (or drew no progress bar)")
        figures.update(replay_eps=round(args.events / seconds), replay_rss_mb=round(rss, 1),
                       replay_cpu_us_per_event=round(cpu / args.events * 1e6, 1))
        with sqlite3.connect(journal) as db:  # an empty queue again: the retry is measured on its own
            db.execute("DELETE FROM ib_queue")
        seconds, cpu, rss, text = run_measured([*base, "dlq", "retry", "--journal", url, "--routes", "routes.yaml"],
                                               folder)
        if queued(journal) != args.letters or "re-queueing [" not in text:
            raise RuntimeError(f"dlq retry queued {queued(journal)} of {args.letters} (or drew no progress bar)")
        figures.update(retry_eps=round(args.letters / seconds), retry_rss_mb=round(rss, 1),
                       retry_cpu_us_per_event=round(cpu / args.letters * 1e6, 1))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    for name, count in (("replay", args.events), ("retry", args.letters)):
        eps, rss = figures[f"{name}_eps"], figures[f"{name}_rss_mb"]
        figures[f"{name}_rate_ratio"] = round(eps / RATE_TARGET, 2)
        figures[f"{name}_rss_ratio"] = round(rss / RSS_TARGET_MB, 2)
        print(f"{'ironbus replay' if name == 'replay' else 'ironbus dlq retry':<18} {count:>9,}: {eps:>7,} events/s "
              f"(target >= {RATE_TARGET:,.0f}: {eps / RATE_TARGET:.2f}x), peak RSS {rss:.0f} MB "
              f"(target < {RSS_TARGET_MB:.0f} MB: {rss / RSS_TARGET_MB:.2f}x); CPU "
              f"{figures[f'{name}_cpu_us_per_event']} us/event")
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
