"""OData V2 values, $batch framing, SAP error classification, paging and business events, against the
scripted Gateway and SAP's documented payloads."""

from __future__ import annotations

import base64
import datetime as dt
import json
from decimal import Decimal

import pytest

from adapters.base import WebhookRequest
from adapters.http.errors import ErrorPolicy
from adapters.sap import SapAdapter
from adapters.sap.batch import BatchRequest, build_batch, parse_batch
from adapters.sap.errors import classify
from adapters.sap.odata import entity_path, filter_datetimeoffset, format_date, parse_date, parse_decimal
from adapters.sap.outbound import encode
from bus.errors import PermanentError, TransientError, WebhookRejected
from bus.testing import make_call

from .conftest import Gateway, Reply, sample
from .test_contract import EVENT_PASSWORD, EVENT_USER, LOCKED, business_event


def test_dates_decimals_and_keys() -> None:
    assert parse_date("/Date(1130112000000)/") == dt.datetime(2005, 10, 24, tzinfo=dt.UTC)
    assert parse_date("/Date(1130168212000+0000)/") == dt.datetime(2005, 10, 24, 15, 36, 52, tzinfo=dt.UTC)
    assert parse_date("/Date(-86400000)/") == dt.datetime(1969, 12, 31, tzinfo=dt.UTC)
    with pytest.raises(ValueError):
        parse_date("2005-10-24")
    assert format_date(dt.date(2005, 10, 24)) == "/Date(1130112000000)/"
    assert parse_decimal("2656.24") == Decimal("2656.24")
    with pytest.raises(ValueError):
        parse_decimal("NaN")
    assert filter_datetimeoffset(dt.datetime(2024, 1, 1, 0, 0, 0, 123456, tzinfo=dt.UTC)) == \
        "datetimeoffset'2024-01-01T00:00:00.123Z'"
    assert entity_path("A_SalesOrder", {"SalesOrder": "O'1"}) == "A_SalesOrder('O''1')"
    assert entity_path("A_SalesOrderItem", {"SalesOrder": "1", "SalesOrderItem": "10"}) == \
        "A_SalesOrderItem(SalesOrder='1',SalesOrderItem='10')"
    body = encode({"RequestedDeliveryDate": "2027-01-15", "LastChangeDateTime": "2027-01-15T10:00:00Z",
                   "TotalNetAmount": 10.1, "Text": "2027-01-15", "to_Item": {"results": [{"Qty": 3}]}}, "x")
    assert body == {"RequestedDeliveryDate": "/Date(1799971200000)/",
                    "LastChangeDateTime": "/Date(1800007200000+0000)/", "TotalNetAmount": "10.1",
                    "Text": "2027-01-15", "to_Item": [{"Qty": "3"}]}


def test_batch_round_trip_framing() -> None:
    content_type, body = build_batch([BatchRequest("GET", "A_SalesOrder('1')"),
                                      [BatchRequest("POST", "A_SalesOrder", {"SoldToParty": "ü"}),
                                       BatchRequest("PATCH", "A_SalesOrder('1')", {"X": "1"}, {"If-Match": "W/\"1\""},
                                                     )]])
    text = body.decode()
    assert content_type.startswith("multipart/mixed; boundary=batch_")
    assert "\r\nGET A_SalesOrder('1') HTTP/1.1\r\n" in text and "If-Match: W/\"1\"" in text
    assert text.count("Content-ID:") == 2 and text.endswith("--\r\n")
    answer = ("--b\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
              "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"d\":{\"SalesOrder\":\"1\"}}\r\n"
              "--b\r\nContent-Type: multipart/mixed; boundary=c\r\n\r\n"
              "--c\r\nContent-Type: application/http\r\n\r\nHTTP/1.1 201 Created\r\n\r\n{\"d\":{\"é\":1}}\r\n"
              "--c\r\nContent-Type: application/http\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n\r\n--c--\r\n--b--\r\n")
    parsed = parse_batch("multipart/mixed; boundary=b", answer.encode())
    assert parsed[0].status == 200 and parsed[0].json() == {"d": {"SalesOrder": "1"}}
    assert isinstance(parsed[1], list) and [p.status for p in parsed[1]] == [201, 204]
    assert parsed[1][0].json() == {"d": {"é": 1}}
    with pytest.raises(PermanentError):
        parse_batch("application/json", b"{}")


def test_sap_error_bodies_are_classified() -> None:
    policy = ErrorPolicy()
    documented = json.dumps({"error": sample("odata_v2_error_sap_cloud_sdk_docs.json")}).encode()
    error = classify(400, documented, None, "POST x", policy)
    assert isinstance(error, PermanentError) and "Incorrect data" in str(error)
    assert isinstance(classify(400, json.dumps(LOCKED).encode(), None, "POST x", policy), TransientError)
    custom = json.dumps({"error": {"code": "ZSD/001", "message": {"value": "Try later"}}}).encode()
    assert isinstance(classify(400, custom, None, "x", policy), PermanentError)
    assert isinstance(classify(400, custom, None, "x", policy, frozenset({"ZSD/001"})), TransientError)
    assert isinstance(classify(412, b"", None, "x", policy), TransientError)
    assert isinstance(classify(428, b"", None, "x", policy), PermanentError)
    slow = classify(503, b"<html>down</html>", "7", "x", policy)
    assert isinstance(slow, TransientError) and slow.retry_after == 7


