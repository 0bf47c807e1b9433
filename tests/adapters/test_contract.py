"""The adapter contract suite run over the stub adapter, and checks that the suite itself catches a bad adapter."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest

from adapters.base import Adapter, Call, Outcome, operation
from adapters.stub import StubAdapter
from bus.testing import AdapterContract, make_call


class TestStubContract(AdapterContract):
    @pytest.fixture
    def adapter_factory(self) -> Callable[[Mapping[str, Any]], Adapter]:
        return lambda settings: StubAdapter("sink", settings)

    @pytest.fixture
    def good_settings(self) -> Mapping[str, Any]:
        return {"operations": ["update_demand"], "result": {"po": "PO-1"}}

    def junk_settings(self, good_settings: Mapping[str, Any]) -> list[Any]:
        return [{"fail": "sometimes"}, {"operations": "update_demand"}, {"unknown_setting": 1}]

    def arrange_success(self, adapter: Adapter) -> tuple[str, Any]:
        return "update_demand", {"order_id": "SO-1"}

    def arrange_transient(self, adapter: Adapter) -> tuple[str, Any]:
        adapter.settings["fail"] = "transient"
        return "update_demand", {"order_id": "SO-2"}

    def arrange_permanent(self, adapter: Adapter) -> tuple[str, Any]:
        adapter.settings["fail"] = "permanent"
        return "update_demand", {"order_id": "SO-3"}

    def observed_idempotency_key(self, adapter: Adapter) -> str | None:
        assert isinstance(adapter, StubAdapter)
        return adapter.calls[-1][1].idempotency_key


class LeakyAdapter(Adapter):
    """Lets a vendor exception escape instead of translating it: the contract must catch that."""

    name = "leaky"

    @operation()
    def send(self, call: Call) -> Outcome:
        raise ConnectionResetError("peer reset")


def test_suite_catches_an_untranslated_vendor_exception() -> None:
    suite = AdapterContract()
    adapter = LeakyAdapter("leaky", {})
    suite.arrange_transient = lambda a: ("send", {})  # type: ignore[method-assign]
    with pytest.raises(ConnectionResetError):
        suite.test_transient_failure_raises_transient_error(adapter)


def test_suite_catches_a_schema_that_accepts_junk() -> None:
    suite = AdapterContract()
    with pytest.raises(AssertionError, match="accepted junk"):
        suite.test_settings_schema_rejects_junk(LeakyAdapter("leaky", {}), {})  # schema {"type": "object"} only


def test_make_call_builds_a_stable_idempotency_key() -> None:
    call = make_call({"a": 1})
    assert call.idempotency_key.startswith(call.event.id)
    assert make_call({}, idempotency_key="k").idempotency_key == "k"
