"""The one backoff of the bus's waiting loops (bus.backoff)."""

from __future__ import annotations

from bus.backoff import Backoff


def test_delays_double_from_first_up_to_the_cap() -> None:
    backoff = Backoff(0.2, 1.0)
    assert [backoff.delay(n) for n in range(1, 6)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    assert backoff.delay(0) == 0.2  # "no failure yet" waits the first step, never zero


def test_a_loop_steps_up_and_starts_over_after_a_reset() -> None:
    backoff = Backoff(0.002, 0.01)
    assert [backoff.next() for _ in range(4)] == [0.002, 0.004, 0.008, 0.01]
    backoff.reset()
    assert backoff.next() == 0.002
