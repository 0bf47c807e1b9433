"""Convergence under fire, property-based, on live Tryton: changes faster than the bus polls, and while the bus
is down.

The property and its strategy live in tests/flows/convergence.py.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings

from demo.stack import Stack
from tests.flows.convergence import Step, converge, plans_of_orders, stack

pytestmark = [pytest.mark.tryton, pytest.mark.slow]
__all__ = ["stack"]  # the module-scoped live triangle this file's examples share

DISRUPTIONS = ["fast", "bus_down"]


@pytest.mark.parametrize("disruption", DISRUPTIONS)
# three examples per disruption, each with up to three orders converging through Tryton restarts: on a shared 2-core
# machine one disruption takes 4-6 minutes, past the suite's 300 s default
@pytest.mark.timeout(900)
@settings(max_examples=2, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(plans=plans_of_orders)
# a product added to a confirmed order (a supplementary sale), then lowered, then removed with the other raised
@example(plans=[[("confirm", 0, 0), ("set", 3, 4), ("set", 3, 1), ("set", 5, 0)],
                [("set", 2, 0), ("confirm", 0, 0), ("set", 2, 6)]])
def test_every_order_converges_whatever_the_changes_and_the_failures(stack: Stack, disruption: str,
                                                                   plans: list[list[Step]]) -> None:
    converge(stack, disruption, plans)
