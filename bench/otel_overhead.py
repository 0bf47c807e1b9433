"""The cost of the OpenTelemetry hooks with tracing off: ``bench/e2e.py`` on this tree against the same
benchmark on a tree without the OpenTelemetry code (a git revision, default ``main``), side by side.

The runs are interleaved (A B A B …) so that load from other users of the machine falls on both sides
alike; each run is a fresh ``bench/e2e.py --only embedded`` (webhook -> journal -> queue -> HTTP sink).
Prints every run, then mean, standard deviation and the median ratio, and a JSON line. Usage:
``python bench/otel_overhead.py [--runs 5] [--baseline main] [--events 6000] [--seconds 5]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def run_e2e(tree: Path, events: int, seconds: float, extra: list[str]) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}  # tracing off: the default
    out = subprocess.run([sys.executable, str(tree / "bench" / "e2e.py"), "--only", "embedded", "--events",
                          str(events), "--seconds", str(seconds), *extra], cwd=tree, env=env, check=True,
                         capture_output=True, text=True).stdout
    figures: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--baseline", default="main", help="git revision without the OpenTelemetry code")
    parser.add_argument("--events", type=int, default=6000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--e2e-arg", action="append", default=[], help="extra bench/e2e.py argument")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="ironbus-otel-base-"))
    try:
        archive = subprocess.run(["git", "archive", args.baseline], cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
        if (base / "bus" / "telemetry.py").exists():
            raise SystemExit(f"{args.baseline} already has bus/telemetry.py; give a revision without it")
        rows: dict[str, list[dict[str, Any]]] = {"without": [], "with_off": []}
        for i in range(args.runs):
            for side, tree in (("without", base), ("with_off", ROOT)) if i % 2 == 0 else \
                    (("with_off", ROOT), ("without", base)):
                figures = run_e2e(tree, args.events, args.seconds, args.e2e_arg)
                row = {"eps": figures["embedded"]["eps"], "p50_ms": figures["embedded_latency"].get("p50_ms"),
                       "p99_ms": figures["embedded_latency"].get("p99_ms")}
                rows[side].append(row)
                print(f"run {i + 1} {side:<9} {row['eps']:>6} events/s  p50 {row['p50_ms']} ms  "
                      f"p99 {row['p99_ms']} ms", flush=True)
        summary: dict[str, Any] = {}
        for side, found in rows.items():
            eps = [r["eps"] for r in found]
            summary[side] = {"eps_mean": round(statistics.mean(eps)), "eps_stdev": round(statistics.pstdev(eps)),
                             "eps_median": statistics.median(eps), "runs": eps,
                             "p99_median_ms": statistics.median(r["p99_ms"] for r in found)}
        ratio = summary["with_off"]["eps_median"] / summary["without"]["eps_median"]
        noise = summary["without"]["eps_stdev"] / max(summary["without"]["eps_mean"], 1)
        summary["median_ratio"] = round(ratio, 3)
        summary["noise_cv_without"] = round(noise, 3)
        print(f"tracing off vs no OpenTelemetry code: median {summary['with_off']['eps_median']} vs "
              f"{summary['without']['eps_median']} events/s = {ratio:.3f}x (target >= 0.97); run-to-run "
              f"noise (stdev/mean) {noise:.1%}")
        print(json.dumps(summary, sort_keys=True))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
