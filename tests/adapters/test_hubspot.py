"""The hubspot adapter against respx-mocked HubSpot endpoints, using HubSpot's own samples as fixtures."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import respx

from adapters.base import Adapter, Call, WebhookRequest
from adapters.hubspot import BulkFailure, HubspotAdapter, hubspot_properties
from adapters.signatures import hubspot_v3_signature
from bus.envelope import Event
from bus.errors import ConfigError, PermanentError, TransientError
from bus.testing import AdapterContract
from bus.webhooks.base import WebhookRejected

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "hubspot"
API = "https://api.hubapi.com"
NOW = datetime(2026, 11, 24, 22, 0, 0, tzinfo=UTC)  # 23:00 in Berlin
SECRET = "app-client-secret"


def fixture(name: str) -> Any:
    return orjson.loads((FIXTURES / name).read_bytes())


def make_call(payload: Any, key: str = "evt-1:r:crm.update_deal") -> Call:
    event = Event(type="order.change.confirmed", source="bus", data=payload, correlationid="corr-7",
                  time="2026-11-24T21:00:00.000Z")
    return Call(event=event, payload=payload, idempotency_key=key)


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=API, assert_all_called=False) as router:
        yield router


@pytest.fixture
def adapter() -> Iterator[HubspotAdapter]:
    made = HubspotAdapter("crm", {"token": "pat-na1-123", "transport": "httpx", "client_secret": SECRET,
                                  "account_timezone": "Europe/Berlin", "poll": {"properties": ["dealstage"],
                                                                                "page_size": 2}},
                          now=lambda: NOW)
    made.open()
    yield made
    made.close()


def test_update_deal_sends_string_properties_and_returns_the_object(api: respx.MockRouter,
                                                                    adapter: HubspotAdapter) -> None:
    route = api.patch("/crm/v3/objects/deals/512").respond(200, json=fixture("openapi_example_SimplePublicObject.json"))

    outcome = adapter.call("update_deal", make_call({"id": 512, "properties": {
        "amount": 1250.5, "quantity": 17, "won": False, "closedate": None, "flavours": ["chocolate", "strawberry"],
        "tiny": 0.00001}}))

    request = route.calls.last.request
    assert orjson.loads(request.content) == {"properties": {
        "amount": "1250.5", "quantity": "17", "won": "false", "closedate": "", "flavours": "chocolate;strawberry",
        "tiny": "0.00001"}}
    assert request.headers["authorization"] == "Bearer pat-na1-123"
    assert request.headers["idempotency-key"] == "evt-1:r:crm.update_deal"
    assert request.headers["x-correlation-id"] == "corr-7"
    assert outcome.reference == "512"
    assert outcome.result["properties"]["property_number"] == "17"


def test_validation_error_is_permanent_with_hubspot_message(api: respx.MockRouter, adapter: HubspotAdapter) -> None:
    api.patch("/crm/v3/objects/deals/512").respond(400, json=fixture("openapi_example_Error_400.json"))

    with pytest.raises(PermanentError) as info:
        adapter.call("update_deal", make_call({"id": "512", "properties": {"dealstage": "x"}}))
    assert "Invalid input" in str(info.value)
    assert "category=VALIDATION_ERROR" in str(info.value)
    assert "correlationId=aeb5f871-7f07-4993-9211-075dc63e7cbf" in str(info.value)


def test_daily_limit_waits_until_after_midnight_in_the_account_zone(api: respx.MockRouter,
                                                                      adapter: HubspotAdapter) -> None:
    api.patch("/crm/v3/objects/deals/1").respond(429, json=fixture("error_429_daily.json"),
                                                 headers={"Retry-After": "1"})

    with pytest.raises(TransientError, match="daily limit") as info:
        adapter.call("update_deal", make_call({"id": "1", "properties": {"a": "b"}}))
    assert info.value.retry_after == 3600 + 300  # 23:00 Berlin -> midnight, plus the 5-minute margin


@pytest.mark.parametrize(("headers", "expected"), [
    ({"Retry-After": "3"}, 3.0),
    ({"X-HubSpot-RateLimit-Interval-Milliseconds": "2000"}, 2.0),
    ({}, 10.0),
])
def test_burst_limit_honours_retry_after_then_interval(api: respx.MockRouter, adapter: HubspotAdapter,
                                                       headers: dict[str, str], expected: float) -> None:
    api.patch("/crm/v3/objects/deals/1").respond(429, json=fixture("error_429_secondly.json"), headers=headers)

    with pytest.raises(TransientError, match="secondly limit") as info:
        adapter.call("update_deal", make_call({"id": "1", "properties": {"a": "b"}}))
    assert info.value.retry_after == expected


def test_server_error_and_network_failure_are_transient(api: respx.MockRouter, adapter: HubspotAdapter) -> None:
    api.patch("/crm/v3/objects/deals/1").respond(502, text="<html>Bad gateway</html>")
    api.patch("/crm/v3/objects/deals/2").mock(side_effect=httpx.ConnectError("refused"))

    with pytest.raises(TransientError, match="HTTP 502"):
        adapter.call("update_deal", make_call({"id": "1", "properties": {"a": "b"}}))
    with pytest.raises(TransientError, match="ConnectError"):
        adapter.call("update_deal", make_call({"id": "2", "properties": {"a": "b"}}))


def test_update_deal_answer_without_json_still_succeeds(api: respx.MockRouter, adapter: HubspotAdapter) -> None:
    api.patch("/crm/v3/objects/deals/77").respond(204)

    outcome = adapter.call("update_deal", make_call({"id": 77, "properties": {"a": "b"}}))

    assert outcome.reference == "77" and outcome.result is None


def test_update_deal_rejects_payload_without_id_or_properties(adapter: HubspotAdapter) -> None:
    with pytest.raises(PermanentError, match="no deal 'id'"):
        adapter.call("update_deal", make_call({"properties": {"a": "b"}}))
    with pytest.raises(PermanentError, match="non-empty object"):
        adapter.call("update_deal", make_call({"id": "1", "properties": {}}))


def test_create_note_associates_it_with_the_deal(api: respx.MockRouter, adapter: HubspotAdapter) -> None:
    route = api.post("/crm/v3/objects/notes").respond(201, json={"id": "9001", "properties": {}})

    outcome = adapter.call("create_note", make_call({"deal_id": 512, "body": "Order SO-1 confirmed"}))

    body = orjson.loads(route.calls.last.request.content)
    assert body["properties"] == {"hs_note_body": "Order SO-1 confirmed", "hs_timestamp": "2026-11-24T21:00:00.000Z"}
    assert body["associations"] == [{"to": {"id": "512"}, "types": [
        {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 214}]}]
    assert outcome.reference == "9001"


def batch_calls(n: int) -> list[Call]:
    return [make_call({"id": str(100 + i), "properties": {"amount": i}}, key=f"k{i}") for i in range(n)]


def echo_batch(request: httpx.Request) -> httpx.Response:
    inputs = orjson.loads(request.content)["inputs"]
    return httpx.Response(200, json={"status": "COMPLETE", "results": [
        {"id": i["id"], "properties": i["properties"], "objectWriteTraceId": i["objectWriteTraceId"]}
        for i in reversed(inputs)]})


def test_batch_update_maps_results_back_to_calls_in_order(api: respx.MockRouter, adapter: HubspotAdapter) -> None:
    route = api.post("/crm/v3/objects/deals/batch/update").mock(side_effect=echo_batch)

    outcomes = adapter.call_bulk("batch_update_deals", batch_calls(150))

    assert HubspotAdapter.operations["batch_update_deals"].bulk
    assert [len(orjson.loads(c.request.content)["inputs"]) for c in route.calls] == [100, 50]
    assert [o.reference for o in outcomes] == [str(100 + i) for i in range(150)]
    assert outcomes[3].result["properties"] == {"amount": "3"}


def test_batch_partial_failure_reports_each_call(api: respx.MockRouter, adapter: HubspotAdapter) -> None:
    api.post("/crm/v3/objects/deals/batch/update").respond(207, json={
        "status": "COMPLETE", "numErrors": 1,
        "results": [{"id": "100", "properties": {}, "objectWriteTraceId": "k0"}],
        "errors": [{"status": "error", "category": "OBJECT_NOT_FOUND", "message": "Could not get some DEAL objects",
                    "context": {"id": ["101"]}, "errors": [], "links": {}}]})

    with pytest.raises(BulkFailure, match="1 of 2 deals failed") as info:
        adapter.call_bulk("batch_update_deals", batch_calls(2))
    first, second = info.value.results
    assert not isinstance(first, Exception) and first.reference == "100"
    assert isinstance(second, PermanentError) and "OBJECT_NOT_FOUND" in str(second)


def deal(deal_id: str, modified: str) -> dict[str, Any]:
    return {"id": deal_id, "properties": {"dealstage": "closedwon", "hs_lastmodifieddate": modified},
            "createdAt": "2026-01-01T00:00:00Z", "updatedAt": modified, "archived": False}


def test_poll_pages_by_after_and_advances_the_watermark(api: respx.MockRouter, adapter: HubspotAdapter) -> None:
    route = api.post("/crm/v3/objects/deals/search").mock(side_effect=[
        httpx.Response(200, json={"total": 3, "results": [deal("1", "2026-11-24T10:00:00.000Z"),
                                                          deal("2", "2026-11-24T10:00:01.500Z")],
                                  "paging": {"next": {"after": "2"}}}),
        httpx.Response(200, json={"total": 3, "results": [deal("3", "2026-11-24T10:00:02.250Z")]}),
    ])

    result = adapter.poll("deals_changed", "1764000000000")

    bodies = [orjson.loads(c.request.content) for c in route.calls]
    assert bodies[0]["filterGroups"] == [{"filters": [
        {"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": "1764000000000"}]}]
    assert bodies[0]["sorts"] == [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}]
    assert bodies[0]["properties"] == ["dealstage", "hs_lastmodifieddate"]
    assert [b["after"] for b in bodies] == ["0", "2"]
    assert [key for key, _ in result.records] == [
        "1@2026-11-24T10:00:00.000Z", "2@2026-11-24T10:00:01.500Z", "3@2026-11-24T10:00:02.250Z"]
    assert result.records[2][1]["id"] == "3"
    assert result.watermark == str(int(datetime(2026, 11, 24, 10, 0, 2, 250000, tzinfo=UTC).timestamp() * 1000))


def test_poll_stops_at_max_records_and_keeps_watermark_when_nothing_changed(api: respx.MockRouter) -> None:
    capped = HubspotAdapter("crm", {"token": "t", "transport": "httpx", "poll": {"max_records": 2}})
    route = api.post("/crm/v3/objects/deals/search").mock(side_effect=[
        httpx.Response(200, json={"results": [deal("1", "2026-11-24T10:00:00Z"), deal("2", "2026-11-24T10:00:01Z")],
                                  "paging": {"next": {"after": "2"}}}),
        httpx.Response(200, json={"results": []}),
    ])
    try:
        first = capped.poll("deals_changed", None)
        second = capped.poll("deals_changed", "1764000000000")
    finally:
        capped.close()

    assert len(route.calls) == 2  # the cap ended the first poll without asking for page 2
    assert orjson.loads(route.calls[0].request.content)["filterGroups"][0]["filters"][0]["value"] == "0"
    assert len(first.records) == 2
    assert second.records == [] and second.watermark == "1764000000000"


def signed(body: bytes, url: str = "https://bus.example.com/hooks/crm/deal_events?x=1") -> WebhookRequest:
    timestamp = str(int(NOW.timestamp() * 1000))
    signature = hubspot_v3_signature(SECRET, "POST", url, body, timestamp)
    return WebhookRequest(method="POST", url=url, body=body, headers={
        "x-hubspot-signature-v3": signature, "x-hubspot-request-timestamp": timestamp,
        "content-type": "application/json"})


def test_webhook_verifies_splits_and_deduplicates(adapter: HubspotAdapter) -> None:
    event = fixture("webhook_deal_propertyChange_event.json")
    contact = {**event, "subscriptionType": "contact.creation", "eventId": 1}
    retry = {**event, "attemptNumber": 1}
    body = orjson.dumps([event, contact, retry])

    payloads = adapter.webhook("deal_events", signed(body))
    again = adapter.webhook("deal_events", signed(body))

    assert len(payloads) == 1
    assert payloads[0]["objectId"] == 697680835 and payloads[0]["propertyValue"] == event["propertyValue"]
    assert payloads[0]["dedup_key"] == "92894:802835955:1556094637139"
    assert again == []


def test_webhook_rejects_bad_signature_and_malformed_body(adapter: HubspotAdapter) -> None:
    body = orjson.dumps([fixture("webhook_deal_propertyChange_event.json")])
    forged = signed(body)
    tampered = WebhookRequest(method="POST", url=forged.url, body=body.replace(b"dealstage", b"amount"),
                              headers=forged.headers)

    with pytest.raises(WebhookRejected) as info:
        adapter.webhook("deal_events", tampered)
    assert info.value.status == 401
    with pytest.raises(WebhookRejected, match="JSON array") as bad:
        adapter.webhook("deal_events", signed(b'"just a string"'))
    assert bad.value.status == 400


def test_webhook_needs_the_client_secret() -> None:
    plain = HubspotAdapter("crm", {"token": "t"})
    with pytest.raises(ConfigError, match="client_secret"):
        plain.webhook("deal_events", signed(b"[]"))
    plain.close()


def test_oauth2_client_credentials_auth(api: respx.MockRouter) -> None:
    api.post("/oauth/v3/token").respond(200, json={"access_token": "oauth-tok", "expires_in": 1800})
    route = api.patch("/crm/v3/objects/deals/7").respond(200, json={"id": "7", "properties": {}})
    oauth = HubspotAdapter("crm", {"transport": "httpx", "auth": {
        "type": "oauth2_client_credentials", "token_url": f"{API}/oauth/v3/token", "client_id": "id",
        "client_secret": "secret"}})
    try:
        oauth.call("update_deal", make_call({"id": "7", "properties": {"a": 1}}))
    finally:
        oauth.close()

    assert route.calls.last.request.headers["authorization"] == "Bearer oauth-tok"


@pytest.mark.parametrize(("settings", "message"), [
    ({}, "settings"),
    ({"token": "t", "account_timezone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
    ({"token": "t", "poll": {"max_records": 20000}}, "settings/poll/max_records"),
])
def test_bad_settings(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match="system 'crm'") as info:
        HubspotAdapter("crm", settings)
    assert message in str(info.value)


def test_requests_match_the_published_deals_spec() -> None:
    spec = fixture("openapi_crm_deals_v3.json")["paths"]
    # The spec names deals by their object type id 0-3; the documented alias is "deals".
    used = [("patch", "/crm/v3/objects/0-3/{dealId}"), ("post", "/crm/v3/objects/0-3/batch/update"),
            ("post", "/crm/v3/objects/0-3/search")]
    for method, path in used:
        assert method in spec[path], (method, path)
    search = fixture("openapi_crm_deals_v3.json")["components"]["schemas"]["PublicObjectSearchRequest"]
    from adapters.hubspot.inbound import search_body

    assert set(search["required"]) <= set(search_body(0, [], 100, None))


def test_hubspot_properties_conversion() -> None:
    assert hubspot_properties({"a": 1, "b": True, "c": None, "d": ["x", 2], "e": 2.5}) == {
        "a": "1", "b": "true", "c": "", "d": "x;2", "e": "2.5"}
    with pytest.raises(PermanentError):
        hubspot_properties(["not", "a", "mapping"])


class TestHubspotContract(AdapterContract):
    @pytest.fixture
    def adapter_factory(self, api: respx.MockRouter) -> Callable[[Mapping[str, Any]], Adapter]:
        api.get("/crm/v3/objects/deals").respond(200, json={"results": []})
        self.api = api
        self.ok = api.patch("/crm/v3/objects/deals/1").respond(200, json={"id": "1", "properties": {}})
        api.patch("/crm/v3/objects/deals/2").respond(429, json=fixture("error_429_secondly.json"))
        api.patch("/crm/v3/objects/deals/3").respond(400, json=fixture("openapi_example_Error_400.json"))
        return lambda settings: HubspotAdapter("crm", settings, now=lambda: NOW)

    @pytest.fixture
    def good_settings(self) -> Mapping[str, Any]:
        return {"token": "pat-1", "transport": "httpx", "client_secret": SECRET}

    def junk_settings(self, good_settings: Mapping[str, Any]) -> list[Any]:
        return [{"client_secret": SECRET}, {**good_settings, "poll": {"page_size": 500}}]

    def arrange_success(self, adapter: Adapter) -> tuple[str, Any]:
        return "update_deal", {"id": "1", "properties": {"dealstage": "closedwon"}}

    def arrange_transient(self, adapter: Adapter) -> tuple[str, Any]:
        return "update_deal", {"id": "2", "properties": {"dealstage": "closedwon"}}

    def arrange_permanent(self, adapter: Adapter) -> tuple[str, Any]:
        return "update_deal", {"id": "3", "properties": {"dealstage": "closedwon"}}

    def observed_idempotency_key(self, adapter: Adapter) -> str | None:
        return self.ok.calls.last.request.headers.get("idempotency-key")

    def arrange_poll(self, adapter: Adapter) -> str:
        # The same deal on every search: with '>=' the boundary deal comes back, and the runner must drop it.
        self.api.post("/crm/v3/objects/deals/search").respond(
            200, json={"results": [deal("5", "2026-11-24T10:00:00.000Z")]})
        return "deals_changed"

    def arrange_webhook(self, adapter: Adapter) -> tuple[str, WebhookRequest, WebhookRequest]:
        body = orjson.dumps([fixture("webhook_deal_propertyChange_event.json")])
        genuine = signed(body)
        forged = WebhookRequest(method=genuine.method, url=genuine.url, body=body,
                                headers={**genuine.headers, "x-hubspot-signature-v3": "Zm9yZ2Vk"})
        return "deal_events", genuine, forged
