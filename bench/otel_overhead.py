"""The cost of the OpenTelemetry hooks with tracing off, side by side with the same bus without them.

Two copies of this working tree are made in a temporary folder: ``with`` (as it is) and ``without``, where every
hook is cut out of the source by an AST rewrite (:class:`Strip`): an ``if telemetry.enabled:`` block becomes its
``else`` (or nothing), ``x if telemetry.enabled else y`` becomes ``y``, the structlog processor
``telemetry.log_ids`` leaves the processor list, the settle's ``spans=`` argument goes, and
``from bus import telemetry`` goes wherever nothing else uses it. The rewrite is checked: no
``telemetry.enabled`` test is left in ``bus/`` or ``adapters/`` of the ``without`` copy. Everything else is the
same code, so the difference measured is the hooks' and nothing else.

Throughput pairs: ``ironbus run`` with its defaults (webhook -> SQLite journal -> queue -> map/validate -> HTTP
delivery to a local sink, bench/e2e.py's scenario and functions), ``--events`` events pushed as fast as accepted,
once from each copy, in ABBA order (pair i runs ``without`` first when i is even), so that load from other users
of the machine falls on both sides alike. Per pair: events/s ratio (with / without; >= 0.97 is the target) and
bus CPU seconds per delivered event ratio (with / without, from /proc of every bus process; <= 1.03), which is
robust to other load as it counts only the bus's own CPU. Reported: the median pair ratio with a bootstrap 95%
interval (resampling pairs).

``--callgrind``: instructions per event, which other load does not change. One process under ``valgrind
--tool=callgrind``: a ``Runtime`` (stub adapters, no HTTP) not started, the events submitted and the worker run
in the main thread until the queue is empty, so no thread wakes on a timer; N1 and N2 events, and the
instructions of the N2 - N1 extra events divided by their number (the start-up cancels); the same for both
copies. It covers ingest, worker and settle hooks (not the webhook's and the http adapter's, 3 of the 18).

Usage: ``python bench/otel_overhead.py [--pairs 20] [--events 3000] [--callgrind]``; the last line is JSON.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from callgrind import RUNTIME, instructions  # bench/ is the script's folder, first on sys.path

ROOT = Path(__file__).resolve().parent.parent


# -- the copy without the hooks ------------------------------------------------------------------------------
def _is_flag(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "enabled" and isinstance(node.value, ast.Name)
            and node.value.id == "telemetry")


def _is_telemetry(node: ast.AST, attr: str) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == attr and isinstance(node.value, ast.Name) \
        and node.value.id == "telemetry"


class Strip(ast.NodeTransformer):
    """Cut the OpenTelemetry hooks out of a module (see the module docstring); ``cut`` counts them. A local
    copy of the flag (``traced = telemetry.enabled``) is a flag too, and its assignment goes."""

    def __init__(self, module: ast.Module) -> None:
        self.cut = 0
        self.copies = {t.id for n in ast.walk(module) if isinstance(n, ast.Assign) and _is_flag(n.value)
                       for t in n.targets if isinstance(t, ast.Name)}

    def _flag(self, node: ast.AST) -> bool:
        return _is_flag(node) or (isinstance(node, ast.Name) and node.id in self.copies)

    def visit_Assign(self, node: ast.Assign) -> Any:  # noqa: N802 - ast's naming
        if _is_flag(node.value):
            self.cut += 1
            return None
        return self.generic_visit(node)

    def visit_If(self, node: ast.If) -> Any:  # noqa: N802
        if self._flag(node.test):
            self.cut += 1
            kept = [self.visit(n) for n in node.orelse]
            return [n for n in kept if n is not None] or ast.Pass()
        return self.generic_visit(node)

    def visit_IfExp(self, node: ast.IfExp) -> Any:  # noqa: N802
        if self._flag(node.test):
            self.cut += 1
            return self.visit(node.orelse)
        return self.generic_visit(node)

    def visit_List(self, node: ast.List) -> Any:  # noqa: N802
        kept = [e for e in node.elts if not _is_telemetry(e, "log_ids")]
        self.cut += len(node.elts) - len(kept)
        node.elts = kept
        return self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> Any:  # noqa: N802
        kept = [k for k in node.keywords if not (k.arg == "spans" and isinstance(k.value, ast.Attribute)
                                                   and k.value.attr == "spans")]
        self.cut += len(node.keywords) - len(kept)
        node.keywords = kept
        return self.generic_visit(node)


def _drop_unused_import(tree: ast.Module) -> None:
    used = any(isinstance(n, ast.Name) and n.id == "telemetry" for n in ast.walk(tree))
    if used:
        return
    for node in list(tree.body):
        if isinstance(node, ast.ImportFrom) and node.module == "bus":
            node.names = [a for a in node.names if a.name != "telemetry"]
            if not node.names:
                tree.body.remove(node)


def strip_tree(tree: Path) -> dict[str, int]:
    """Rewrite every module of ``tree``'s bus/ and adapters/ without the hooks; {file: hooks cut}."""
    changed: dict[str, int] = {}
    for path in sorted([*(tree / "bus").rglob("*.py"), *(tree / "adapters").rglob("*.py")]):
        if path.name == "telemetry.py" and path.parent.name == "bus":
            continue
        source = path.read_text()
        if "telemetry" not in source:
            continue
        module = ast.parse(source)
        strip = Strip(module)
        module = strip.visit(module)
        if strip.cut:
            _drop_unused_import(module)
            path.write_text(ast.unparse(ast.fix_missing_locations(module)) + "\n")
            changed[str(path.relative_to(tree))] = strip.cut
    left = [str(p.relative_to(tree)) for p in [*(tree / "bus").rglob("*.py"), *(tree / "adapters").rglob("*.py")]
            if p.name != "telemetry.py" and re.search(r"\btelemetry\.enabled\b", p.read_text())]
    if left:
        raise SystemExit(f"the rewrite left telemetry.enabled tests in {left}")
    return changed


