"""The dynamics adapter against a local Dataverse Web API: rows, ETags, alternate keys, $batch, service
protection limits, change tracking across restarts, and the contract suite."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from adapters.base import Adapter, Outcome
from adapters.dynamics import DynamicsAdapter
from adapters.dynamics.adapter import key_segment, primary_key
from bus.envelope import Event
from bus.errors import PermanentError, TransientError
from bus.journal import Journal
from bus.testing import AdapterContract, make_call
from bus.triggers import TriggerPlan, TriggerRunner
from tests.helpers.dataverse import FakeDataverse


def adapter(dv: FakeDataverse, **extra: Any) -> DynamicsAdapter:
    instance = DynamicsAdapter("crm", dv.settings(**extra))
    instance.open()
    return instance


def order(number: str, **fields: Any) -> dict[str, Any]:
    return {"entity_set": "salesorders", "fields": {"name": f"Order {number}", "ordernumber": number, **fields}}


def test_create_with_return_representation_and_the_odata_headers(dv: FakeDataverse) -> None:
    outcome = adapter(dv).create(make_call(order("SO-1")))
    row = dv.rows["salesorders"][str(outcome.reference)]
    assert outcome.result["created"] is True and outcome.result["etag"] == f'W/"{row["versionnumber"]}"'
    assert outcome.result["record"]["ordernumber"] == "SO-1"
    method, path, headers, _ = dv.requests[-1]
    assert (method, path) == ("POST", "/api/data/v9.2/salesorders")
    assert headers["prefer"] == "return=representation" and headers["accept"] == "application/json"
    assert dv.token_requests[0]["scope"] == f"{dv.url}/.default"


def test_without_representation_the_id_comes_from_odata_entityid(dv: FakeDataverse) -> None:
    outcome = adapter(dv, return_representation=False).create(make_call(order("SO-2")))
    assert outcome.reference in dv.rows["salesorders"] and "record" not in outcome.result


def test_update_sends_if_match_and_a_stale_etag_is_permanent(dv: FakeDataverse) -> None:
    crm = adapter(dv)
    created = crm.create(make_call(order("SO-3")))
    etag = created.result["etag"]
    crm.update(make_call({"entity_set": "salesorders", "id": created.reference, "etag": etag,
                          "fields": {"description": "first"}}))
    assert dv.requests[-1][2]["if-match"] == etag
    with pytest.raises(PermanentError, match="412.*0x80060882"):
        crm.update(make_call({"entity_set": "salesorders", "id": created.reference, "etag": etag,
                              "fields": {"description": "second"}}))
    with pytest.raises(PermanentError, match="404"):  # If-Match: * never creates a deleted row anew
        crm.update(make_call({"entity_set": "salesorders", "id": "00000000-0000-0000-0000-000000000001",
                              "fields": {"description": "gone"}}))
    assert len(dv.rows["salesorders"]) == 1


def test_upsert_by_alternate_key_and_its_modes(dv: FakeDataverse) -> None:
    crm = adapter(dv)
    first = crm.upsert(make_call({"entity_set": "salesorders", "key": {"ordernumber": "SO-O'Neil"},
                                  "fields": {"name": "first"}}))
    again = crm.upsert(make_call({"entity_set": "salesorders", "key": {"ordernumber": "SO-O'Neil"},
                                  "fields": {"name": "second"}}))
    assert first.reference == again.reference and first.result["created"] and not again.result["created"]
    assert "ordernumber='SO-O''Neil'" in dv.requests[-1][1].replace("%27", "'")
    with pytest.raises(PermanentError, match="412"):
        crm.upsert(make_call({"entity_set": "salesorders", "key": {"ordernumber": "SO-O'Neil"}, "mode": "create_only",
                              "fields": {"name": "third"}}))
    assert dv.requests[-1][2]["if-none-match"] == "*"
    with pytest.raises(PermanentError, match="404"):
        crm.upsert(make_call({"entity_set": "salesorders", "key": {"ordernumber": "SO-404"}, "mode": "update_only",
                              "fields": {"name": "x"}}))
    keyed = crm.upsert(make_call({"entity_set": "salesorders", "fields": {"ordernumber": "SO-9", "name": "n"}},
                                 args={"key": ["ordernumber"]}))
    assert dv.rows["salesorders"][str(keyed.reference)]["ordernumber"] == "SO-9"


def test_key_segments_quote_strings_and_keep_numbers_and_guids() -> None:
    assert key_segment({"ordernumber": "SO-1"}) == "(ordernumber='SO-1')"
    assert key_segment({"a": 5, "b": "x y"}) == "(a=5,b='x%20y')"
    guid = "60c4e274-0d87-e711-80e5-00155db19e6d"
    assert key_segment({"ironbus_key": guid}) == f"(ironbus_key='{guid}')", "a text column quotes even a GUID"
    assert key_segment({"_customerid_value": guid}) == f"(_customerid_value={guid})", "a lookup takes it bare"
    with pytest.raises(PermanentError):
        key_segment({})
    assert primary_key("opportunities") == "opportunityid" and primary_key("salesorders") == "salesorderid"


def test_service_protection_429_is_transient_with_retry_after(dv: FakeDataverse) -> None:
    dv.throttle.append("0x80072322")
    with pytest.raises(TransientError) as info:
        adapter(dv).create(make_call(order("SO-4")))
    assert info.value.retry_after == 7.0 and "0x80072322" in str(info.value)


def test_bad_columns_and_payloads_are_permanent_and_named(dv: FakeDataverse) -> None:
    crm = adapter(dv)
    with pytest.raises(PermanentError, match="0x80060888.*bogus_column"):
        crm.create(make_call({"entity_set": "salesorders", "fields": {"bogus_column": 1}}))
    with pytest.raises(PermanentError, match="entity_set"):
        crm.create(make_call({"fields": {"name": "x"}}))
    with pytest.raises(PermanentError, match="GUID"):
        crm.update(make_call({"entity_set": "salesorders", "id": "1 or 1=1", "fields": {"name": "x"}}))


def test_token_is_cached_and_renewed_after_a_401(dv: FakeDataverse) -> None:
    crm = adapter(dv)
    for n in range(3):
        crm.create(make_call(order(f"T-{n}")))
    assert len(dv.token_requests) == 1
    dv.tokens.clear()
    crm.create(make_call(order("T-after")))
    assert len(dv.token_requests) == 2 and len(dv.rows["salesorders"]) == 4


def test_wrong_secret_is_permanent_and_not_echoed(dv: FakeDataverse) -> None:
    crm = adapter(dv, client_secret="not-the-secret")
    with pytest.raises(PermanentError) as info:
        crm.create(make_call(order("SO-x")))
    assert "invalid_client" in str(info.value) and "not-the-secret" not in str(info.value)


def test_call_many_is_one_batch_of_independent_requests(dv: FakeDataverse) -> None:
    crm = adapter(dv)
    calls = [make_call(order(f"B-{n}")) for n in range(5)]
    calls[2] = make_call({"entity_set": "salesorders", "fields": {"bogus_column": "x"}})
    answers = crm.call_many("create", calls)
    batches = [r for r in dv.requests if r[1].endswith("$batch")]
    assert len(batches) == 1 and batches[0][2]["prefer"] == "odata.continue-on-error"
    assert batches[0][2]["content-type"].startswith("multipart/mixed")
    assert isinstance(answers[2], PermanentError) and "0x80060888" in str(answers[2])
    assert [dv.rows["salesorders"][str(a.reference)]["ordernumber"] for a in answers if isinstance(a, Outcome)] \
        == ["B-0", "B-1", "B-3", "B-4"]


def test_an_atomic_change_set_rolls_back_and_every_call_is_retried_alone(dv: FakeDataverse) -> None:
    crm = adapter(dv, atomic_batches=True)
    calls = [make_call(order("A-1")), make_call({"entity_set": "salesorders", "fields": {"bogus_x": 1}}),
             make_call(order("A-3"))]
    answers = crm.call_many("create", calls)
    assert all(isinstance(a, TransientError) and "rolled back" in str(a) for a in answers)
    assert not dv.rows.get("salesorders")
    good = crm.call_many("create", [calls[0], calls[2]])
    assert all(isinstance(a, Outcome) for a in good) and len(dv.rows["salesorders"]) == 2


def test_read_back_brings_the_related_order(dv: FakeDataverse) -> None:
    crm = adapter(dv)
    sales_order = crm.create(make_call(order("SO-N", customerid="acme")))
    note = crm.create(make_call({"entity_set": "annotations", "order": sales_order.reference,
                                 "fields": {"subject": "Note", "notetext": "covered"}},
                                args={"read_back": {"entity_set": "salesorders", "id_from": "order",
                                                    "select": ["ordernumber", "customerid"]}}))
    assert note.result["related"]["ordernumber"] == "SO-N" and note.result["related"]["customerid"] == "acme"


def changes_adapter(dv: FakeDataverse, **opts: Any) -> DynamicsAdapter:
    return adapter(dv, triggers={"changes": {"entity_set": "salesorders", "select": ["name", "ordernumber"],
                                             "page_size": 2, "max_pages": 2, **opts}})


def test_change_tracking_pages_then_follows_the_delta_link_with_removals(dv: FakeDataverse) -> None:
    ids = [dv.put("salesorders", {"name": f"o{n}", "ordernumber": f"SO-{n}"}) for n in range(5)]
    crm = changes_adapter(dv)
    first = crm.changes(None)
    assert [p["ordernumber"] for _, p in first.records] == ["SO-0", "SO-1", "SO-2", "SO-3"]
    assert "$skiptoken" in str(first.watermark), "two pages per poll: the next page link is the watermark"
    second = crm.changes(first.watermark)
    assert [p["ordernumber"] for _, p in second.records] == ["SO-4"] and "$deltatoken" in str(second.watermark)
    assert all("odata.track-changes" in r[2]["prefer"] for r in dv.requests if r[0] == "GET")
    dv.put("salesorders", {"name": "new", "ordernumber": "SO-9"})
    dv.delete("salesorders", ids[1])
    third = crm.changes(second.watermark)
    assert [(p["_change"], p["salesorderid"]) for _, p in third.records][-1] == ("removed", ids[1])
    assert third.records[0][1]["ordernumber"] == "SO-9"
    assert crm.changes(third.watermark).records == []


def run(dv: FakeDataverse, url: str, emitted: list[Event], polls: int, fail_emit_at: int | None = None) -> None:
    journal = Journal(url)
    crm = changes_adapter(dv)
    calls = [0]

    def emit(events: list[Event]) -> None:
        calls[0] += 1
        if calls[0] == fail_emit_at:
            raise RuntimeError("the bus died before the events were journaled")
        emitted.extend(events)

    plan = TriggerPlan("crm", "changes")
    runner = TriggerRunner({"crm": crm}, [plan], journal, emit)
    try:
        for _ in range(polls):
            runner.run_once(plan)
    finally:
        crm.close()
        journal.close()


def test_delta_trigger_survives_restarts_without_gap_or_repeat(dv: FakeDataverse, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/journal.sqlite"
    ids = [dv.put("salesorders", {"name": f"o{n}", "ordernumber": f"SO-{n}"}) for n in range(5)]
    emitted: list[Event] = []
    run(dv, url, emitted, polls=1)                       # 4 of 5 (two pages), then the process stops
    ids.append(dv.put("salesorders", {"name": "o5", "ordernumber": "SO-5"}))
    with pytest.raises(RuntimeError):
        run(dv, url, emitted, polls=1, fail_emit_at=1)   # crash before the next page was journaled
    dv.delete("salesorders", ids[0])
    run(dv, url, emitted, polls=3)
    seen = [(e.data["_change"], e.data["salesorderid"]) for e in emitted]
    assert seen == [("changed", i) for i in ids] + [("removed", ids[0])]
    assert len({e.id for e in emitted}) == len(emitted)


class TestDynamicsContract(AdapterContract):
    @pytest.fixture
    def adapter_factory(self, dv: FakeDataverse) -> Any:
        self.dv = dv
        return lambda settings: DynamicsAdapter("crm", settings)

    @pytest.fixture
    def good_settings(self, dv: FakeDataverse) -> dict[str, Any]:
        return dv.settings(idempotency_key_field="ironbus_key",
                           triggers={"changes": {"entity_set": "annotations", "select": ["subject"]}})

    def junk_settings(self, good_settings: Any) -> list[Any]:
        return [{**good_settings, "batch_size": 0}, {k: v for k, v in good_settings.items() if k != "url"},
                {**good_settings, "api_version": "8.0"}]

    def arrange_success(self, adapter: Adapter) -> tuple[str, Any]:
        return "create", {"entity_set": "annotations", "fields": {"subject": "contract"}}

    def arrange_transient(self, adapter: Adapter) -> tuple[str, Any]:
        self.dv.throttle.extend(["0x80072326"] * 5)
        return "create", {"entity_set": "annotations", "fields": {"subject": "throttled"}}

    def arrange_permanent(self, adapter: Adapter) -> tuple[str, Any]:
        return "create", {"entity_set": "annotations", "fields": {"bogus_column": "x"}}

    def observed_idempotency_key(self, adapter: Adapter) -> str | None:
        return str(list(self.dv.rows["annotations"].values())[-1]["ironbus_key"])

    def arrange_poll(self, adapter: Adapter) -> str:
        self.dv.put("annotations", {"subject": "to poll"})
        return "changes"


def test_initial_skip_reads_the_whole_load_to_its_delta_link_in_one_poll(dv: FakeDataverse) -> None:
    for n in range(7):
        dv.put("salesorders", {"name": f"o{n}", "ordernumber": f"SO-{n}"})
    crm = changes_adapter(dv, initial="skip")  # pages of 2, max 2 pages per poll
    first = crm.changes(None)
    assert first.records == [] and "$deltatoken" in str(first.watermark)
    dv.put("salesorders", {"name": "new", "ordernumber": "SO-new"})
    assert [p["ordernumber"] for _, p in crm.changes(first.watermark).records] == ["SO-new"]
