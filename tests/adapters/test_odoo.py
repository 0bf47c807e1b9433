"""The odoo adapter on the wire against a local Odoo (JSON-2 and /jsonrpc, tests/helpers/fake_odoo.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from adapters.base import Adapter, Call
from adapters.odoo import OdooAdapter
from bus.envelope import Event
from bus.errors import ConfigError, PermanentError, TransientError
from bus.journal import Journal
from bus.testing import AdapterContract, make_call
from bus.triggers import MemoryWatermarkStore, TriggerPlan, TriggerRunner, WatermarkStore
from tests.helpers.fake_odoo import FakeOdoo, OdooError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "odoo"
KEY = "odoo-test-key-0001"


@pytest.fixture
def odoo() -> Iterator[FakeOdoo]:
    server = FakeOdoo(api_key=KEY).start()
    server.set_clock("2026-11-24 08:00:00")
    server.supplier = server.add("res.partner", name="Bolt Supplies", ref="S-BOLT", supplier_rank=1, is_company=True)
    server.customer = server.add("res.partner", name="ACME Corp", ref="C-ACME", customer_rank=1, is_company=True)
    server.widget = server.add("product.product", name="Widget", default_code="W-100", standard_price=4.25)
    server.gadget = server.add("product.product", name="Gadget", default_code="G-200")
    yield server
    server.stop()


def settings(server: FakeOdoo, **extra: Any) -> dict[str, Any]:
    return {"url": server.url, "database": "acme", "api_key": KEY, "timeout": 5, **extra}


def rpc_settings(server: FakeOdoo, **extra: Any) -> dict[str, Any]:
    return settings(server, protocol="jsonrpc", login="bot", **extra)


@pytest.fixture(params=["json2", "jsonrpc"])
def adapter(request: pytest.FixtureRequest, odoo: FakeOdoo) -> Iterator[OdooAdapter]:
    made = OdooAdapter("srm", settings(odoo) if request.param == "json2" else rpc_settings(odoo))
    made.open()
    yield made
    made.close()


def po_payload(server: FakeOdoo, reference: str = "SO-1/1", **extra: Any) -> dict[str, Any]:
    return {"reference": reference, "partner_id": server.supplier, "date": "2026-12-01 00:00:00", "confirm": True,
            "lines": [{"product_id": server.widget, "quantity": 5, "price_unit": "4.25"}], **extra}


def keyed(payload: Any) -> Call:
    return make_call(payload, idempotency_key="evt-9:route:srm.upsert_purchase_order")


class TestOdooJson2Contract(AdapterContract):
    @pytest.fixture
    def adapter_factory(self, odoo: FakeOdoo) -> Any:
        self.server = odoo
        return lambda s: OdooAdapter("srm", s)

    @pytest.fixture
    def good_settings(self, odoo: FakeOdoo) -> Mapping[str, Any]:
        return settings(odoo)

    def junk_settings(self, good_settings: Mapping[str, Any]) -> list[Any]:
        no_login = {k: v for k, v in good_settings.items() if k != "login"}
        return [{**good_settings, "protocol": "xmlrpc"}, {"url": "ftp://x", "api_key": "k"},
                {**no_login, "protocol": "jsonrpc"}]  # jsonrpc without a login

    def arrange_success(self, adapter: Adapter) -> tuple[str, Any]:
        return "upsert_purchase_order", po_payload(self.server)

    def arrange_transient(self, adapter: Adapter) -> tuple[str, Any]:
        self.server.faults[("purchase.order", "*")] = OdooError(
            "odoo.exceptions.ConcurrencyError", "could not serialize access due to concurrent update", 500)
        return "upsert_purchase_order", po_payload(self.server)

    def arrange_permanent(self, adapter: Adapter) -> tuple[str, Any]:
        return "upsert_purchase_order", po_payload(self.server, lines=[{"product_id": 999, "quantity": 1}])

    def observed_idempotency_key(self, adapter: Adapter) -> str | None:
        keyed_requests = [r for r in self.server.requests if "idempotency-key" in r.headers]
        return keyed_requests[-1].headers["idempotency-key"]

    def arrange_poll(self, adapter: Adapter) -> str:
        self.server.add("purchase.order", partner_id=self.server.supplier, origin="X-1")
        return "purchase_orders_changed"


class TestOdooJsonRpcContract(TestOdooJson2Contract):
    @pytest.fixture
    def good_settings(self, odoo: FakeOdoo) -> Mapping[str, Any]:
        return rpc_settings(odoo)


# -- the wire ---------------------------------------------------------------------------------------------
def test_json2_sends_the_documented_request_and_reads_the_documented_answer(odoo: FakeOdoo) -> None:
    """Odoo's own example (external_api.rst): search_read on res.partner, answered [{"id": 25, ...}]."""
    odoo.next_id["res.partner"] = 25
    odoo.add("res.partner", name="Deco Addict", is_company=True)
    adapter = OdooAdapter("erp", settings(odoo, context={"lang": "en_US"}))
    request = json.loads((FIXTURES / "json2_search_read_request_odoo_docs.json").read_text())
    answer = adapter.client.call("res.partner", "search_read", domain=request["domain"], fields=request["fields"])
    assert answer == json.loads((FIXTURES / "json2_search_read_response_odoo_docs.json").read_text())
    seen = odoo.last("/json/2/res.partner/search_read")
    assert seen.headers["authorization"] == f"bearer {KEY}"
    assert seen.headers["x-odoo-database"] == "acme"
    assert seen.headers["content-type"].startswith("application/json")
    assert seen.json() == request  # the same body as the documented example, context included
    adapter.close()