def copy_tree(dest: Path) -> Path:
    """This working tree's files (tracked and new, as they are now, not ignored ones) copied to ``dest``."""
    names = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split("\0")
    for name in filter(None, names):
        src = ROOT / name
        if src.is_file() and not name.startswith("docs/"):
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def _resolves_to(tree: Path) -> str:
    """Where ``bus.worker`` is imported from with ``tree`` on PYTHONPATH (the bus processes' setting)."""
    return subprocess.run([sys.executable, "-c", "import bus.worker; print(bus.worker.__file__)"], cwd=tree,
                          env={**os.environ, "PYTHONPATH": str(tree)}, check=True, capture_output=True,
                          text=True).stdout.strip()


# -- statistics ----------------------------------------------------------------------------------------------
def bootstrap_median(values: list[float], rounds: int = 4000, seed: int = 17) -> tuple[float, float]:
    """95% interval of the median of ``values`` (percentile bootstrap, resampling the values)."""
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(rounds))
    return medians[int(0.025 * rounds)], medians[int(0.975 * rounds) - 1]


def _summary(ratios: list[float]) -> dict[str, Any]:
    low, high = bootstrap_median(ratios)
    return {"median": round(statistics.median(ratios), 4), "ci95": [round(low, 4), round(high, 4)],
            "pairs": [round(r, 4) for r in ratios]}


