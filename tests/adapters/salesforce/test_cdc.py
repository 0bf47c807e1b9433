"""Change Data Capture over a local Pub/Sub API (a real gRPC server on the published proto): Avro decoding with
the schema fetched by id, bitmap fields, flow control, and the replay id as a watermark that survives restarts."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from adapters.salesforce import SalesforceAdapter
from adapters.salesforce.cdc import decode_bitmap
from adapters.salesforce.pubsub import pubsub_api_pb2 as pb
from bus.envelope import Event
from bus.errors import PermanentError
from bus.journal import Journal
from bus.testing import make_call
from bus.triggers import TriggerPlan, TriggerRunner
from tests.helpers.salesforce import FakeSalesforce, change_event, sample, schema_from_sample

TOPIC = "/data/OpportunityChangeEvent"
OPPORTUNITY = sample("cdc_pubsub_Opportunity_create_devguide.json")
ACCOUNT = sample("cdc_pubsub_Account_update_bitmap_changedFields_devguide.json")


def cdc_adapter(sf: FakeSalesforce, **trigger: Any) -> SalesforceAdapter:
    opts = {"topic": TOPIC, "batch": 2, "wait": "1s", "start": "earliest", **trigger}
    instance = SalesforceAdapter("crm", sf.settings(triggers={"change_events": opts}))
    instance.open()
    return instance


def publish_opportunities(sf: FakeSalesforce, count: int, first: int = 0) -> list[str]:
    schema = schema_from_sample("Opportunity", OPPORTUNITY)
    schema_id = sf.pubsub.add_schema(schema)
    ids = []
    for n in range(first, first + count):
        record_id = f"006SM00000{n:04d}AAA"
        sf.pubsub.publish(TOPIC, schema_id, change_event("Opportunity", schema, "UPDATE", [record_id],
                                                         {"StageName": "Closed Won", "Amount": 100.0 + n},
                                                         commit_number=1725357365187780609 + n))
        ids.append(record_id)
    return ids


def test_the_devguide_create_event_decodes_exactly(sf: FakeSalesforce) -> None:
    schema = schema_from_sample("Opportunity", OPPORTUNITY)
    sf.pubsub.publish(TOPIC, sf.pubsub.add_schema(schema), copy.deepcopy(OPPORTUNITY))
    result = cdc_adapter(sf).change_events(None)
    (key, payload), = result.records
    meta = payload.pop("_event")
    assert payload == OPPORTUNITY  # commitNumber above 2^53 kept exact, dates as epoch ms
    assert meta["topic"] == TOPIC and key == f"{meta['replay_id']}:006SM0000001Tb3YAE"
    assert result.watermark == meta["replay_id"]


def test_bitmaps_decode_to_field_names_as_the_devguide_says(sf: FakeSalesforce) -> None:
    schema = schema_from_sample("Account", ACCOUNT)
    assert decode_bitmap(["0x400000", "4-0x01"], schema) == ["LastModifiedDate", "BillingAddress.Street"]
    sf.pubsub.publish("/data/AccountChangeEvent", sf.pubsub.add_schema(schema), copy.deepcopy(ACCOUNT))
    payload = cdc_adapter(sf, topic="/data/AccountChangeEvent").change_events(None).records[0][1]
    header = payload["ChangeEventHeader"]
    assert header["changedFields"] == ["LastModifiedDate", "BillingAddress.Street"]
    assert payload["BillingAddress"]["Street"] == "415 Mission Street Suite B"
    with pytest.raises(PermanentError, match="schema has"):
        decode_bitmap(["0x" + "f" * 30], schema)


def test_flow_control_asks_for_the_batch_and_a_poll_returns_at_most_that(sf: FakeSalesforce) -> None:
    publish_opportunities(sf, 5)
    crm = cdc_adapter(sf, batch=3)
    first = crm.change_events(None)
    assert len(first.records) == 3
    assert sf.pubsub.first_requests[0].num_requested == 3
    assert sf.pubsub.first_requests[0].replay_preset == pb.EARLIEST
    second = crm.change_events(first.watermark)
    assert len(second.records) == 2
    assert len(sf.pubsub.first_requests) == 1, "the subscription stays open while polls resume where it is"
    assert sf.pubsub.fetch_credits == [3], "the next poll asks for what it lacks"
    assert sf.pubsub.schema_requests == 1, "the schema is fetched once per schema id"
    # A poll that resumes elsewhere (the bus did not store the last watermark) opens a stream there.
    again = crm.change_events(first.watermark)
    assert [k for k, _ in again.records] == [k for k, _ in second.records]
    assert sf.pubsub.first_requests[1].replay_preset == pb.CUSTOM
    assert sf.pubsub.first_requests[1].replay_id.hex() == first.watermark


def test_a_subscription_at_the_tip_keeps_what_arrives_between_polls(sf: FakeSalesforce) -> None:
    publish_opportunities(sf, 2)  # before the first subscription: not wanted with start: latest
    crm = cdc_adapter(sf, start="latest", wait="0.3s")
    first = crm.change_events(None)
    assert first.records == [] and first.watermark is None
    published = publish_opportunities(sf, 2, first=2)
    second = crm.change_events(first.watermark)
    assert [p["ChangeEventHeader"]["recordIds"][0] for _, p in second.records] == published


def run(sf: FakeSalesforce, journal_url: str, emitted: list[Event], polls: int,
        fail_emit_at: int | None = None) -> None:
    """One 'bus process': a fresh adapter and journal on the same file, polled ``polls`` times."""
    journal = Journal(journal_url)
    crm = cdc_adapter(sf)
    calls = [0]

    def emit(events: list[Event]) -> None:
        calls[0] += 1
        if calls[0] == fail_emit_at:
            raise RuntimeError("the bus died before the events were journaled")
        emitted.extend(events)

    plan = TriggerPlan("crm", "change_events")
    runner = TriggerRunner({"crm": crm}, [plan], journal, emit)
    try:
        for _ in range(polls):
            runner.run_once(plan)
    finally:
        crm.close()
        journal.close()


def test_restart_mid_stream_resumes_after_the_stored_replay_id_without_gap_or_repeat(
        sf: FakeSalesforce, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/journal.sqlite"
    published = publish_opportunities(sf, 5)
    emitted: list[Event] = []
    run(sf, url, emitted, polls=1)                      # 2 of 5, then the process stops
    with pytest.raises(RuntimeError):
        run(sf, url, emitted, polls=2, fail_emit_at=1)  # a crash before the next batch was journaled
    published += publish_opportunities(sf, 2, first=5)  # more changes while the bus is down
    run(sf, url, emitted, polls=4)
    seen = [e.data["ChangeEventHeader"]["recordIds"][0] for e in emitted]
    assert seen == published, "every change once, in order"
    assert len({e.id for e in emitted}) == len(emitted)
    resumed = [r for r in sf.pubsub.first_requests if r.replay_preset == pb.CUSTOM]
    assert resumed and all(r.replay_id for r in resumed)


def test_one_event_for_several_records_becomes_one_payload_each(sf: FakeSalesforce) -> None:
    schema = schema_from_sample("Opportunity", OPPORTUNITY)
    sf.pubsub.publish(TOPIC, sf.pubsub.add_schema(schema), change_event(
        "Opportunity", schema, "UPDATE", ["006A", "006B"], {"StageName": "Closed Lost"}, commit_number=7))
    records = cdc_adapter(sf).change_events(None).records
    assert [p["ChangeEventHeader"]["recordIds"] for _, p in records] == [["006A"], ["006B"]]
    assert len({k for k, _ in records}) == 2
    assert records[0][1]["ChangeEventHeader"]["changedFields"] == ["StageName"]


def test_own_changes_are_skipped_but_still_advance_the_watermark(sf: FakeSalesforce) -> None:
    schema = schema_from_sample("Opportunity", OPPORTUNITY)
    schema_id = sf.pubsub.add_schema(schema)
    sf.pubsub.publish(TOPIC, schema_id, change_event("Opportunity", schema, "UPDATE", ["006A"], {"Amount": 1.0}, 1,
                                                     origin="com/salesforce/api/rest/66.0;client=ironbus"))
    last = sf.pubsub.publish(TOPIC, schema_id, change_event("Opportunity", schema, "UPDATE", ["006B"],
                                                            {"Amount": 2.0}, 2))
    result = cdc_adapter(sf).change_events(None)
    assert [p["ChangeEventHeader"]["recordIds"] for _, p in result.records] == [["006B"]]
    assert result.watermark == last.hex()


def test_an_expired_replay_id_stops_with_a_clear_error_or_resumes_at_earliest(sf: FakeSalesforce) -> None:
    publish_opportunities(sf, 3)
    crm = cdc_adapter(sf)
    watermark = crm.change_events(None).watermark
    assert watermark
    sf.pubsub.expired_before = 10 ** 9  # everything before is past the 72 h retention
    with pytest.raises(PermanentError, match="retention"):
        cdc_adapter(sf).change_events(watermark)  # a restart: a new subscription after the stored replay id
    recovered = cdc_adapter(sf, replay_expired="earliest").change_events(watermark)
    assert len(recovered.records) == 2


def test_read_record_merges_the_current_record_into_an_update(sf: FakeSalesforce) -> None:
    crm = cdc_adapter(sf, read_record=["AccountId", "StageName", "Name"])
    created = crm.create(make_call(
        {"sobject": "Opportunity", "fields": {"AccountId": "001SM0000000iibYAA", "StageName": "Prospecting",
                                              "Name": "Acme - 400 Widgets"}}))
    schema = schema_from_sample("Opportunity", OPPORTUNITY)
    sf.pubsub.publish(TOPIC, sf.pubsub.add_schema(schema), change_event(
        "Opportunity", schema, "UPDATE", [str(created.reference)], {"Amount": 41000.0}, commit_number=9))
    payload = crm.change_events(None).records[0][1]
    assert payload["AccountId"] == "001SM0000000iibYAA" and payload["Amount"] == 41000.0
    assert payload["ChangeEventHeader"]["changedFields"] == ["Amount"]


def test_a_refused_session_is_renewed_for_the_pubsub_api(sf: FakeSalesforce) -> None:
    publish_opportunities(sf, 1)
    crm = cdc_adapter(sf)
    crm.change_events(None)
    sf.expire_sessions()
    publish_opportunities(sf, 1, first=1)
    assert len(crm.change_events(None).records) == 2  # from the earliest event, with a renewed session
    assert len(sf.token_requests) == 2


def test_an_undecodable_event_travels_on_with_its_reason_and_does_not_block_the_stream(sf: FakeSalesforce) -> None:
    schema = schema_from_sample("Opportunity", OPPORTUNITY)
    schema_id = sf.pubsub.add_schema(schema)
    with sf.pubsub.cond:
        sf.pubsub.topics.setdefault(TOPIC, []).append(
            (b"\x00" * 7 + b"\x01", pb.ProducerEvent(id="bad-1", schema_id=schema_id, payload=b"\xff\xff\xff")))
    good = publish_opportunities(sf, 1)
    records = cdc_adapter(sf).change_events(None).records
    assert "_undecodable" in records[0][1] and records[0][1]["_payload_base64"] == "////"
    assert records[1][1]["ChangeEventHeader"]["recordIds"] == good


def test_a_stream_the_server_ends_is_reopened_where_it_stopped(sf: FakeSalesforce) -> None:
    published = publish_opportunities(sf, 5)
    sf.pubsub.end_streams_after = 2
    crm = cdc_adapter(sf, batch=2, wait="0.5s")
    seen: list[str] = []
    watermark = None
    for _ in range(5):
        result = crm.change_events(watermark)
        seen += [p["ChangeEventHeader"]["recordIds"][0] for _, p in result.records]
        watermark = result.watermark
    assert seen == published
    assert len(sf.pubsub.first_requests) >= 3 and sf.pubsub.first_requests[-1].replay_preset == pb.CUSTOM
