"""``make bench``: every benchmark in one go, then each figure with its baseline and ratio.

Runs each ``bench/*.py`` as its own process (a time limit each, so the whole stays under ten minutes on the
2-core machine), reads the JSON line each one ends with, and prints one table: the figure, the baseline measured
in the same run (or the target, where the target is an absolute), the ratio, and the target of issue 18. A
benchmark that fails is reported and the others still run; the exit code is then 1. The last line is one JSON
object with every benchmark's figures.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

#: (script, arguments, time limit in seconds)
RUNS: list[tuple[str, list[str], int]] = [
    ("pipeline.py", ["--rounds", "3"], 120),
    ("routes.py", ["--rounds", "5"], 120),
    ("webhooks.py", ["--rounds", "2"], 120),
    ("protection.py", [], 60),
    ("durable.py", ["--events", "5000"], 150),
    # RSS and rate do not depend on N once replay streams; bench/replay.py alone runs the full million
    ("replay.py", ["--events", "200000", "--letters", "100000"], 240),
    # its drain takes 20,000 events: 2,500 drained in a third of a second and read 0.69-0.78x raw kombu where
    # 20,000 read 0.63-0.65x the same hour
    ("e2e.py", ["--rounds", "2", "--events", "5000", "--seconds", "8"], 360),
    # tracing off vs the same tree with the OpenTelemetry hooks cut out (interleaved pairs; the full
    # measurement is --pairs 30, see docs/operating.md)
    ("otel_overhead.py", ["--pairs", "4", "--events", "2000"], 360),
]

Row = tuple[str, float | None, float | None, str, str]  # label, figure, baseline, unit, target


def _median(values: Any) -> float | None:
    if values is None:
        return None
    if isinstance(values, list):
        return float(statistics.median(values)) if values else None
    return float(values)


def _get(doc: dict[str, Any], *path: str) -> Any:
    node: Any = doc
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


ROWS: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "pipeline.py": lambda d: [("Pipeline.process per CPU second (vs naive per-call)", d.get("pipeline_cpu_msg_s"),
                               d.get("naive_cpu_msg_s"), "msg/s", ">= 20,000 msg/s")],
    "routes.py": lambda d: [
        ("1,000 routes on one trigger (vs one route)", d.get("shared_eps"), d.get("one_eps"), "ev/CPU-s", ">= 0.8x"),
        ("1,000 routes on distinct triggers (vs one route)", d.get("distinct_eps"), d.get("one_eps"), "ev/CPU-s",
         ">= 0.95x")],
    "webhooks.py": lambda d: [("webhook server, signed hook (vs GET /ping)", d.get("hook_rps"), d.get("ping_rps"),
                               "req/s", "")],
    "protection.py": lambda d: [("protections per call, 8 threads (vs bare call)", d.get("protected_us_8t"),
                                 d.get("baseline_us_8t"), "us", "")],
    "durable.py": lambda d: [("durable RabbitMQ + PostgreSQL (vs raw kombu)", d.get("rabbitmq_postgres_eps"),
                              d.get("raw_kombu_eps"), "ev/s", ""),
                             ("durable embedded SQLite (vs raw kombu)", d.get("embedded_sqlite_eps"),
                              d.get("raw_kombu_eps"), "ev/s", "")],
    "replay.py": lambda d: [
        (f"replay of {d.get('events', 0):,} events: rate (vs target)", d.get("replay_eps"), d.get("rate_target"),
         "ev/s", ">= 10,000 ev/s"),
        ("replay: peak RSS (vs target)", d.get("replay_rss_mb"), d.get("rss_target_mb"), "MB", "< 200 MB"),
        (f"dlq retry of {d.get('letters', 0):,} letters: rate (vs target)", d.get("retry_eps"),
         d.get("rate_target"), "ev/s", ">= 10,000 ev/s"),
        ("dlq retry: peak RSS (vs target)", d.get("retry_rss_mb"), d.get("rss_target_mb"), "MB", "< 200 MB")],
    "e2e.py": lambda d: [
        ("e2e embedded defaults (vs minimal Python flow)", _median(_get(d, "embedded", "eps")),
         _median(_get(d, "baseline", "eps")), "ev/s", ">= 0.6x"),
        ("bus CPU per delivered event (vs minimal flow)", _median(_get(d, "embedded", "cpu_us_per_event")),
         _median(_get(d, "baseline", "cpu_us_per_event")), "us", "<= 220 us"),
        ("p99 accepted -> delivered at 1,000/s (vs target)", _get(d, "embedded_latency", "p99_ms"), 10.0, "ms",
         "<= 10 ms"),
        ("e2e RabbitMQ + PostgreSQL (vs embedded)", _get(d, "rabbitmq", "eps"), _median(_get(d, "embedded", "eps")),
         "ev/s", ">= 0.8x"),
        ("drain RabbitMQ + PostgreSQL (vs raw kombu)", _get(d, "rabbitmq_drain", "eps"), d.get("raw_kombu_consume"),
         "ev/s", ">= 0.75x")],
    "otel_overhead.py": lambda d: [
        ("tracing off vs no OTel code: events/s (pair median)", _get(d, "eps_ratio", "median"), 1.0, "x",
         f">= 0.97x; 95% CI {_get(d, 'eps_ratio', 'ci95')}"),
        ("tracing off vs no OTel code: bus CPU/event (pair median)", _get(d, "cpu_ratio", "median"), 1.0, "x",
         f"<= 1.03x; 95% CI {_get(d, 'cpu_ratio', 'ci95')}")],
}


def run(script: str, args: list[str], limit: int) -> tuple[dict[str, Any] | None, str, float]:
    started = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, str(HERE / script), *args], capture_output=True, text=True,
                              timeout=limit, cwd=HERE.parent)
    except subprocess.TimeoutExpired:
        return None, f"did not finish within {limit}s", time.monotonic() - started
    elapsed = time.monotonic() - started
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return None, f"exit code {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-600:]}", elapsed
    for line in proc.stdout.splitlines():
        if not line.startswith("{") and "[info" not in line and "[debug" not in line:
            print(f"  {line}")
    return json.loads(lines[-1]), "", elapsed


def main() -> int:
    results: dict[str, Any] = {}
    rows: list[Row] = []
    failed = []
    started = time.monotonic()
    for script, args, limit in RUNS:
        print(f"== bench/{script} {' '.join(args)}", flush=True)
        figures, error, elapsed = run(script, args, limit)
        print(f"   ({elapsed:.0f}s)", flush=True)
        if figures is None:
            print(f"   FAILED: {error}")
            failed.append(script)
            continue
        results[script] = figures
        rows.extend(ROWS[script](figures))
    print(f"\n{'figure':<52} {'value':>10} {'baseline':>10} {'ratio':>7}  target")
    for label, value, base, unit, target in rows:
        if value is None:
            print(f"{label:<52} {'-':>10}")
            continue
        ratio = f"{value / base:.2f}x" if base else "-"
        shown = f"{base:,.1f}" if base is not None else "-"
        print(f"{label:<52} {value:>10,.1f} {shown:>10} {ratio:>7}  {target} ({unit})")
    print(f"all benchmarks: {time.monotonic() - started:.0f}s" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    print(json.dumps(results, sort_keys=True))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
