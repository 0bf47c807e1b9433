"""The convergence property on live Tryton, shared by tests/flows/test_convergence_property.py (no failure, bus
down) and test_convergence_restarts.py (Tryton restarted, bus stopped mid-flow): two files, so that pytest-xdist
(one file per worker) runs the two halves side by side instead of one worker running all four for ten minutes.

Whatever sequence of changes customers make to their orders — raised, lowered, lines removed or added (also to a
confirmed order: a supplementary sale), confirmed, cancelled — made faster than the bus polls, while the bus is
down, while Tryton restarts, or with the bus stopped mid-flow, the SCM's demand and the SRM's procurement end equal
to the latest version of every order.

Bounded for CI: each kind of failure gets an explicit example (a product added to a confirmed order, then lowered
and removed again) and two drawn ones (two or three orders each, over two materials from two suppliers, with grouped
purchases); ``derandomize`` so every run draws the same examples.
"""


from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from demo.actors import CrmSale, SalesRep
from demo.masterdata import Codes
from demo.stack import Stack, wait_for
from tests.flows.test_order_changes import scm_demand, srm_procured
from tests.helpers.stacks import linked_triangle

MATERIALS = ("W-100", "W-200")
SECOND = Codes(customer="C-GLOBEX", customer_name="Globex Ltd", material="W-200", material_name="Gear W-200",
               supplier="S-GEARS", supplier_name="Gears & Co")
# Per order and system, a deadline on a condition (not a sleep). A Tryton restart on the loaded 2-core CI machine
# parks deliveries for 2, 4, 8, 16 … s (routes.yaml) and holds back later events of the same key meanwhile, so a
# chain of CRM -> SCM -> grouped purchase -> SRM took more than 90 s once in ten full runs (57 s alone).
TIMEOUT = 180.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # two materials from two suppliers: grouped purchases per supplier, orders spanning both
    window = {"IRONBUS_GROUPING_WINDOW": "2s"}
    with linked_triangle(tmp_path_factory.mktemp("property"), SECOND, env=window) as triangle:
        yield triangle


@dataclass
class Order:
    """What the CRM holds for one order, as the test made it (the version every system must converge to)."""

    sale: CrmSale
    state: str = "quotation"
    quantities: dict[str, float] = field(default_factory=dict)

    def wanted(self) -> dict[str, float]:
        return {} if self.state == "cancelled" else {k: v for k, v in self.quantities.items() if v > 0}


Step = tuple[str, int, int]  # (action, W-100 quantity, W-200 quantity)

steps = st.lists(st.one_of(
    st.tuples(st.just("set"), st.integers(0, 9), st.integers(0, 9)),
    st.tuples(st.just("confirm"), st.just(0), st.just(0)),
    st.tuples(st.just("cancel"), st.just(0), st.just(0)),
), min_size=2, max_size=4)
plans_of_orders = st.lists(steps, min_size=2, max_size=3)


def apply(rep: SalesRep, products: dict[str, int], order: Order, step: Step) -> None:
    action, q100, q200 = step
    if order.state == "cancelled":
        return
    if action == "confirm" and order.state == "quotation":
        rep.confirm(order.sale.id)
        order.state = "confirmed"
    elif action == "cancel" and order.state == "quotation":
        rep.cancel(order.sale.id)
        order.state = "cancelled"
    elif action == "set":
        # on a confirmed order: amendments for the lines it has, a supplementary sale for a product it lacks
        wanted = {"W-100": float(q100), "W-200": float(q200)}
        if order.state == "quotation" and not any(wanted.values()):
            wanted["W-100"] = 1.0  # a quotation keeps at least one line
        rep.change_lines(order.sale.id, {products[code]: qty for code, qty in wanted.items()})
        for code, qty in wanted.items():
            if order.state == "quotation" and qty <= 0:
                order.quantities.pop(code, None)
            else:
                order.quantities[code] = qty



def converge(stack: Stack, disruption: str, plans: list[list[Step]]) -> None:
    """Make the planned changes under ``disruption``, then wait until every system holds every order's latest
    version (and still does once the bus is idle)."""
    rep = SalesRep(stack.adapters["crm"].client)
    customers = [x for x in stack.links if x.entity == "customer" and x.system == "crm"]
    products = {x.canonical_id: int(x.system_id) for x in stack.links if x.entity == "material" and x.system == "crm"}
    when = dt.date.today() + dt.timedelta(days=10)
    orders = [Order(rep.create_order(int(customers[i % len(customers)].system_id), {products["W-100"]: 3}, when),
                    quantities={"W-100": 3.0}) for i in range(len(plans))]
    assert stack.runtime is not None and stack.server is not None
    if disruption == "bus_down":
        stack.stop_bus()
    # every order's steps, interleaved and without waiting: faster than the bus polls
    for round_ in range(max(len(p) for p in plans)):
        for order, plan in zip(orders, plans, strict=True):
            if round_ < len(plan):
                apply(rep, products, order, plan[round_])
    if disruption == "bus_down":
        stack.start_bus()
    elif disruption == "tryton_restart":
        stack.server.stop()
        stack.server.launch()
    elif disruption == "bus_stopped_mid_flow":
        assert stack.runtime is not None
        wait_for("the bus to be working", lambda: not stack.runtime or not stack.runtime.idle() or None, 10)
        stack.stop_bus()
        stack.start_bus()
    for order in orders:
        want = order.wanted()
        for system, read in (("SCM demand", scm_demand), ("SRM procurement", srm_procured)):
            seen: list[dict[str, float]] = []

            def reached(order: Order = order, want: dict[str, float] = want, read: Any = read,
                        seen: list[dict[str, float]] = seen) -> bool | None:
                seen[:] = [read(stack, order.sale.order_id)]
                return seen[0] == want or None

            try:
                wait_for(f"{system} {want} for {order.sale.order_id} ({disruption})", reached, TIMEOUT)
            except TimeoutError as exc:
                raise AssertionError(f"{exc}; it last held {seen[0] if seen else 'nothing readable'}") from None
    assert stack.runtime is not None and stack.runtime.wait_idle(60)
    for order in orders:  # and it stays so once the bus is idle
        assert scm_demand(stack, order.sale.order_id) == order.wanted()
        assert srm_procured(stack, order.sale.order_id) == order.wanted()


def drawn_plans(test: Callable[..., Any]) -> Callable[..., Any]:
    """The property's examples for a test taking ``plans``: an explicit one (a product added to a confirmed order,
    lowered, then removed with the other raised) and two drawn ones, the same every run. Three examples, each with
    up to three orders converging through failures: on a shared 2-core machine one disruption takes 4-6 minutes,
    past the suite's 300 s default, hence the timeout."""
    test = example(plans=[[("confirm", 0, 0), ("set", 3, 4), ("set", 3, 1), ("set", 5, 0)],
                          [("set", 2, 0), ("confirm", 0, 0), ("set", 2, 6)]])(test)
    test = given(plans=plans_of_orders)(test)
    test = settings(max_examples=2, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])(test)
    return pytest.mark.timeout(900)(test)
