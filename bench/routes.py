"""Many routes: events/s of route selection + filter + map + validate (``Pipeline.process``) with 1,000 routes.

Scenarios, measured in interleaved rounds in one run (one thread, CPU time, so other load on the machine
disturbs the figures little):

* ``one``       — one route with a filter that passes and a mapping (the baseline);
* ``shared``    — 1,000 routes on one trigger, told apart by their filters (``region == 'R<n>' && ...``), each
                  event passing exactly one;
* ``distinct``  — 1,000 routes on 1,000 triggers, each event of one of them;
* ``one_by_one``— ``shared`` with the filter index switched off (every filter tried), for comparison.

Targets (issue 18): shared >= 0.8x one; distinct >= 0.95x one. Usage: ``python bench/routes.py [--routes N]
[--seconds S] [--rounds R]``. Prints the figures with their ratios, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bus import dispatch  # noqa: E402
from bus.config import load_config  # noqa: E402
from bus.envelope import Event  # noqa: E402
from bus.gcsettings import settle_for_serving  # noqa: E402
from bus.pipeline import Pipeline  # noqa: E402

MAPPING = textwrap.dedent("""\
    output: order.changed
    fields:
      order_id: number
      source_system: {value: shop}
      status: "value_map('status', state)"
      customer.id: party.code
      customer.name: party.name
      currency: currency
      requested_date: "date(sale_date)"
      lines:
        each: lines
        fields:
          line_no: id
          material_id: product.code
          quantity: "number(quantity)"
    value_maps:
      status: {quotation: open, confirmed: confirmed}
    """)


def order(i: int, region: str) -> dict[str, Any]:
    return {"number": f"SO-{i:07d}", "state": "confirmed", "sale_date": "2026-11-24", "region": region,
            "channel": "web", "party": {"id": 42, "name": "Acme Retail GmbH", "code": "C-ACME"}, "currency": "EUR",
            "lines": [{"id": n, "product": {"code": f"W-{100 + n}"}, "quantity": f"{n + 1},5"} for n in range(5)]}


def pipeline(folder: Path, routes: list[dict[str, Any]]) -> Pipeline:
    (folder / "order.yaml").write_text(MAPPING)
    file = folder / "routes.yaml"
    file.write_text(yaml.safe_dump({"systems": {"sink": {"adapter": "stub"}}, "routes": routes}))
    return Pipeline(load_config(file))


def route(n: int, source: str, filter_: str | None) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": f"r{n}", "from": source, "map": "order.yaml", "to": ["sink.update"]}
    if filter_ is not None:
        doc["filter"] = filter_
    return doc


def rate(run: Callable[[Event], Any], events: list[Event], seconds: float) -> float:
    """Events per CPU second of ``run`` over ``events`` (cycled) for about ``seconds``."""
    done, n = 0, len(events)
    started = time.process_time()
    while True:
        for k in range(200):
            run(events[(done + k) % n])
        done += 200
        elapsed = time.process_time() - started
        if elapsed >= seconds:
            return done / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--routes", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    n = args.routes
    with tempfile.TemporaryDirectory(prefix="ironbus-routes-") as tmp:
        folder = Path(tmp)
        one = pipeline(folder, [route(0, "shop.order", "region == 'R0' && channel == 'web'")])
        shared = pipeline(folder, [route(i, "shop.order", f"region == 'R{i}' && channel == 'web'") for i in range(n)])
        distinct = pipeline(folder, [route(i, f"shop.order{i}", "channel == 'web'") for i in range(n)])
        saved, dispatch.MIN_ROUTES = dispatch.MIN_ROUTES, n + 1  # the same routes, every filter tried
        naive = pipeline(folder, [route(i, "shop.order", f"region == 'R{i}' && channel == 'web'") for i in range(n)])
        dispatch.MIN_ROUTES = saved
    one_events = [Event(type="shop.order", source="shop", data=order(i, "R0")) for i in range(n)]
    shared_events = [Event(type="shop.order", source="shop", data=order(i, f"R{i}")) for i in range(n)]
    distinct_events = [Event(type=f"shop.order{i}", source="shop", data=order(i, "R0")) for i in range(n)]
    for p, events in ((one, one_events), (shared, shared_events), (distinct, distinct_events), (naive, shared_events)):
        passed = [r for r in p.process(events[7]) if r.status == "dispatch"]
        assert len(passed) == 1, "each event passes exactly one route"
    settle_for_serving()  # the collector as `ironbus run` sets it once its routes are built (bus.gcsettings)
    scenarios = {"one": (one, one_events), "shared": (shared, shared_events),
                 "distinct": (distinct, distinct_events), "one_by_one": (naive, shared_events)}
    runs: dict[str, list[float]] = {name: [] for name in scenarios}
    for _ in range(args.rounds):  # interleaved: a burst of load elsewhere hits every scenario alike
        for name, (p, events) in scenarios.items():
            runs[name].append(rate(p.process, events, args.seconds))
    med = {name: statistics.median(r) for name, r in runs.items()}
    figures: dict[str, Any] = {"routes": n, "rounds": args.rounds}
    for name in scenarios:
        figures[f"{name}_eps"] = round(med[name])
        figures[f"{name}_range"] = [round(min(runs[name])), round(max(runs[name]))]
    # ratios per round (each round's scenarios ran back to back), then their range
    for name, target in (("shared", 0.8), ("distinct", 0.95), ("one_by_one", None)):
        ratios = [a / b for a, b in zip(runs[name], runs["one"], strict=True)]
        figures[f"{name}_ratio"] = round(statistics.median(ratios), 3)
        figures[f"{name}_ratio_range"] = [round(min(ratios), 3), round(max(ratios), 3)]
        aim = f" (target >= {target}x)" if target else ""
        print(f"{name:<11} {med[name]:8.0f} events/s per CPU second, {figures[f'{name}_ratio']:.2f}x one route{aim}; "
              f"ratio per round {figures[f'{name}_ratio_range'][0]:.2f}-{figures[f'{name}_ratio_range'][1]:.2f}")
    print(f"{'one':<11} {med['one']:8.0f} events/s per CPU second (baseline: one route); rounds "
          f"{figures['one_range'][0]}-{figures['one_range'][1]}")
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