def test_jsonrpc_authenticates_once_then_calls_execute_kw(odoo: FakeOdoo) -> None:
    adapter = OdooAdapter("erp", rpc_settings(odoo))
    adapter.open()
    adapter.client.call("res.partner", "search", domain=[], limit=1)
    adapter.client.call("product.product", "read", ids=[odoo.widget], fields=["name"])
    bodies = [r.json()["params"] for r in odoo.requests if r.path == "/jsonrpc"]
    assert [b["method"] for b in bodies] == ["authenticate", "execute_kw", "execute_kw"]
    assert bodies[1]["args"] == ["acme", 2, KEY, "res.partner", "search", [], {"domain": [], "limit": 1}]
    assert bodies[2]["args"][5] == [[odoo.widget]]  # a recordset method gets its ids as the first argument
    adapter.close()


def test_wrong_api_key_is_permanent_and_never_shown(odoo: FakeOdoo) -> None:
    for made in (OdooAdapter("erp", settings(odoo, api_key="wrong-key-123")),
                 OdooAdapter("erp", rpc_settings(odoo, api_key="wrong-key-123"))):
        with pytest.raises(PermanentError) as info:
            made.open()
            made.call("upsert_partner", make_call({"code": "C-1", "name": "x"}))
        assert "wrong-key-123" not in str(info.value)
        made.close()
    with pytest.raises(PermanentError, match="Invalid apikey"):
        OdooAdapter("erp", settings(odoo, api_key="wrong-key-123")).client.call("res.partner", "search", domain=[])


@pytest.mark.parametrize(("error", "kind"), [
    (OdooError("odoo.exceptions.ValidationError", "The quantity must be positive", 422), PermanentError),
    (OdooError("odoo.exceptions.AccessError", "You are not allowed to modify 'Purchase Order'", 403), PermanentError),
    (OdooError("odoo.exceptions.MissingError", "Record does not exist or has been deleted.", 404), PermanentError),
    (OdooError("odoo.exceptions.ConcurrencyError", "could not serialize access", 500), TransientError),
    (OdooError("psycopg2.errors.LockNotAvailable", "could not obtain lock on row", 500), TransientError),
    (OdooError("builtins.ValueError", "Invalid field 'x_unknown' on model 'purchase.order'", 500), PermanentError),
    (OdooError("werkzeug.exceptions.ServiceUnavailable", "maintenance", 503), TransientError),
])
def test_errors_are_classified_by_exception_name_then_status(adapter: OdooAdapter, odoo: FakeOdoo,
                                                               error: OdooError, kind: type[Exception]) -> None:
    odoo.faults[("purchase.order", "*")] = error
    with pytest.raises(kind) as info:
        adapter.call("upsert_purchase_order", keyed(po_payload(odoo)))
    assert error.name in str(info.value) and error.message in str(info.value)
    assert not isinstance(info.value, TransientError if kind is PermanentError else PermanentError)