def test_next_links_of_the_documented_collection_are_followed(gateway: Gateway) -> None:
    page1 = sample("API_SALES_ORDER_SRV_SalesOrderCollection.json")
    rows = page1["d"]["results"]
    first = {"d": {"results": rows[:1], "__next": f"{gateway.url}/sap/opu/odata/sap/API_SALES_ORDER_SRV/"
                                                 "A_SalesOrder?$skiptoken='4000043'"}}
    second = {"d": {"results": rows[1:], "__next": "A_SalesOrder?$skiptoken='4000045'"}}  # relative, as some do
    gateway.on("GET", "/API_SALES_ORDER_SRV/A_SalesOrder", Reply(json=first), Reply(json=second),
               Reply(json={"d": {"results": []}}))
    adapter = SapAdapter("s4", gateway.settings(sap_client="100"))
    try:
        got = adapter.client.get_all("API_SALES_ORDER_SRV", "A_SalesOrder")
    finally:
        adapter.close()
    assert [r["SalesOrder"] for r in got] == [r["SalesOrder"] for r in rows]
    paths = [s.path for s in gateway.to("GET", "/API_SALES_ORDER_SRV/A_SalesOrder")]
    assert "sap-client=100" in paths[0] and "skiptoken" in paths[1] and "skiptoken" in paths[2]


def test_poll_records_carry_key_and_change_stamp(gateway: Gateway) -> None:
    gateway.on("GET", "/API_SALES_ORDER_SRV/A_SalesOrder",
               Reply(json=sample("API_SALES_ORDER_SRV_SalesOrderExpandItems.json")))
    adapter = SapAdapter("s4", gateway.settings())
    try:
        result = adapter.poll("sales_orders_changed", "2005-10-24T15:00:00Z")
    finally:
        adapter.close()
    assert result.records[0][0] == "4000043@2005-10-24T15:36:52.000Z"
    assert result.watermark is not None and result.watermark >= "2005-10-24T15:36:52.000Z"
    query = gateway.to("GET", "/API_SALES_ORDER_SRV/A_SalesOrder")[0].path
    assert "$filter=LastChangeDateTime%20ge%20datetimeoffset'2005-10-24T14:59:55.000Z'" in query
    assert "$orderby=LastChangeDateTime%20asc,SalesOrder%20asc" in query
    assert "to_Item" in result.records[0][1] and "__deferred" not in json.dumps(result.records[0][1])


def test_csrf_required_refetches_once(gateway: Gateway) -> None:
    gateway.on("POST", "/API_SALES_ORDER_SRV/A_SalesOrder",
               Reply(201, json={"d": sample("DERIVED_A_SalesOrder_4000045.json")}))
    adapter = SapAdapter("s4", gateway.settings())
    try:
        adapter.call("create_sales_order", make_call({"SoldToParty": "1"}))
        gateway.sessions.clear()  # the Gateway forgot the session
        outcome = adapter.call("create_sales_order", make_call({"SoldToParty": "1"}))
    finally:
        adapter.close()
    assert outcome.reference == "4000045"
    fetches = [s for s in gateway.requests if s.headers.get("x-csrf-token") == "Fetch"]
    assert len(fetches) == 2


def _event(body: bytes, **headers: str) -> WebhookRequest:
    auth = "Basic " + base64.b64encode(f"{EVENT_USER}:{EVENT_PASSWORD}".encode()).decode()
    return WebhookRequest("POST", "http://h/hooks/s4/business_events", {"authorization": auth, **headers}, body)


def test_business_events(gateway: Gateway) -> None:
    adapter = SapAdapter("s4", gateway.settings(events={"username": EVENT_USER, "password": EVENT_PASSWORD}))
    try:
        [payload] = adapter.webhook("business_events", business_event())
        assert (payload["object"], payload["operation"], payload["key"]) == ("salesorder", "Changed", "4000043")
        key_of = adapter.webhook_key("business_events")
        assert key_of is not None and key_of(payload) == "4000043"
        bp = b'{"type":"sap.s4.beh.businesspartner.v1.BusinessPartner.Changed.v1","specversion":"1.0",' \
             b'"source":"/default/sap.s4.beh/730431274","id":"1fad4742-d03c-1edd-aeb8-c298b3dd8d4c",' \
             b'"time":"2023-03-03T13:19:54Z","datacontenttype":"application/json","data":{"BusinessPartner":"1000746"}}'
        assert adapter.webhook("business_events", _event(b"[" + bp + b"," + bp + b"]"))[1]["key"] == "1000746"
        binary = adapter.webhook("business_events", _event(b'{"PurchaseOrder":"4500000001"}', **{
            "ce-type": "sap.s4.beh.purchaseorder.v1.PurchaseOrder.Created.v1", "ce-id": "e1", "ce-source": "/s4",
            "ce-specversion": "1.0", "content-type": "application/json"}))
        assert binary[0]["key"] == "4500000001"
        for bad, status in [(b"{nope", 400), (b"{}", 400), (b"[]", 400),
                            (bp.replace(b"sap.s4.beh", b"com.example"), 422)]:
            with pytest.raises(WebhookRejected) as info:
                adapter.webhook("business_events", _event(bad))
            assert info.value.status == status
        with pytest.raises(WebhookRejected) as refused:
            adapter.webhook("business_events", WebhookRequest("POST", "http://h", {}, bp))
        assert refused.value.status == 401
    finally:
        adapter.close()


def test_bad_settings_are_refused_naming_the_field(gateway: Gateway) -> None:
    from bus.errors import ConfigError

    with pytest.raises(ConfigError, match="poll/start"):
        SapAdapter("s4", gateway.settings(poll={"start": "yesterday"}))
    with pytest.raises(ConfigError, match="auth"):
        SapAdapter("s4", {"url": gateway.url, "auth": {"type": "basic", "username": "u"}})
