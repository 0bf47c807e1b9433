"""Adapter.call_many's default: the calls one after another, each one's outcome or exception, in order."""

from __future__ import annotations

from adapters.base import Adapter, Call, Outcome, operation
from bus.envelope import Event
from bus.errors import PermanentError, TransientError


class ScriptedAdapter(Adapter):
    """Answers each call as its payload says; records the order of the calls."""

    name = "scripted"

    def __init__(self) -> None:
        super().__init__("scripted", {})
        self.seen: list[str] = []

    @operation()
    def update(self, call: Call) -> Outcome:
        self.seen.append(call.idempotency_key)
        if call.payload == "transient":
            raise TransientError("busy", retry_after=3)
        if call.payload == "permanent":
            raise PermanentError("refused")
        if call.payload == "bug":
            raise KeyError("missing")
        return Outcome(result=call.payload, reference=f"R-{call.idempotency_key}")


def make_call(payload: str, key: str) -> Call:
    event = Event(type="t", source="s", data=payload)
    return Call(event=event, payload=payload, idempotency_key=key)


def test_outcomes_and_exceptions_come_back_in_order_and_nothing_is_raised() -> None:
    adapter = ScriptedAdapter()
    calls = [make_call(p, f"k{i}") for i, p in enumerate(["a", "transient", "bug", "permanent", "b"])]

    results = adapter.call_many("update", calls)

    assert adapter.seen == ["k0", "k1", "k2", "k3", "k4"]  # every call made, one after another
    assert results[0] == Outcome(result="a", reference="R-k0")
    assert isinstance(results[1], TransientError) and results[1].retry_after == 3
    assert isinstance(results[2], KeyError)
    assert isinstance(results[3], PermanentError) and str(results[3]) == "refused"
    assert results[4] == Outcome(result="b", reference="R-k4")


def test_no_calls_give_no_results() -> None:
    assert ScriptedAdapter().call_many("update", []) == []