def test_connection_refused_is_transient(odoo: FakeOdoo) -> None:
    adapter = OdooAdapter("erp", settings(odoo, url="http://127.0.0.1:9"))
    with pytest.raises(TransientError):
        adapter.call("upsert_partner", make_call({"code": "C-1", "name": "x"}))


def test_settings_are_checked_with_the_field_named(odoo: FakeOdoo) -> None:
    with pytest.raises(ConfigError, match="protocol"):
        OdooAdapter("erp", settings(odoo, protocol="xmlrpc"))
    with pytest.raises(ConfigError, match="login"):
        OdooAdapter("erp", settings(odoo, protocol="jsonrpc"))


# -- orders -----------------------------------------------------------------------------------------------
def test_purchase_order_is_created_confirmed_and_not_duplicated_on_replay(adapter: OdooAdapter, odoo: FakeOdoo) -> None:
    first = adapter.call("upsert_purchase_order", keyed(po_payload(odoo)))
    again = adapter.call("upsert_purchase_order", keyed(po_payload(odoo)))
    orders = odoo.find("purchase.order", origin="SO-1/1")
    assert len(orders) == 1 and orders[0]["state"] == "purchase" and orders[0]["date_approve"]
    assert first.reference == again.reference == orders[0]["name"] == "P00001"
    assert first.result["created"] is True and again.result["created"] is False
    (line,) = odoo.find("purchase.order.line", order_id=orders[0]["id"])
    assert line["product_qty"] == 5 and line["price_unit"] == 4.25


def test_confirmed_purchase_order_changes_quantities_without_deleting_lines(adapter: OdooAdapter,
                                                                            odoo: FakeOdoo) -> None:
    adapter.call("upsert_purchase_order", keyed(po_payload(odoo, lines=[
        {"product_id": odoo.widget, "quantity": 5}, {"product_id": odoo.gadget, "quantity": 2}])))
    adapter.call("upsert_purchase_order", keyed(po_payload(odoo, lines=[{"product_id": odoo.widget, "quantity": 8}])))
    (order,) = odoo.find("purchase.order", origin="SO-1/1")
    lines = {r["product_id"]: r["product_qty"] for r in odoo.find("purchase.order.line", order_id=order["id"])}
    assert lines == {odoo.widget: 8, odoo.gadget: 0}  # Odoo refuses to delete a confirmed line: qty 0 instead


def test_draft_purchase_order_lines_are_replaced(adapter: OdooAdapter, odoo: FakeOdoo) -> None:
    payload = po_payload(odoo, confirm=False, lines=[{"product_id": odoo.widget, "quantity": 5},
                                                     {"product_id": odoo.gadget, "quantity": 2}])
    adapter.call("upsert_purchase_order", keyed(payload))
    adapter.call("upsert_purchase_order", keyed({**payload, "lines": [{"product_id": odoo.gadget, "quantity": 3}]}))
    (order,) = odoo.find("purchase.order", origin="SO-1/1")
    assert order["state"] == "draft"
    assert [(r["product_id"], r["product_qty"]) for r in odoo.find("purchase.order.line", order_id=order["id"])] \
        == [(odoo.gadget, 3)]


def test_cancel_and_confirm_use_the_button_methods(adapter: OdooAdapter, odoo: FakeOdoo) -> None:
    adapter.call("upsert_purchase_order", keyed(po_payload(odoo, confirm=False)))
    adapter.call("confirm_purchase_order", keyed({"reference": "SO-1/1"}))
    outcome = adapter.call("cancel_purchase_order", keyed({"reference": "SO-1/1"}))
    assert outcome.result["state"] == "cancel"
    assert [r.path.rsplit("/", 1)[-1] for r in odoo.requests if "button_" in r.path] == ["button_confirm",
                                                                                        "button_cancel"] \
        or adapter.client.protocol == "jsonrpc"
    with pytest.raises(PermanentError, match="cancelled"):
        adapter.call("upsert_purchase_order", keyed(po_payload(odoo)))


