"""The adapter contract suite run over the generic http adapter against the local sink."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest

from adapters.base import Adapter
from adapters.http import HttpAdapter
from bus.testing import AdapterContract
from tests.adapters.http.conftest import Reply, Sink


class TestHttpContract(AdapterContract):
    @pytest.fixture
    def adapter_factory(self, sink: Sink) -> Callable[[Mapping[str, Any]], Adapter]:
        sink.on("PUT", "/orders/ok", Reply(200, json={"id": "ok-1"}))
        sink.on("PUT", "/orders/busy", Reply(503, json={"error": "maintenance"}))
        sink.on("PUT", "/orders/bad", Reply(422, json={"error": "quantity must be positive"}))
        self.sink = sink
        return lambda settings: HttpAdapter("orders", settings)

    @pytest.fixture
    def good_settings(self, sink: Sink) -> Mapping[str, Any]:
        return {"base_url": sink.url, "timeout": 2,
                "operations": {"put_order": {"method": "PUT", "path": "/orders/{{ order_id }}", "reference": "id"}}}

    def junk_settings(self, good_settings: Mapping[str, Any]) -> list[Any]:
        return [{**good_settings, "base_url": "localhost"}, {**good_settings, "operations": {}},
                {**good_settings, "auth": {"type": "kerberos"}}]

    def arrange_success(self, adapter: Adapter) -> tuple[str, Any]:
        return "put_order", {"order_id": "ok"}

    def arrange_transient(self, adapter: Adapter) -> tuple[str, Any]:
        return "put_order", {"order_id": "busy"}

    def arrange_permanent(self, adapter: Adapter) -> tuple[str, Any]:
        return "put_order", {"order_id": "bad"}

    def observed_idempotency_key(self, adapter: Adapter) -> str | None:
        return self.sink.requests[-1].headers.get("idempotency-key")
