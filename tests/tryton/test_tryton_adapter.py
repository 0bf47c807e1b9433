"""The Tryton adapter against live crm/scm/srm databases: the iron-triangle flows and poll triggers."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from adapters.tryton import TrytonAdapter, purchases
from bus.errors import PermanentError, TransientError
from tests.tryton.tryton_helpers import call, master_data, unique
from tryton import tryton_env

pytestmark = pytest.mark.tryton


def test_health_reports_the_server_version(crm: TrytonAdapter) -> None:
    health = crm.health()
    assert health.ok and "8.2" in health.detail


def test_demand_on_scm_creates_a_purchase_request_and_changes_amend_the_confirmed_sale(scm: TrytonAdapter) -> None:
    md = master_data(scm, supply_on_sale="always")
    ref = unique("SO")
    demand = {"reference": ref, "party": md["customer"], "sale_date": "2026-11-24",
              "lines": [{"product": md["product"], "quantity": 3}]}

    first = scm.call("update_demand", call(demand))
    assert first.result["state"] == "processing"
    assert len(first.result["purchase_requests"]) == 1

    # A redelivery of the same demand changes nothing.
    again = scm.call("update_demand", call(demand))
    assert again.result["sales"] == first.result["sales"]
    assert again.result["purchase_requests"] == first.result["purchase_requests"]
    assert not again.result["amended"]

    def request_quantities(result: dict[str, object]) -> list[float]:
        ids = result["purchase_requests"]
        assert isinstance(ids, list)
        return sorted(r["quantity"] for r in scm.client.read("purchase.request", ids, ["quantity"]))

    # The customer orders more, then less: the confirmed sale is amended (sale_amendment), its request follows.
    more = scm.call("update_demand", call({**demand, "lines": [{"product": md["product"], "quantity": 5}]}))
    assert more.result["sales"] == first.result["sales"] and more.result["amended"] == first.result["sales"]
    assert more.result["demand"] == [{"product": md["product"], "quantity": 5.0}]
    assert request_quantities(more.result) == [5.0]
    less = scm.call("update_demand", call({**demand, "lines": [{"product": md["product"], "quantity": 2}]}))
    assert less.result["demand"] == [{"product": md["product"], "quantity": 2.0}] and less.result["refused"] == []
    assert request_quantities(less.result) == [2.0]
    assert scm.client.search("sale.amendment", [["sale", "in", first.result["sales"]]])

    # The order is cancelled: nothing stays planned, and the request goes to 0 (the SRM stops buying).
    gone = scm.call("update_demand", call({**demand, "status": "cancelled", "lines": []}))
    assert gone.result["demand"] == [] and request_quantities(gone.result) == [0.0]


def test_purchase_request_trigger_carries_the_origin_sale(scm: TrytonAdapter) -> None:
    md = master_data(scm, supply_on_sale="always")
    ref = unique("SO")
    before = scm.poll("purchase_requests_changed", None).watermark
    scm.call("update_demand", call({"reference": ref, "party": md["customer"],
                                    "lines": [{"product": md["product"], "quantity": 4}]}))
    found = [p for _, p in scm.poll("purchase_requests_changed", before).records
             if p["sale"] and p["sale"]["reference"] == ref]
    assert len(found) == 1
    request = found[0]
    assert request["product"]["id"] == md["product"] and request["quantity"] == 4.0
    assert request["party"]["id"] == md["supplier"]  # from the product's supplier list
    assert request["state"] == "draft" and request["origin_model"] == "sale.sale"
    json.dumps(request)  # plain JSON


def test_supply_planning_creates_a_request_for_a_stock_shortage(scm: TrytonAdapter) -> None:
    md = master_data(scm, supply_on_sale=None)  # stock product: the sale ships from stock, planning must buy
    sold = scm.call("update_demand", call({"reference": unique("SO"), "party": md["customer"],
                                           "lines": [{"product": md["product"], "quantity": 7}]}))
    assert sold.result["purchase_requests"] == []
    planned = scm.call("run_supply_planning", call({}))
    requests = scm.client.search_read("purchase.request", [["id", "in", planned.result["purchase_requests"]],
                                                           ["product", "=", md["product"]]], ["quantity", "origin"])
    assert len(requests) == 1 and requests[0]["quantity"] == 7.0
    assert requests[0]["origin"].startswith("stock.order_point")


def test_create_purchase_on_srm_is_confirmed_and_idempotent(srm: TrytonAdapter) -> None:
    md = master_data(srm, price="4.25")
    payload = {"reference": unique("PR"), "party": md["supplier"],
               "lines": [{"product": md["product"], "quantity": 6, "delivery_date": "2026-12-15"}]}
    created = srm.call("create_purchase", call(payload))
    assert created.result["state"] == "processing" and created.result["created"] is True
    assert created.reference == created.result["number"]
    line = srm.client.search_read("purchase.line", [["purchase", "=", created.result["id"]]],
                                  ["unit_price", "quantity", "delivery_date"])[0]
    assert str(line["unit_price"]) == "4.25"  # the supplier's price list, since the payload gave none
    assert line["delivery_date"] == dt.date(2026, 12, 15)

    redelivered = srm.call("create_purchase", call(payload))
    assert redelivered.result["id"] == created.result["id"] and redelivered.result["created"] is False


def test_update_purchase_delay_moves_the_incoming_date(srm: TrytonAdapter) -> None:
    md = master_data(srm)
    created = srm.call("create_purchase", call({"reference": unique("PR"), "party": md["supplier"],
                                                "lines": [{"product": md["product"], "quantity": 2}]}))
    update = call({"purchase": created.result["id"], "delivery_date": "2027-01-20"})
    srm.call("update_purchase", update)
    srm.call("update_purchase", update)  # redelivery: one comment, same date
    line = srm.client.search_read("purchase.line", [["purchase", "=", created.result["id"]]], ["delivery_date"])[0]
    assert line["delivery_date"] == dt.date(2027, 1, 20)
    comment = srm.client.read("purchase.purchase", [created.result["id"]], ["comment"])[0]["comment"]
    assert comment.count("delivery date 2027-01-20") == 1


def test_a_poll_reads_a_purchase_only_once_update_purchase_has_written_all_of_it(
        srm: TrytonAdapter, monkeypatch: pytest.MonkeyPatch) -> None:
    md = master_data(srm)
    created = srm.call("create_purchase", call({"reference": unique("PR"), "party": md["supplier"],
                                                "lines": [{"product": md["product"], "quantity": 2}]}))
    order: list[str] = []
    midway, go_on = threading.Event(), threading.Event()
    noted = purchases.append_comment

    def held_note(*args: Any, **kwargs: Any) -> bool:  # the moves are written; the note is not yet
        midway.set()
        go_on.wait(30)
        written = noted(*args, **kwargs)
        order.append("note")
        return written

    read = srm.client.search_read

    def polled(model: str, *args: Any, **kwargs: Any) -> Any:
        if model == "purchase.purchase" and threading.current_thread().name == "poll":
            order.append("poll")
        return read(model, *args, **kwargs)

    monkeypatch.setattr(purchases, "append_comment", held_note)
    monkeypatch.setattr(srm.client, "search_read", polled)
    update = threading.Thread(target=srm.call, args=("update_purchase", call(
        {"purchase": created.result["id"], "delivery_date": "2027-01-20"})))
    update.start()
    assert midway.wait(30)
    poll = threading.Thread(target=srm.served_orders_changed, args=(None,), name="poll")
    poll.start()
    # The poll must not read while the update is half done: give it two seconds to do so wrongly, then let the
    # update finish.
    deadline = time.monotonic() + 2.0
    while "poll" not in order and time.monotonic() < deadline:
        time.sleep(0.01)
    go_on.set()
    update.join(30)
    poll.join(30)
    assert order == ["note", "poll"]


def test_update_purchase_cancels_an_open_purchase(srm: TrytonAdapter) -> None:
    md = master_data(srm)
    created = srm.call("create_purchase", call({"reference": unique("PR"), "party": md["supplier"],
                                                "confirm": False,
                                                "lines": [{"product": md["product"], "quantity": 1}]}))
    assert created.result["state"] == "draft"
    cancelled = srm.call("update_purchase", call({"purchase": created.result["id"], "cancel": True}))
    assert cancelled.result["state"] == "cancelled"


def test_crm_note_and_promised_date(crm: TrytonAdapter) -> None:
    md = master_data(crm)
    sale = crm.call("upsert_sale", call({"reference": unique("CRM"), "party": md["customer"], "confirm": True,
                                         "lines": [{"product": md["product"], "quantity": 1}]}))
    note = call({"sale": sale.result["id"], "note": "PO 42 placed with the supplier"})
    assert crm.call("add_sale_note", note).result["note_written"] is True
    assert crm.call("add_sale_note", note).result["note_written"] is False  # same event redelivered
    crm.call("update_promised_date", call({"reference": sale.result["reference"], "promised_date": "2027-02-01",
                                           "reason": "supplier delay"}))
    comment = crm.client.read("sale.sale", [sale.result["id"]], ["comment"])[0]["comment"]
    assert comment.count("PO 42 placed") == 1
    assert "promised date 2027-02-01: supplier delay" in comment


def test_bad_payload_is_permanent_and_names_the_field(crm: TrytonAdapter) -> None:
    md = master_data(crm)
    with pytest.raises(PermanentError, match=r"field 'lines\[0\].quantity' must be a number, got 'many'"):
        crm.call("upsert_sale", call({"reference": unique("BAD"), "party": md["customer"],
                                      "lines": [{"product": md["product"], "quantity": "many"}]}))
    with pytest.raises(PermanentError, match=r"field 'party' must be a Tryton record id \(required"):
        crm.call("upsert_sale", call({"reference": unique("BAD"), "lines": []}))


def test_poll_sees_a_created_then_a_modified_sale_once_each_across_a_restart(
        make_adapter: Callable[..., TrytonAdapter], tmp_path: Path) -> None:
    # The bus keeps the watermark and the dedup keys of the overlap window; the test plays that role and
    # persists both in a file, re-creating the adapter in between (a bus restart).
    state = tmp_path / "poll.json"

    def poll_once() -> list[dict[str, object]]:
        adapter = make_adapter("crm")
        saved = json.loads(state.read_text()) if state.exists() else {"watermark": None, "seen": []}
        result = adapter.poll("sales_changed", saved["watermark"])
        fresh = [(k, p) for k, p in result.records if k not in saved["seen"]]
        state.write_text(json.dumps({"watermark": result.watermark,
                                     "seen": saved["seen"] + [k for k, _ in fresh]}))
        adapter.close()
        return [p for _, p in fresh]

    poll_once()  # catch up with whatever earlier tests created
    writer = make_adapter("crm")
    md = master_data(writer)
    ref = unique("POLL")
    writer.call("upsert_sale", call({"reference": ref, "party": md["customer"],
                                     "lines": [{"product": md["product"], "quantity": 2, "unit_price": "9.50"}]}))
    created = [p for p in poll_once() if p["reference"] == ref]
    assert len(created) == 1
    assert created[0]["state"] == "draft"
    assert created[0]["lines"][0]["unit_price"] == "9.50" and created[0]["lines"][0]["quantity"] == 2.0
    assert created[0]["party"]["id"] == md["customer"]
    assert [p for p in poll_once() if p["reference"] == ref] == []  # nothing new: not seen twice

    writer.call("add_sale_note", call({"reference": ref, "note": "changed"}))
    modified = [p for p in poll_once() if p["reference"] == ref]
    assert len(modified) == 1 and "changed" in modified[0]["comment"]
    assert [p for p in poll_once() if p["reference"] == ref] == []


def test_server_down_is_transient_and_the_flow_resumes_after_restart(
        tryton_server: tryton_env.TrytonServer, crm: TrytonAdapter) -> None:
    md = master_data(crm)
    tryton_server.stop()
    try:
        with pytest.raises(TransientError, match="cannot reach"):
            crm.call("upsert_party", call({"name": unique("Down"), "code": unique("D")}))
        assert crm.health().ok is False
    finally:
        tryton_server.launch()
    # Same adapter, same session (sessions live in the database): the delivery simply succeeds now.
    sale = crm.call("upsert_sale", call({"reference": unique("UP"), "party": md["customer"],
                                         "lines": [{"product": md["product"], "quantity": 1}]}))
    assert sale.result["state"] == "draft"