def test_sale_order_upsert_confirm_and_cancel(adapter: OdooAdapter, odoo: FakeOdoo) -> None:
    payload = {"reference": "CUST-PO-77", "partner_id": odoo.customer, "date": "2026-12-05 00:00:00",
               "lines": [{"product_id": odoo.widget, "quantity": 3, "price_unit": 10}], "confirm": True}
    outcome = adapter.call("upsert_sale_order", make_call(payload))
    (order,) = odoo.find("sale.order", client_order_ref="CUST-PO-77")
    assert order["state"] == "sale" and order["commitment_date"] == "2026-12-05 00:00:00"
    assert outcome.reference == order["name"] == "S00001" and order["amount_total"] == 30
    adapter.call("upsert_sale_order", make_call({**payload, "status": "cancelled"}))
    assert odoo.get("sale.order", order["id"])["state"] == "cancel"


def test_bad_payloads_name_the_field(adapter: OdooAdapter, odoo: FakeOdoo) -> None:
    with pytest.raises(PermanentError, match=r"lines\[0\].quantity"):
        adapter.call("upsert_purchase_order", keyed(po_payload(odoo, lines=[{"product_id": odoo.widget,
                                                                             "quantity": "lots"}])))
    with pytest.raises(PermanentError, match="partner_id"):
        adapter.call("upsert_purchase_order", keyed({"reference": "R-9", "lines": []}))
    with pytest.raises(PermanentError, match="must be an object"):
        adapter.call("upsert_purchase_order", keyed(["not", "an", "object"]))


def test_master_data_upserts_by_code_and_lists_for_xref(adapter: OdooAdapter, odoo: FakeOdoo) -> None:
    made = adapter.call("upsert_partner", make_call({"code": "S-NUT", "name": "Nut & Co", "supplier": True}))
    again = adapter.call("upsert_partner", make_call({"code": "S-NUT", "name": "Nut and Co"}))
    assert made.reference == again.reference and again.result["name"] == "Nut and Co"
    adapter.call("upsert_product", make_call({"code": "W-100", "list_price": 12.5}))
    assert odoo.get("product.product", odoo.widget)["list_price"] == 12.5
    suppliers = {(r.code, r.name) for r in adapter.master_data("supplier") or []}
    assert suppliers == {("S-BOLT", "Bolt Supplies"), ("S-NUT", "Nut and Co")}
    assert [(r.id, r.code) for r in adapter.master_data("customer") or []] == [(str(odoo.customer), "C-ACME")]
    assert {r.code for r in adapter.master_data("material") or []} == {"W-100", "G-200"}
    assert adapter.master_data("warehouse") is None


# -- polling ----------------------------------------------------------------------------------------------
def _runner(adapter: OdooAdapter, store: WatermarkStore, trigger: str, sink: list[Event]) -> TriggerRunner:
    return TriggerRunner({adapter.system: adapter}, [TriggerPlan(adapter.system, trigger)], store, sink.extend)


def test_poll_pages_in_write_date_order_with_lines(odoo: FakeOdoo) -> None:
    adapter = OdooAdapter("srm", settings(odoo, poll={"page_size": 2}))
    ids = []
    for i in range(5):
        odoo.tick()
        ids.append(odoo.add("purchase.order", partner_id=odoo.supplier, origin=f"R-{i}",
                            order_line=[[0, 0, {"product_id": odoo.widget, "product_qty": i + 1}]]))
    result = adapter.poll("purchase_orders_changed", None)
    assert [p["id"] for _, p in result.records] == ids
    assert result.watermark == odoo.get("purchase.order", ids[-1])["write_date"]
    assert [p["lines"][0]["product_qty"] for _, p in result.records] == [1, 2, 3, 4, 5]
    assert result.records[0][1]["partner_id"] == [odoo.supplier, "Bolt Supplies"]
    searches = [r.json() for r in odoo.requests if r.path == "/json/2/purchase.order/search_read"]
    assert [(s["offset"], s["limit"], s["order"]) for s in searches] == [(0, 2, "write_date asc, id asc"),
                                                                         (2, 2, "write_date asc, id asc"),
                                                                         (4, 2, "write_date asc, id asc")]


