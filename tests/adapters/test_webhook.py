from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jsonschema
import pytest

from adapters.base import Adapter, WebhookRequest
from adapters.signatures import SignatureError, frappe_signature, hmac_signature
from adapters.webhook import WebhookAdapter
from bus.errors import ConfigError
from bus.testing import AdapterContract
from bus.webhooks import WebhookRejected, endpoints_for


def request(body: bytes, headers: dict[str, str] | None = None, url: str = "https://bus/hooks/erp/received") -> \
        WebhookRequest:
    return WebhookRequest(method="POST", url=url, headers=headers or {}, body=body)


def adapter(**settings: Any) -> WebhookAdapter:
    jsonschema.Draft202012Validator(WebhookAdapter.settings_schema).validate(settings)
    return WebhookAdapter("erp", settings)


def test_declares_one_webhook_trigger() -> None:
    assert WebhookAdapter.name == "webhook"
    assert {n: s.kind for n, s in WebhookAdapter.triggers.items()} == {"received": "webhook"}


def test_frappe_signed_json_is_verified_and_keyed() -> None:
    a = adapter(signature={"scheme": "frappe", "secret": "s"}, key="name")
    body = b'{"doctype": "Sales Order", "name": "SAL-ORD-1"}'
    payloads = a.webhook("received", request(body, {"x-frappe-webhook-signature": frappe_signature("s", body)}))
    assert payloads == [{"doctype": "Sales Order", "name": "SAL-ORD-1"}]
    assert a.key_of(payloads[0]) == "SAL-ORD-1"
    with pytest.raises(SignatureError) as exc:
        a.webhook("received", request(body, {"x-frappe-webhook-signature": frappe_signature("wrong", body)}))
    assert exc.value.reason == "mismatch"


def test_signature_is_checked_before_parsing() -> None:
    # A forged request with a broken body must be refused as unauthenticated (401), not as malformed (400).
    a = adapter(signature={"scheme": "frappe", "secret": "s"})
    with pytest.raises(SignatureError):
        a.webhook("received", request(b"\xff\xfe not json", {"x-frappe-webhook-signature": "AAAA"}))


def test_split_array_and_key_expression() -> None:
    a = adapter(split="[*]", key="to_string(objectId)")
    payloads = a.webhook("received", request(b'[{"objectId": 1}, {"objectId": 2}]'))
    assert [a.key_of(p) for p in payloads] == ["1", "2"]
    assert a.webhook("received", request(b"[]")) == []
    nested = adapter(split="events")
    assert nested.webhook("received", request(b'{"events": {"id": 1}}')) == [{"id": 1}]
    with pytest.raises(WebhookRejected, match="found nothing") as exc:
        nested.webhook("received", request(b'{"other": 1}'))
    assert (exc.value.status, exc.value.reason) == (400, "malformed_body")


@pytest.mark.parametrize("body", [b"", b"{", b"\xff\xfe\x00", b'{"a": 1} trailing'])
def test_malformed_json_is_a_400(body: bytes) -> None:
    with pytest.raises(WebhookRejected) as exc:
        adapter().webhook("received", request(body))
    assert (exc.value.status, exc.value.reason) == (400, "malformed_body")


def test_content_type_mismatch_is_415_and_missing_header_passes() -> None:
    a = adapter()
    assert a.webhook("received", request(b"{}")) == [{}]
    assert a.webhook("received", request(b"{}", {"content-type": "application/cloudevents+json"})) == [{}]
    with pytest.raises(WebhookRejected) as exc:
        a.webhook("received", request(b"{}", {"content-type": "text/plain"}))
    assert (exc.value.status, exc.value.reason) == (415, "unsupported_media_type")


def test_xml_and_form_bodies() -> None:
    xml = adapter(content_type="xml", key='Order."@id"')
    payloads = xml.webhook("received", request(b'<Order id="7"><Line>a</Line></Order>',
                                               {"content-type": "application/xml; charset=utf-8"}))
    assert payloads == [{"Order": {"@id": "7", "Line": "a"}}]
    assert xml.key_of(payloads[0]) == "7"
    with pytest.raises(WebhookRejected):
        xml.webhook("received", request(b'<!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>'))
    form = adapter(content_type="form")
    assert form.webhook("received", request(b"a=1&b=2&b=3&c=")) == [{"a": "1", "b": ["2", "3"], "c": ""}]
    with pytest.raises(WebhookRejected):
        form.webhook("received", request(b"a=%ff"))


def test_token_and_generic_hmac_schemes() -> None:
    token = adapter(signature={"scheme": "token", "secret": "abc"})
    assert token.webhook("received", request(b"{}", url="https://bus/hooks/erp/received/abc")) == [{}]
    with pytest.raises(SignatureError):
        token.webhook("received", request(b"{}", url="https://bus/hooks/erp/received"))
    generic = adapter(signature={"scheme": "hmac-sha256", "secret": "k", "header": "X-Signature", "prefix": "sha256="})
    body = b'{"x": 1}'
    assert generic.webhook("received", request(body, {"x-signature": "sha256=" + hmac_signature("k", body)})) == \
        [{"x": 1}]


def test_bad_settings_raise_config_errors_naming_the_field() -> None:
    with pytest.raises(ConfigError, match=r"systems\.erp\.settings\.key: expression .* does not compile"):
        WebhookAdapter("erp", {"key": "a.["})
    with pytest.raises(ConfigError, match=r"systems\.erp\.settings\.signature\.secret"):
        WebhookAdapter("erp", {"signature": {"scheme": "hubspot-v3"}})


def test_endpoints_for_builds_one_endpoint_with_key_and_types() -> None:
    a = adapter(key="id")
    endpoints = endpoints_for("erp", a)
    assert list(endpoints) == [("erp", "received")]
    endpoint = endpoints[("erp", "received")]
    assert endpoint.event_type == "erp.received"
    assert endpoint.content_types == ("application/json", "text/json", "+json")
    assert endpoint.key is not None and endpoint.key({"id": 5}) == "5"
    assert endpoint.handler(request(b'{"id": 5}')) == [{"id": 5}]


class TestWebhookContract(AdapterContract):
    """The shared adapter contract: settings schema, signature check on a genuine and a forged request."""

    @pytest.fixture
    def adapter_factory(self) -> Callable[[Mapping[str, Any]], WebhookAdapter]:
        return lambda settings: WebhookAdapter("erp", settings)

    @pytest.fixture
    def good_settings(self) -> Mapping[str, Any]:
        return {"signature": {"scheme": "hmac-sha256", "secret": "s3cret", "header": "X-Signature",
                              "encoding": "hex"}}

    def arrange_webhook(self, adapter: Adapter) -> tuple[str, WebhookRequest, WebhookRequest]:
        body = b'{"order": "SO-1"}'
        good = request(body, {"x-signature": hmac_signature("s3cret", body), "content-type": "application/json"})
        forged = request(body, {"x-signature": hmac_signature("guess", body),
                                "content-type": "application/json"})
        return "received", good, forged
