"""A supplier's partial confirmation on the live SRM: the confirmed purchase is amended down to the confirmed
quantity (purchase_amendment), its moves take the supplier's date, applying it again changes nothing, and the
purchase poll still shows the shortfall against what was ordered (so flow 2 re-plans the customer order)."""

from __future__ import annotations

import datetime as dt

import pytest

from adapters.tryton import TrytonAdapter
from bus.errors import PermanentError
from tests.tryton.tryton_helpers import call, master_data, unique

pytestmark = pytest.mark.tryton


def test_a_partial_confirmation_amends_the_purchase_line_and_keeps_the_shortfall_visible(srm: TrytonAdapter) -> None:
    md = master_data(srm, price="2.50")
    reference = f"{unique('SO')}/{unique('PR')}"
    created = srm.call("create_purchase", call({"reference": reference, "party": md["supplier"], "lines": [
        {"product": md["product"], "quantity": 10, "delivery_date": "2026-12-15"},
        {"product": md["product"], "quantity": 4, "delivery_date": "2026-12-15"}]}))
    pid, number = created.result["id"], created.result["number"]
    assert created.result["state"] == "processing"
    before = srm.poll("purchases_changed", None).watermark
    # When the supplier confirms 6 of the 10 of line 1, a week late
    confirmation = call({"number": number, "party": md["supplier"], "delivery_date": "2026-12-22",
                         "lines": [{"line_no": 1, "quantity": 6}]})
    done = srm.call("confirm_purchase", confirmation)
    # Then line 1 is amended to 6 (line 2 untouched), and what was ordered stays in its note
    lines = srm.client.search_read("purchase.line", [["purchase", "=", pid]], ["quantity", "note", "moves"],
                                   order=[("sequence", "ASC"), ("id", "ASC")])
    assert [line["quantity"] for line in lines] == [6.0, 4.0]
    assert "(supplier confirmed 6 of 10)" in (lines[0]["note"] or "")
    amendments = srm.client.search("purchase.amendment", [["purchase", "=", pid]])
    assert len(amendments) == 1
    assert done.result["lines"] == [{"line_no": 1, "line": lines[0]["id"], "ordered": 10.0, "quantity": 6.0,
                                     "shortfall": 4.0, "delivery_date": None}]
    moves = srm.client.read("stock.move", lines[0]["moves"], ["state", "quantity", "planned_date"])
    live = [m for m in moves if m["state"] != "cancelled"]
    assert sum(m["quantity"] for m in live) == 6.0 and {m["planned_date"] for m in live} == {dt.date(2026, 12, 22)}
    # Applying the same confirmation again (a redelivery) changes nothing
    srm.call("confirm_purchase", confirmation)
    assert srm.client.search("purchase.amendment", [["purchase", "=", pid]]) == amendments
    assert [x["quantity"] for x in srm.client.read("purchase.line", [lines[0]["id"]], ["quantity"])] == [6.0]
    # And the SRM's purchase poll reports the shortfall against the order: 10 ordered, 6 coming, a week late
    [polled] = [p for _, p in srm.poll("purchases_changed", before).records if p["id"] == pid]
    first = polled["lines"][0]
    assert (first["quantity"], first["confirmed_quantity"], first["expected_quantity"]) == (10.0, 6.0, 6.0)
    assert first["delay_days"] == 7
    assert "confirmed_quantity" not in polled["lines"][1] and polled["lines"][1]["expected_quantity"] == 4.0
    assert "supplier confirmed: line 1: 6 of 10 confirmed" in (polled["comment"] or "")


def test_a_confirmation_naming_a_line_the_purchase_does_not_have_is_refused(srm: TrytonAdapter) -> None:
    md = master_data(srm)
    created = srm.call("create_purchase", call({"reference": unique("PR"), "party": md["supplier"],
                                                "lines": [{"product": md["product"], "quantity": 3}]}))
    with pytest.raises(PermanentError, match="no line 2"):
        srm.call("confirm_purchase", call({"number": created.result["number"],
                                           "lines": [{"line_no": 2, "quantity": 1}]}))