# -- throughput pairs ----------------------------------------------------------------------------------------
def _e2e() -> Any:
    spec = importlib.util.spec_from_file_location("bench_e2e", ROOT / "bench" / "e2e.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_pairs(trees: dict[str, Path], pairs: int, events: int, folder: Path) -> dict[str, Any]:
    e2e = _e2e()
    sink_port = e2e.free_port()
    (folder / "sink_app.py").write_text(e2e.SINK_APP)
    sink = subprocess.Popen([sys.executable, "-m", "uvicorn", "sink_app:app", "--port", str(sink_port),
                             "--log-level", "warning", "--no-access-log"], cwd=folder)
    rows: list[dict[str, dict[str, Any]]] = []
    try:
        e2e.wait_port(sink_port)
        for i in range(pairs):
            row: dict[str, dict[str, Any]] = {}
            for side in ("without", "with") if i % 2 == 0 else ("with", "without"):
                e2e.ROOT = trees[side]  # the bus processes' PYTHONPATH (bench/e2e.py reads it at each start)
                journal = folder / f"{side}{i}.sqlite"
                row[side] = e2e.scenario_throughput(folder, sink_port, f"sqlite:///{journal}", None, events,
                                                    f"pair {i + 1} {side}")
                for leftover in folder.glob(f"{side}{i}.sqlite*"):
                    leftover.unlink()
            rows.append(row)
    finally:
        sink.send_signal(signal.SIGTERM)
        sink.wait(timeout=10)
    eps = [r["with"]["eps"] / r["without"]["eps"] for r in rows]
    cpu = [r["with"]["cpu_us_per_event"] / r["without"]["cpu_us_per_event"] for r in rows]
    return {"eps_ratio": _summary(eps), "cpu_ratio": _summary(cpu),
            "eps": {s: [r[s]["eps"] for r in rows] for s in ("with", "without")},
            "cpu_us_per_event": {s: [r[s]["cpu_us_per_event"] for r in rows] for s in ("with", "without")}}


# -- instructions (callgrind) --------------------------------------------------------------------------------
DRIVER = RUNTIME + '''
for start in range(0, n, 64):  # in this thread too (the path follow-ups take), not the ingest thread
    with runtime.journal.unit() as unit:
        runtime.door.submit([Event(type="crm.order_changed", source="ironbus/crm", data={"number": f"SO-{i}",
                             "qty": i}) for i in range(start, min(n, start + 64))], "send", unit=unit)
worker = runtime._worker("callgrind")
delivered = 0
while leases := runtime.queue.consume(64, timeout=0):
    worker.handle(leases)
    delivered += len(leases)
assert worker.stats.delivered == n, (worker.stats.delivered, n)
print(delivered)
import os
os._exit(0)  # skip the interpreter's teardown: not the hot path
'''


def run_callgrind(trees: dict[str, Path], folder: Path, small: int, large: int) -> dict[str, Any]:
    ir = instructions(DRIVER, {(side, n): tree for side, tree in trees.items() for n in (small, large)}, folder)
    per_event: dict[str, float] = {}
    for side in trees:
        per_event[side] = (ir[(side, large)] - ir[(side, small)]) / (large - small)
        print(f"callgrind {side:<7}: {ir[(side, small)]:,} instructions for {small} events, "
              f"{ir[(side, large)]:,} for {large}: {per_event[side]:,.0f} per event", flush=True)
    return {"instructions_per_event": {k: round(v) for k, v in per_event.items()},
            "ratio": round(per_event["with"] / per_event["without"], 4), "events": [small, large],
            "totals": {f"{side}_{n}": v for (side, n), v in ir.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=20, help="interleaved with/without pairs (default 20)")
    parser.add_argument("--events", type=int, default=3000, help="events per run (default 3000)")
    parser.add_argument("--callgrind", action="store_true", help="also count instructions per event")
    parser.add_argument("--callgrind-events", type=int, nargs=2, default=[100, 900], metavar=("N1", "N2"))
    args = parser.parse_args()
    started = time.monotonic()
    folder = Path(tempfile.mkdtemp(prefix="ironbus-otel-"))
    try:
        trees = {"with": copy_tree(folder / "with"), "without": copy_tree(folder / "without")}
        cut = strip_tree(trees["without"])
        for tree in trees.values():  # compiled before any run: no run pays (or races another for) the .pyc files
            subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree)], check=True,
                           stdout=subprocess.DEVNULL)
        for side, tree in trees.items():
            where = _resolves_to(tree)
            assert where.startswith(str(tree)), f"{side}: bus imported from {where}, not {tree}"
        print(f"without: {sum(cut.values())} hooks cut in {', '.join(f'{k} ({v})' for k, v in cut.items())}",
              flush=True)
        figures: dict[str, Any] = {"hooks_cut": cut, "events": args.events, "cores": os.cpu_count(),
                                   "loadavg_before": os.getloadavg()[0]}
        if args.pairs:
            figures.update(run_pairs(trees, args.pairs, args.events, folder))
            e, c = figures["eps_ratio"], figures["cpu_ratio"]
            print(f"tracing off vs no OpenTelemetry code, {args.pairs} ABBA pairs of {args.events} events: "
                  f"events/s ratio median {e['median']:.3f} (95% CI {e['ci95'][0]:.3f}-{e['ci95'][1]:.3f}; target "
                  f">= 0.97); bus CPU per event ratio median {c['median']:.3f} (95% CI {c['ci95'][0]:.3f}-"
                  f"{c['ci95'][1]:.3f}; target <= 1.03)", flush=True)
        if args.callgrind:
            small, large = args.callgrind_events
            figures["callgrind"] = run_callgrind(trees, folder, small, large)
            print(f"instructions per event, tracing off vs no OpenTelemetry code: {figures['callgrind']['ratio']:.4f}x")
        figures["loadavg_after"] = os.getloadavg()[0]
        figures["seconds"] = round(time.monotonic() - started)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
