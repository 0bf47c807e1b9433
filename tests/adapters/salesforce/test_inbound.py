"""Outbound messages through the bus's real webhook server (answered with the SOAP Ack), SOQL polling with
nextRecordsUrl paging, and the contract suite."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import defusedxml.ElementTree as SafeET
import httpx
import pytest

from adapters.base import Adapter, WebhookRequest
from adapters.salesforce import SalesforceAdapter
from bus.envelope import Event
from bus.errors import WebhookRejected
from bus.metrics import Metrics
from bus.testing import AdapterContract, make_call
from bus.webhooks import WebhookApp, WebhookServer, endpoints_for
from tests.helpers.salesforce import FakeSalesforce, sample

NOTIFICATION = sample("outbound_message_notifications_Account.xml").encode()
SAMPLE_ORG = "ABC90000000gNcmEAE"  # the org of the captured sample
SOAP = "{http://schemas.xmlsoap.org/soap/envelope/}"
OUT = "{http://soap.sforce.com/2005/09/outbound}"


def request(body: bytes) -> WebhookRequest:
    return WebhookRequest("POST", "https://bus.example.com/hooks/crm/outbound_messages",
                          {"content-type": "text/xml; charset=utf-8"}, body)


def outbound_adapter(org: str = SAMPLE_ORG, **extra: Any) -> SalesforceAdapter:
    return SalesforceAdapter("crm", {"login_url": "https://acme.my.salesforce.com", "organization_id": org,
                                     "auth": {"type": "client_credentials", "client_id": "a", "client_secret": "b"},
                                     **extra})


def test_the_captured_notification_becomes_one_payload_without_the_session_id() -> None:
    payloads = outbound_adapter().outbound_messages(request(NOTIFICATION))
    assert payloads == [{"notification_id": "04l9000001olR84AAE", "organization_id": SAMPLE_ORG,
                         "action_id": "00190000000PGrlAAG", "sobject_type": "Account",
                         "record": {"Id": "0019000001KwyWtAAJ", "BillingCity": "San Francisco",
                                    "BillingCountry": "United States", "BillingPostalCode": "CA 94105",
                                    "BillingStreet": "The Landmark @ One Market, Suite 300",
                                    "Name": "Salesforce.com Inc."}}]
    assert "ARcAQJ" not in repr(payloads), "the session id is a credential: never stored"


@pytest.mark.parametrize(("body", "status", "reason"), [
    (NOTIFICATION.replace(b"ABC90000000gNcm", b"00D000000000001"), 403, "wrong_org"),
    (b"<notifications", 400, "malformed_body"),
    (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>', 400, "forbidden_xml"),
    (b'<Envelope xmlns="urn:other"/>', 400, "not_soap"),
    (NOTIFICATION.replace(b"<Id>04l9000001olR84AAE</Id>", b""), 400, "malformed_notification"),
    (NOTIFICATION.replace(b"<sf:Name>Salesforce.com Inc.</sf:Name>",
                          b"<sf:Name>" + b"<sf:x>" * 50 + b"deep" + b"</sf:x>" * 50 + b"</sf:Name>"), 400, "too_deep"),
])
def test_bad_notifications_are_refused_with_a_4xx(body: bytes, status: int, reason: str) -> None:
    with pytest.raises(WebhookRejected) as info:
        outbound_adapter().outbound_messages(request(body))
    assert (info.value.status, info.value.reason) == (status, reason)


def test_action_ids_limit_the_accepted_messages() -> None:
    crm = outbound_adapter(outbound_messages={"action_ids": ["04k000000000001"]})
    with pytest.raises(WebhookRejected, match="action"):
        crm.outbound_messages(request(NOTIFICATION))


class Ingest:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.fail = False

    async def __call__(self, events: list[Event]) -> None:
        if self.fail:
            raise RuntimeError("journal is down")
        self.events.extend(events)


@pytest.fixture
def webhook_server() -> Iterator[tuple[WebhookServer, Ingest]]:
    ingest = Ingest()
    app = WebhookApp(endpoints_for("crm", outbound_adapter()), ingest, lambda: (True, "ok"), metrics=Metrics())
    server = WebhookServer(app, "127.0.0.1", 0, graceful_timeout=5.0)
    server.start()
    try:
        yield server, ingest
    finally:
        server.stop()


def test_salesforce_gets_the_soap_ack_only_after_the_notification_is_journaled(
        webhook_server: tuple[WebhookServer, Ingest]) -> None:
    server, ingest = webhook_server
    url = f"{server.url}/hooks/crm/outbound_messages"
    headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}
    answer = httpx.post(url, content=NOTIFICATION, headers=headers)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/xml")
    ack = SafeET.fromstring(answer.content).find(f"{SOAP}Body/{OUT}notificationsResponse/{OUT}Ack")
    expected = SafeET.fromstring(sample("outbound_message_ack_response.xml").encode()).find(
        f"{SOAP}Body/{OUT}notificationsResponse/{OUT}Ack")
    assert ack is not None and expected is not None and ack.text == expected.text == "true"
    assert [e.data["record"]["Id"] for e in ingest.events] == ["0019000001KwyWtAAJ"]
    ingest.fail = True
    refused = httpx.post(url, content=NOTIFICATION, headers=headers)
    assert refused.status_code == 503 and b"Ack" not in refused.content and b"Fault" in refused.content
    forged = httpx.post(url, content=NOTIFICATION.replace(b"ABC90000000gNcm", b"00D000000000001"), headers=headers)
    assert forged.status_code == 403 and b"faultstring" in forged.content


def test_soql_poll_pages_with_next_records_url_and_resumes_from_the_watermark(sf: FakeSalesforce) -> None:
    crm = SalesforceAdapter("crm", sf.settings(triggers={"modified_records": {
        "sobject": "Order", "fields": ["Status", "AccountId"], "start": "2024-01-01T00:00:00Z", "overlap": "0s"}}))
    for n in range(5):
        crm.create(make_call({"sobject": "Order", "fields": {"Status": "Draft", "AccountId": f"001{n}"}}))
    first = crm.modified_records(None)
    assert [r["AccountId"] for _, r in first.records] == [f"001{n}" for n in range(5)]
    assert sum("/query/" in r[1] for r in sf.requests) == 2, "three pages of two"
    soql = next(r[1] for r in sf.requests if "query?q=" in r[1])
    assert "ORDER+BY+SystemModstamp" in soql or "ORDER%20BY%20SystemModstamp" in soql
    crm.create(make_call({"sobject": "Order", "fields": {"Status": "Draft", "AccountId": "001new"}}))
    second = crm.modified_records(first.watermark)
    assert "001new" in [r["AccountId"] for _, r in second.records]
    assert second.watermark and second.watermark >= str(first.watermark)


class TestSalesforceContract(AdapterContract):
    @pytest.fixture
    def adapter_factory(self, sf: FakeSalesforce) -> Any:
        self.sf = sf
        return lambda settings: SalesforceAdapter("crm", settings)

    @pytest.fixture
    def good_settings(self, sf: FakeSalesforce) -> dict[str, Any]:
        return sf.settings(idempotency_field="Ironbus_Key__c", organization_id=SAMPLE_ORG,
                           triggers={"modified_records": {"sobject": "Task", "fields": ["Subject"]}})

    def junk_settings(self, good_settings: Any) -> list[Any]:
        return [{**good_settings, "composite_size": 26}, {**good_settings, "auth": {"type": "password"}},
                {**good_settings, "login_url": "ftp://x"}]

    def arrange_success(self, adapter: Adapter) -> tuple[str, Any]:
        return "create", {"sobject": "Task", "fields": {"Subject": "contract"}}

    def arrange_transient(self, adapter: Adapter) -> tuple[str, Any]:
        return "create", {"sobject": "Task", "fields": {"Description": "answer-lock"}}

    def arrange_permanent(self, adapter: Adapter) -> tuple[str, Any]:
        return "create", {"sobject": "Task", "fields": {"Description": "answer-validation"}}

    def observed_idempotency_key(self, adapter: Adapter) -> str | None:
        return next(str(r.get("Ironbus_Key__c")) for r in reversed(list(self.sf.records["Task"].values())))

    def arrange_webhook(self, adapter: Adapter) -> tuple[str, WebhookRequest, WebhookRequest]:
        forged = NOTIFICATION.replace(b"ABC90000000gNcm", b"00D000000000001")
        return "outbound_messages", request(NOTIFICATION), request(forged)

    def arrange_poll(self, adapter: Adapter) -> str:
        adapter.call("create", make_call({"sobject": "Task", "fields": {"Subject": "to poll"}}))
        return "modified_records"
