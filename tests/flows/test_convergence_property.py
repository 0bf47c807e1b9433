"""Convergence under fire, property-based, on live Tryton: changes faster than the bus polls, and while the bus
is down.

The property and its strategy live in tests/flows/convergence.py.
"""

from __future__ import annotations

import pytest

from demo.stack import Stack
from tests.flows.convergence import Step, converge, drawn_plans, stack

pytestmark = [pytest.mark.tryton, pytest.mark.slow]
__all__ = ["stack"]  # the module-scoped live triangle this file's examples share

DISRUPTIONS = ["fast", "bus_down"]


@pytest.mark.parametrize("disruption", DISRUPTIONS)
@drawn_plans
def test_every_order_converges_whatever_the_changes_and_the_failures(stack: Stack, disruption: str,
                                                                   plans: list[list[Step]]) -> None:
    converge(stack, disruption, plans)
