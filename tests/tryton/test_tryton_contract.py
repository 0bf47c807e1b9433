"""The adapter contract suite over the Tryton adapter, against the live crm database."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from adapters.base import Adapter
from adapters.tryton import TrytonAdapter
from bus.testing import AdapterContract
from tests.tryton.tryton_helpers import call, master_data, settings, unique
from tryton import tryton_env

pytestmark = pytest.mark.tryton


class TestTrytonContract(AdapterContract):
    @pytest.fixture
    def adapter_factory(self, tryton_server: tryton_env.TrytonServer) -> Callable[[Mapping[str, Any]], Adapter]:
        return lambda s: TrytonAdapter("crm", s)

    @pytest.fixture
    def good_settings(self, tryton_server: tryton_env.TrytonServer) -> Mapping[str, Any]:
        return settings(tryton_server, "crm", poll_overlap=1)

    def junk_settings(self, good_settings: Mapping[str, Any]) -> list[Any]:
        no_db = {k: v for k, v in good_settings.items() if k != "database"}
        return [no_db, {**good_settings, "url": "127.0.0.1:8000"}, {**good_settings, "timeout": 0}]

    def arrange_success(self, adapter: Adapter) -> tuple[str, Any]:
        assert isinstance(adapter, TrytonAdapter)
        md = master_data(adapter)
        sale = adapter.call("upsert_sale", call({"reference": unique("CT"), "party": md["customer"],
                                                 "lines": [{"product": md["product"], "quantity": 1}]}))
        self._sale = sale.result["id"]
        return "add_sale_note", {"sale": self._sale, "note": "contract"}

    def arrange_transient(self, adapter: Adapter) -> tuple[str, Any]:
        assert isinstance(adapter, TrytonAdapter)
        # The server "went away": nothing listens on this port any more.
        adapter.client.url = f"http://127.0.0.1:{tryton_env.free_port()}"
        return "upsert_party", {"name": "unreachable"}

    def arrange_permanent(self, adapter: Adapter) -> tuple[str, Any]:
        return "upsert_sale", {"reference": unique("CT"), "party": 999999, "lines": [{"product": 1, "quantity": 1}]}

    def observed_idempotency_key(self, adapter: Adapter) -> str | None:
        assert isinstance(adapter, TrytonAdapter)
        comment = adapter.client.read("sale.sale", [self._sale], ["comment"])[0]["comment"] or ""
        keys = re.findall(r"\[ironbus ([^\]]+)\]", comment)
        return keys[-1] if keys else None

    def arrange_poll(self, adapter: Adapter) -> str:
        assert isinstance(adapter, TrytonAdapter)
        md = master_data(adapter)
        adapter.call("upsert_sale", call({"reference": unique("CP"), "party": md["customer"],
                                          "lines": [{"product": md["product"], "quantity": 2}]}))
        return "sales_changed"
