"""Route selection by one dispatch over the filters: the same results as trying every filter, fewer evaluations."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import yaml

from bus.config import load_config
from bus.dispatch import RouteDispatch, equality_prefix
from bus.envelope import Event
from bus.errors import MappingError
from bus.expr import compile_expression
from bus.pipeline import Pipeline, _truthy

FILTERS = [
    "region == 'EU'",
    "region == 'US'",
    "'EU' == region && amount > `100`",
    "region == 'EU' && kind == 'invoice'",
    "kind == 'invoice' && region == 'US'",
    "customer.tier == 'gold'",
    "customer.tier == 'gold' && region == 'EU'",
    "flag == `true`",
    "flag == `1`",
    "count == `1`",
    "count == `1.0`",
    "missing == `null`",
    "region == 'EU' && length(amount) > `0`",  # raises when it gets past the equality (amount is a number)
    "amount > `100` && region == 'EU'",  # not led by an equality: tried every time
    "region != 'EU'",
    "tags == ['a']",
    None,
]


def _routes_yaml(filters: list[str | None]) -> str:
    routes: list[dict[str, object]] = []
    for n, f in enumerate(filters):
        routes.append({"name": f"r{n}", "from": "crm.sale", "to": ["scm.update"], **({"filter": f} if f else {})})
    return yaml.safe_dump({"systems": {"scm": {"adapter": "stub"}}, "routes": routes})


def _pipeline(tmp_path: Path, filters: list[str | None]) -> Pipeline:
    routes = tmp_path / "routes.yaml"
    routes.write_text(_routes_yaml(filters))
    return Pipeline(load_config(routes))


def _one_by_one(pipeline: Pipeline, data: dict[str, object]) -> list[str] | str:
    passed = []
    try:
        for route in pipeline.routes.values():
            if route.filter is None or _truthy(route.filter.search(data)):
                passed.append(route.name)
    except MappingError as exc:
        return f"error: {exc.expression if hasattr(exc, 'expression') else exc}"
    return passed


def _dispatched(pipeline: Pipeline, data: dict[str, object]) -> list[str] | str:
    try:
        results = pipeline.process(Event(type="crm.sale", source="crm", data=data))
    except MappingError as exc:
        return f"error: {exc.expression if hasattr(exc, 'expression') else exc}"
    return [r.route.name for r in results if r.status != "filtered"]


def _event(rng: random.Random) -> dict[str, object]:
    doc: dict[str, object] = {}
    for name, values in (("region", ["EU", "US", "APAC", 1, None]), ("kind", ["invoice", "order"]),
                         ("amount", [5, 150, 150.0]), ("flag", [True, False, 1, 0]),
                         ("count", [1, 1.0, True, "1"]), ("tags", [["a"], ["b"], "a"]),
                         ("customer", [{"tier": "gold"}, {"tier": "silver"}, "gold", {}])):
        if rng.random() < 0.85:
            doc[name] = rng.choice(values)
    return doc


def test_dispatch_selects_exactly_what_every_filter_would(tmp_path: Path) -> None:
    rng = random.Random(18)
    filters = FILTERS * 3  # repeated tests share buckets
    rng.shuffle(filters)
    pipeline = _pipeline(tmp_path, filters)
    dispatch = pipeline._dispatch["crm.sale"]
    assert dispatch.groups, "the leading equalities were indexed"
    for _ in range(3000):
        data = _event(rng)
        assert _dispatched(pipeline, data) == _one_by_one(pipeline, data), data


def test_routes_ruled_out_are_never_evaluated(tmp_path: Path) -> None:
    pipeline = _pipeline(tmp_path, [f"region == 'R{n}' && amount > `0`" for n in range(200)])
    dispatch = pipeline._dispatch["crm.sale"]
    assert [g.path for g in dispatch.groups] == [("region",)] and dispatch.always == []
    assert dispatch.candidates({"region": "R17", "amount": 3}) == [17]
    assert dispatch.candidates({"region": "nowhere"}) == []
    results = pipeline.process(Event(type="crm.sale", source="crm", data={"region": "R17", "amount": 3}))
    # the 199 routes ruled out leave no result (and so no journal row), as routes of another type leave none
    assert [(r.route.name, r.status) for r in results] == [("r17", "dispatch")]
    results = pipeline.process(Event(type="crm.sale", source="crm", data={"region": "R17", "amount": 0}))
    assert [(r.route.name, r.status) for r in results] == [("r17", "filtered")]  # a candidate that said no
    assert pipeline.process(Event(type="crm.sale", source="crm", data={"region": "nowhere"})) == []


def test_few_routes_are_tried_one_by_one(tmp_path: Path) -> None:
    pipeline = _pipeline(tmp_path, ["region == 'EU'", "region == 'US'"])
    assert pipeline._dispatch["crm.sale"].groups == []


@pytest.mark.parametrize(("text", "expected"), [
    ("a == 'x'", [(("a",), ("s", "x"))]),
    ("a.b == `2` && c == `true` && d", [(("a", "b"), ("n", 2)), (("c",), ("b", True))]),
    ("d && a == 'x'", []),
    ("a[0] == 'x'", []),
    ("a == b", []),
    ("a == `[1]`", []),
])
def test_equality_prefix(text: str, expected: list[tuple[tuple[str, ...], tuple[str, object]]]) -> None:
    found = equality_prefix(compile_expression(text).ast)
    assert [(path, key) for path, key, _ in found] == expected


def test_results_come_in_route_order_with_unindexed_routes_among_them(tmp_path: Path) -> None:
    # r3 has no leading equality (always a candidate), r5 no filter: both are tried for every event
    filters: list[str | None] = [f"region == 'R{n}'" for n in range(8)]
    filters[3], filters[5] = "amount > `100`", None
    pipeline = _pipeline(tmp_path, filters)
    assert isinstance(pipeline._dispatch["crm.sale"], RouteDispatch)
    first = pipeline.process(Event(type="crm.sale", source="crm", data={"region": "R6", "amount": 5}))
    assert [(r.route.name, r.status) for r in first] == [("r3", "filtered"), ("r5", "dispatch"), ("r6", "dispatch")]
    second = pipeline.process(Event(type="crm.sale", source="crm", data={"region": "R1", "amount": 500}))
    assert [(r.route.name, r.status) for r in second] == [("r1", "dispatch"), ("r3", "dispatch"), ("r5", "dispatch")]