@pytest.mark.parametrize("protocol", ["json2", "jsonrpc"])
def test_poll_resumes_after_a_restart_without_gaps_or_repeats(odoo: FakeOdoo, protocol: str,
                                                               tmp_path: Path) -> None:
    """Two bus lives with the journal's watermark store (closed and opened again in between): every order
    version is emitted exactly once, including changes stamped in the same second as the watermark and rows
    committed late with an older stamp."""
    make = settings if protocol == "json2" else rpc_settings
    journal_url = f"sqlite:///{tmp_path}/journal.sqlite"
    store = Journal(journal_url)
    emitted: list[Event] = []
    first = OdooAdapter("srm", make(odoo, poll={"page_size": 2, "overlap": 5}))
    first.open()
    a = odoo.add("purchase.order", partner_id=odoo.supplier, origin="A")
    b = odoo.add("purchase.order", partner_id=odoo.supplier, origin="B")
    odoo.tick()
    c = odoo.add("purchase.order", partner_id=odoo.supplier, origin="C")
    _runner(first, store, "purchase_orders_changed", emitted).run_once(TriggerPlan("srm", "purchase_orders_changed"))
    first.close()  # the bus stops
    store.close()
    # While it is down: a change in the watermark's own second, a late commit stamped 3 s earlier, a new
    # order later, and an order changed again.
    d = odoo.add("purchase.order", partner_id=odoo.supplier, origin="D")
    odoo.tick(-3)
    e = odoo.add("purchase.order", partner_id=odoo.supplier, origin="E")
    odoo.tick(10)
    f = odoo.add("purchase.order", partner_id=odoo.supplier, origin="F")
    odoo.execute("purchase.order", "write", [a], {"vals": {"partner_ref": "changed"}})
    second = OdooAdapter("srm", make(odoo, poll={"page_size": 2, "overlap": 5}))
    second.open()
    store = Journal(journal_url)
    runner = _runner(second, store, "purchase_orders_changed", emitted)
    plan = TriggerPlan("srm", "purchase_orders_changed")
    runner.run_once(plan)
    runner.run_once(plan)  # nothing new: nothing again
    second.close()
    store.close()
    versions = [(ev.data["id"], ev.data["write_date"]) for ev in emitted]
    assert len(versions) == len(set(versions)), f"repeated: {versions}"
    # the second life in (write_date, id) order: e was stamped early, a and f share a second
    assert [v[0] for v in versions] == [a, b, c, e, d, a, f]


def test_poll_cap_never_splits_one_write_date_second(odoo: FakeOdoo) -> None:
    adapter = OdooAdapter("srm", settings(odoo, poll={"page_size": 2, "max_records": 2, "overlap": 0}))
    first_second = [odoo.add("purchase.order", partner_id=odoo.supplier, origin=f"A{i}") for i in range(2)]
    odoo.tick()
    later = [odoo.add("purchase.order", partner_id=odoo.supplier, origin=f"B{i}") for i in range(3)]
    store, emitted = MemoryWatermarkStore(), []  # type: ignore[var-annotated]
    runner = _runner(adapter, store, "purchase_orders_changed", emitted)
    plan = TriggerPlan("srm", "purchase_orders_changed")
    runner.run_once(plan)
    assert [e.data["id"] for e in emitted] == first_second
    runner.run_once(plan)
    assert [e.data["id"] for e in emitted] == first_second + later  # the 3 of one second came together


def test_poll_rejects_a_watermark_that_is_not_a_date(odoo: FakeOdoo) -> None:
    adapter = OdooAdapter("srm", settings(odoo))
    with pytest.raises(PermanentError, match="watermark"):
        adapter.poll("purchase_orders_changed", "yesterday")


def test_poll_reports_what_the_bus_asked_next_to_what_odoo_plans(adapter: OdooAdapter, odoo: FakeOdoo) -> None:
    adapter.call("upsert_purchase_order", keyed(po_payload(odoo)))
    (order,) = odoo.find("purchase.order", origin="SO-1/1")
    (line_id,) = order["order_line"]
    odoo.tick(60)
    odoo.execute("purchase.order", "write", [order["id"]], {"vals": {"order_line": [
        [1, line_id, {"date_planned": "2026-12-04 00:00:00", "product_qty": 3}]]}})
    odoo.add("purchase.order", partner_id=odoo.supplier, origin="typed in Odoo",
             order_line=[[0, 0, {"product_id": odoo.widget, "product_qty": 1}]])
    records = {p["origin"]: p for _, p in adapter.poll("purchase_orders_changed", None).records}
    (line,) = records["SO-1/1"]["lines"]
    assert (line["requested_quantity"], line["requested_date"]) == (5, "2026-12-01 00:00:00")
    assert (line["product_qty"], line["delay_days"]) == (3, 3)
    (other,) = records["typed in Odoo"]["lines"]
    assert (other["requested_quantity"], other["requested_date"], other["delay_days"]) == (None, None, 0)


