"""The adapter contract suite for ``sap``, against the scripted Gateway serving SAP's documented payloads."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

import pytest

from adapters.base import Adapter, WebhookRequest
from adapters.sap import SapAdapter
from adapters.sap.outbound import repeatability_id
from bus.testing import AdapterContract, make_call

from .conftest import Gateway, Reply, Seen, batch_responder, sample

LOCKED = {"error": {"code": "V1/042", "message": {"lang": "en", "value": "Sales document 4000043 is currently being "
                                                              "processed (by user JDOE)"},
                    "innererror": {"errordetails": [{"code": "V1/042", "message": "Sales document 4000043 is "
                                                     "currently being processed (by user JDOE)", "severity": "error",
                                                     "target": "", "propertyref": ""}]}}}
EVENT_USER, EVENT_PASSWORD = "event-mesh", "webhook-secret-1"


def create_reply(seen: Seen) -> Reply:
    party = json.loads(seen.body).get("SoldToParty")
    if party == "LOCKED":
        return Reply(400, json=LOCKED)
    if party == "INVALID":
        return Reply(400, json={"error": sample("odata_v2_error_sap_cloud_sdk_docs.json")})
    return Reply(201, json={"d": sample("DERIVED_A_SalesOrder_4000043_expand_items.json")})


def business_event(user: str = EVENT_USER, password: str = EVENT_PASSWORD) -> WebhookRequest:
    body = json.dumps({"type": "sap.s4.beh.salesorder.v1.SalesOrder.Changed.v1", "specversion": "1.0",
                       "source": "/default/sap.s4.beh/244572008", "id": "1fad4742-d03c-1edd-aeb8-c298b3dd8d4c",
                       "time": "2023-03-03T13:19:54Z", "datacontenttype": "application/json",
                       "data": {"SalesOrder": "4000043", "SalesOrderType": "ZOS", "SalesOrganization": "4010",
                                "DistributionChannel": "40", "OrganizationDivision": "40", "SoldToParty": "4502",
                                "EventRaisedDateTime": "2023-03-03T13:19:54.479Z"}}).encode()
    auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    return WebhookRequest("POST", "http://127.0.0.1/hooks/s4/business_events",
                          {"authorization": auth, "content-type": "application/cloudevents+json"}, body)


class TestSapContract(AdapterContract):
    @pytest.fixture
    def adapter_factory(self, gateway: Gateway) -> Any:
        gateway.on("POST", "/API_SALES_ORDER_SRV/A_SalesOrder", create_reply)
        gateway.on("GET", "/API_SALES_ORDER_SRV/A_SalesOrder",
                   Reply(json=sample("API_SALES_ORDER_SRV_SalesOrderExpandItems.json")))
        gateway.on("GET", "/API_SALES_ORDER_SRV/", Reply(json={"d": {"EntitySets": ["A_SalesOrder"]}}))
        gateway.on("POST", "/API_SALES_ORDER_SRV/$batch", batch_responder(create_reply))
        self.gateway = gateway
        return lambda settings: SapAdapter("s4", settings)

    @pytest.fixture
    def good_settings(self, gateway: Gateway) -> Mapping[str, Any]:
        return gateway.settings(events={"username": EVENT_USER, "password": EVENT_PASSWORD},
                                defaults={"sales_order": {"SalesOrderType": "OR", "SalesOrganization": "1010"}})

    def junk_settings(self, good_settings: Mapping[str, Any]) -> list[Any]:
        return [{**good_settings, "url": "ftp://nope"}, {k: v for k, v in good_settings.items() if k != "auth"},
                {**good_settings, "auth": {"type": "basic", "username": "u"}},
                {**good_settings, "sap_client": "1"}, {**good_settings, "update_method": "PUT"}]

    def arrange_success(self, adapter: Adapter) -> tuple[str, Any]:
        return "create_sales_order", {"SoldToParty": "4502", "to_Item": [{"Material": "TG11", "RequestedQuantity": 5}]}

    def arrange_transient(self, adapter: Adapter) -> tuple[str, Any]:
        return "create_sales_order", {"SoldToParty": "LOCKED"}

    def arrange_permanent(self, adapter: Adapter) -> tuple[str, Any]:
        return "create_sales_order", {"SoldToParty": "INVALID"}

    def observed_idempotency_key(self, adapter: Adapter) -> str | None:
        return self.gateway.to("POST", "/API_SALES_ORDER_SRV/A_SalesOrder")[-1].headers.get("repeatability-request-id")

    def test_idempotency_key_reaches_the_system(self, adapter: Adapter) -> None:
        """SAP takes the key as OData's Repeatability-Request-ID, which is a UUID: the bus's key maps onto one
        stably, so the contract's check compares that UUID."""
        operation, payload = self.arrange_success(adapter)
        key = "contract-idem-7f3a9c"
        adapter.call(operation, make_call(payload, idempotency_key=key))
        assert self.observed_idempotency_key(adapter) == repeatability_id(key)
        assert repeatability_id(key) == repeatability_id(key) != repeatability_id(key + "x")

    def arrange_poll(self, adapter: Adapter) -> str:
        return "sales_orders_changed"

    def arrange_webhook(self, adapter: Adapter) -> tuple[str, WebhookRequest, WebhookRequest]:
        return "business_events", business_event(), business_event(password="guessed-password")