def test_master_data_lists_only_the_entities_a_system_declares(odoo: FakeOdoo) -> None:
    adapter = OdooAdapter("srm", settings(odoo, master_data={"supplier": {"domain": [["ref", "=like", "S-%"]]}}))
    assert [r.code for r in adapter.master_data("supplier") or []] == ["S-BOLT"]
    assert adapter.master_data("customer") is None and adapter.master_data("material") is None
    named = OdooAdapter("srm", settings(odoo, master_data={"material": {"code_field": "barcode"}}))
    assert {r.code for r in named.master_data("material") or []} == {None}


def test_jsonrpc_session_expiry_is_transient_and_logs_in_again(odoo: FakeOdoo) -> None:
    adapter = OdooAdapter("erp", rpc_settings(odoo))
    adapter.open()
    odoo.faults[("res.partner", "search")] = OdooError("odoo.http.SessionExpiredException", "Session expired", 100)
    original = odoo._jsonrpc

    def expire_once(request: Any) -> Any:
        status, headers, body = original(request)
        doc = json.loads(body)
        if doc.get("error", {}).get("data", {}).get("name") == "odoo.http.SessionExpiredException":
            odoo.faults.clear()
            doc["error"] = {"code": 100, "message": "Odoo Session Expired", "data": doc["error"]["data"]}
            body = json.dumps(doc).encode()
        return status, headers, body

    odoo._jsonrpc = expire_once  # type: ignore[method-assign]
    with pytest.raises(TransientError, match="session expired"):
        adapter.client.call("res.partner", "search", domain=[])
    assert adapter.client.call("res.partner", "search", domain=[], limit=1) == [odoo.supplier]
    methods = [r.json()["params"]["method"] for r in odoo.requests if r.path == "/jsonrpc"]
    assert methods.count("authenticate") == 2  # logged in again after the expiry
    adapter.close()


def test_health_names_the_version_and_never_raises(odoo: FakeOdoo) -> None:
    json2, rpc = OdooAdapter("erp", settings(odoo)).health(), OdooAdapter("erp", rpc_settings(odoo)).health()
    assert json2.ok and json2.detail == "Odoo 19.0, json2"
    assert rpc.ok and rpc.detail == "Odoo 19.0, jsonrpc"
    down = OdooAdapter("erp", settings(odoo, url="http://127.0.0.1:9")).health()
    assert not down.ok and down.detail


def test_rate_limit_and_gateway_answers_are_transient_with_the_wait_they_ask(odoo: FakeOdoo) -> None:
    adapter = OdooAdapter("erp", settings(odoo))
    odoo.canned = [(429, {"Retry-After": "7", "Content-Type": "text/html"}, b"<html>Too Many Requests</html>"),
                   (502, {"Content-Type": "text/html"}, b"<html>Bad Gateway</html>")]
    with pytest.raises(TransientError) as info:
        adapter.call("upsert_partner", make_call({"code": "C-1", "name": "x"}))
    assert info.value.retry_after == 7
    with pytest.raises(TransientError, match="502"):
        adapter.call("upsert_partner", make_call({"code": "C-1", "name": "x"}))
    assert adapter.call("upsert_partner", make_call({"code": "C-1", "name": "x"})).result["created"] is True


def test_a_server_slower_than_the_read_timeout_is_transient(odoo: FakeOdoo) -> None:
    adapter = OdooAdapter("erp", settings(odoo, timeout={"connect": 1, "read": 0.2}))
    odoo.delay = 0.5
    with pytest.raises(TransientError):
        adapter.call("upsert_partner", make_call({"code": "C-1", "name": "x"}))
