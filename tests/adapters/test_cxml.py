"""The cxml adapter: OrderRequests to a real local supplier endpoint answering with published cXML Responses, and
inbound ConfirmationRequest / ShipNoticeRequest / StatusUpdateRequest documents (public samples) on the webhook."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from adapters.base import Adapter, WebhookRequest
from adapters.cxml import CxmlAdapter
from bus.errors import PermanentError, TransientError, WebhookRejected
from bus.testing import AdapterContract, make_call
from bus.xmldict import xml_to_dict
from tests.helpers.wait import wait_until

SAMPLES = Path(__file__).parents[1] / "fixtures" / "samples"
OK = (SAMPLES / "coupa" / "cxml_OrderResponse_200_coupa_docs.xml").read_bytes()
REFUSED = (SAMPLES / "cxml" / "officeluv_response_status_400.xml").read_bytes()


def _status(code: int, text: str) -> bytes:
    return (f'<?xml version="1.0"?><cXML payloadID="r@s" timestamp="2024-05-01T10:00:00Z"><Response>'
            f'<Status code="{code}" text="{text}"/></Response></cXML>').encode()


class Supplier:
    """A supplier's cXML endpoint on 127.0.0.1: records what it gets and answers by the order id."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []
        self.release = threading.Event()
        supplier = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                supplier.requests.append(body)
                status, answer, headers = supplier.answer(body)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/cxml"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def answer(self, body: bytes) -> tuple[int, bytes, dict[str, str]]:
        order_id = xml_to_dict(body)["cXML"]["Request"]["OrderRequest"]["OrderRequestHeader"]["@orderID"]
        if order_id == "http-503":
            return 503, b"busy", {"Retry-After": "17"}
        if order_id == "cxml-500":
            return 200, _status(500, "Internal Server Error"), {}
        if order_id == "cxml-400":
            return 200, REFUSED, {}
        if order_id == "cxml-409":
            return 200, _status(409, "Conflict"), {}
        if order_id == "not-cxml":
            return 200, b"<html>hello</html>", {}
        if order_id == "slow":
            self.release.wait(5)
        return 200, OK, {}

    def last(self) -> dict[str, Any]:
        doc: dict[str, Any] = xml_to_dict(self.requests[-1])["cXML"]
        return doc

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def supplier() -> Iterator[Supplier]:
    server = Supplier()
    yield server
    server.close()


BILL_TO = {"Name": {"@xml:lang": "en", "#text": "Buyer Inc."},
           "PostalAddress": {"Street": "1 Main St", "City": "Solon", "PostalCode": "44139",
                             "Country": {"@isoCountryCode": "US", "#text": "United States"}}}


def settings(url: str, **more: Any) -> dict[str, Any]:
    return {
        "profile": "coupa", "from": {"domain": "DUNS", "identity": "123456789"}, "payload_domain": "buyer.example",
        "bill_to": BILL_TO,
        "suppliers": {
            "ACME": {"url": url, "to": {"domain": "DUNS", "identity": "802661173"}, "shared_secret": "s3cret-out",
                     "extrinsics": {"CostCenter": "4711"},
                     "inbound": {"domain": "DUNS", "identity": "user@email.com", "shared_secret": "password123"}},
            "NETWORK": {"to": {"domain": "NetworkID", "identity": "AN00000456"},
                        "inbound": {"domain": "NetworkId", "identity": "AN00000123", "shared_secret": "abracadabra"}},
        }, **more}


ORDER = {"supplier": "ACME", "type": "new", "order": {
    "OrderRequestHeader": {"@orderID": "PO-6112", "@orderDate": "2024-05-01T10:00:00+00:00",
                           "Total": {"Money": {"@currency": "USD", "#text": "85.00"}},
                           "Extrinsic": {"@name": "Buyer", "#text": "Jo"}},
    "ItemOut": [{"@quantity": "2", "@lineNumber": "1", "@requestedDeliveryDate": "2024-05-20",
                 "ItemID": {"SupplierPartID": "W-100"},
                 "ItemDetail": {"UnitPrice": {"Money": {"@currency": "USD", "#text": "42.50"}},
                                "Description": {"@xml:lang": "en", "#text": "Widget"}, "UnitOfMeasure": "EA"}}]}}


def _order(order_id: str, **more: Any) -> dict[str, Any]:
    head = {**ORDER["order"]["OrderRequestHeader"], "@orderID": order_id}
    return {**ORDER, "order": {**ORDER["order"], "OrderRequestHeader": head}, **more}


@pytest.fixture
def adapter(supplier: Supplier) -> Iterator[CxmlAdapter]:
    instance = CxmlAdapter("suppliers_cxml", settings(supplier.url))
    instance.open()
    yield instance
    instance.close()


# -- outbound ---------------------------------------------------------------------------------------------------
def test_a_new_order_carries_credentials_ids_and_extrinsics(adapter: CxmlAdapter, supplier: Supplier) -> None:
    outcome = adapter.call("order", make_call(ORDER, idempotency_key="evt-1:route.target"))
    assert outcome.reference == "evt-1:route.target@buyer.example" and outcome.result["status"] == 200
    raw = supplier.requests[-1].decode()
    assert raw.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE cXML SYSTEM '
                          '"http://xml.cxml.org/schemas/cXML/1.2.050/cXML.dtd">')
    doc = supplier.last()
    assert doc["@payloadID"] == outcome.reference and doc["@timestamp"].endswith("+00:00")
    header = doc["Header"]
    assert header["From"]["Credential"] == {"@domain": "DUNS", "Identity": "123456789"}
    assert header["To"]["Credential"] == {"@domain": "DUNS", "Identity": "802661173"}
    assert header["Sender"]["Credential"]["SharedSecret"] == "s3cret-out"
    head = doc["Request"]["OrderRequest"]["OrderRequestHeader"]
    assert head["@type"] == "new" and doc["Request"]["@deploymentMode"] == "production"
    assert head["Extrinsic"] == [{"@name": "Buyer", "#text": "Jo"}, {"@name": "CostCenter", "#text": "4711"}]
    assert doc["Request"]["OrderRequest"]["ItemOut"]["ItemID"]["SupplierPartID"] == "W-100"
    assert "s3cret-out" not in repr(outcome)


def test_update_and_delete_reference_the_order_they_change(adapter: CxmlAdapter, supplier: Supplier) -> None:
    first = adapter.call("order", make_call(ORDER, idempotency_key="new-1"))
    adapter.call("order", make_call({**ORDER, "type": "update"}, idempotency_key="upd-1"))
    head = supplier.last()["Request"]["OrderRequest"]["OrderRequestHeader"]
    assert head["@type"] == "update" and head["DocumentReference"] == {"@payloadID": first.reference}
    # DocumentReference sits where the DTD wants it: after Total, before Extrinsic.
    assert list(head) == ["@orderID", "@orderDate", "@type", "Total", "BillTo", "DocumentReference", "Extrinsic"]
    assert head["BillTo"]["Address"]["Name"]["#text"] == "Buyer Inc."
    deleted = adapter.call("order", make_call({"supplier": "ACME", "type": "delete", "order": {
        "OrderRequestHeader": {"@orderID": "PO-6112", "@orderDate": "2024-05-02T10:00:00Z",
                               "Total": {"Money": {"@currency": "USD", "#text": "0"}}}}}, idempotency_key="del-1"))
    assert deleted.result["type"] == "delete"
    assert supplier.last()["Request"]["OrderRequest"]["OrderRequestHeader"]["DocumentReference"] == {
        "@payloadID": "upd-1@buyer.example"}


def test_an_update_of_an_unknown_order_is_refused_before_sending(adapter: CxmlAdapter, supplier: Supplier) -> None:
    with pytest.raises(PermanentError, match="must reference the OrderRequest it changes"):
        adapter.call("order", make_call(_order("PO-1", type="update")))
    assert supplier.requests == []


def test_an_order_without_bill_to_is_refused_before_sending(supplier: Supplier) -> None:
    config = settings(supplier.url)
    del config["bill_to"]
    instance = CxmlAdapter("c", config)
    with pytest.raises(PermanentError, match="BillTo is required by the cXML DTD"):
        instance.call("order", make_call(ORDER))
    assert supplier.requests == []
    instance.close()


def test_required_extrinsics_are_checked_before_sending(supplier: Supplier) -> None:
    config = settings(supplier.url)
    config["suppliers"]["ACME"]["required_extrinsics"] = ["CostCenter", "ProjectCode"]
    instance = CxmlAdapter("c", config)
    instance.open()
    with pytest.raises(PermanentError, match="requires Extrinsic ProjectCode"):
        instance.call("order", make_call(ORDER))
    assert supplier.requests == []
    instance.close()


def test_answers_are_classified(adapter: CxmlAdapter) -> None:
    with pytest.raises(TransientError) as busy:
        adapter.call("order", make_call(_order("http-503")))
    assert busy.value.retry_after == 17  # the supplier's Retry-After wins
    with pytest.raises(TransientError) as later:
        adapter.call("order", make_call(_order("cxml-500")))
    assert later.value.retry_after == 3600  # Coupa's documented hourly retry for 5xx
    with pytest.raises(PermanentError, match="cXML status 400 java.lang.Exception: missing required parameter"):
        adapter.call("order", make_call(_order("cxml-400")))
    assert adapter.call("order", make_call(_order("cxml-409"))).result["status"] == 409
    with pytest.raises(TransientError, match="without a cXML Response Status"):
        adapter.call("order", make_call(_order("not-cxml")))


def test_a_supplier_that_does_not_answer_in_time_is_transient(supplier: Supplier) -> None:
    instance = CxmlAdapter("c", settings(supplier.url, timeout=0.3))
    instance.open()
    with pytest.raises(TransientError, match="did not answer within 0.3 s"):
        instance.call("order", make_call(_order("slow")))
    supplier.release.set()
    instance.close()


@pytest.mark.parametrize(("payload", "message"), [
    ({**ORDER, "supplier": "NOPE"}, "not a configured supplier"),
    ({**ORDER, "supplier": "NETWORK"}, "has no 'url'"),
    ({**ORDER, "type": "cancel"}, "must be new, update or delete"),
    ({**ORDER, "order": {"ItemOut": []}}, "must hold an OrderRequestHeader"),
    (_order(""), "@orderID is required"),
    ({**ORDER, "order": {**ORDER["order"], "ItemOut": None}}, "at least one ItemOut"),
    ({**ORDER, "order": {**ORDER["order"], "ItemOut": [{"bad name": 1}]}}, "not an XML element name"),
])
def test_bad_order_payloads_are_permanent(adapter: CxmlAdapter, payload: Any, message: str) -> None:
    with pytest.raises(PermanentError, match=message):
        adapter.call("order", make_call(payload))


# -- inbound ----------------------------------------------------------------------------------------------------
def hook(body: bytes) -> WebhookRequest:
    return WebhookRequest(method="POST", url="http://127.0.0.1/hooks/suppliers_cxml/documents",
                          headers={"content-type": "text/xml"}, body=body)


CONFIRMATION = (SAMPLES / "cxml" / "dnas_ConfirmationRequest_detail_accept.xml").read_bytes()


def _answer(adapter: CxmlAdapter, request: WebhookRequest | None, status: int, reason: str = "",
            detail: str = "", accepted: tuple[str, ...] = ()) -> tuple[int, dict[str, Any]]:
    answer = adapter.webhook_answer("documents", request, status, reason, detail, list(accepted))
    assert answer is not None and answer.content_type.startswith("text/xml")
    return answer.status, xml_to_dict(answer.body)["cXML"]["Response"]["Status"]


def test_a_confirmation_is_accepted_without_its_secret(adapter: CxmlAdapter) -> None:
    (payload,) = adapter.webhook("documents", hook(CONFIRMATION))
    assert payload["document"] == "ConfirmationRequest" and payload["supplier"] == "ACME"
    assert payload["cXML"]["Request"]["ConfirmationRequest"]["OrderReference"]["@orderID"] == "269765"
    assert "password123" not in repr(payload) and "SharedSecret" not in repr(payload)
    assert adapter.webhook_key("documents")(payload) == "269765"  # type: ignore[misc]
    status, body = _answer(adapter, hook(CONFIRMATION), 202, "accepted", accepted=("e1",))
    assert status == 200 and body["@code"] == "200" and body["@text"] == "OK"


@pytest.mark.parametrize("name", ["friendsofcxml_ShipNoticeRequest.xml", "friendsofcxml_StatusUpdateRequest.xml"])
def test_ship_notices_and_status_updates_are_accepted(adapter: CxmlAdapter, name: str) -> None:
    (payload,) = adapter.webhook("documents", hook((SAMPLES / "cxml" / name).read_bytes()))
    assert payload["supplier"] == "NETWORK" and payload["document"] == name.split("_")[1].removesuffix(".xml")


def test_a_wrong_shared_secret_is_401(adapter: CxmlAdapter) -> None:
    forged = CONFIRMATION.replace(b"password123", b"guess")
    with pytest.raises(WebhookRejected) as info:
        adapter.webhook("documents", hook(forged))
    assert info.value.status == 401 and info.value.reason == "bad_credentials" and "guess" not in str(info.value)
    status, body = _answer(adapter, hook(forged), 401, "bad_credentials", str(info.value))
    assert status == 401 and body["@code"] == "401" and "match no configured supplier" in body["#text"]


BOMB = b"""<?xml version="1.0"?><!DOCTYPE cXML [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">
<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;">]><cXML payloadID="x" timestamp="t">&c;</cXML>"""
XXE = b"""<?xml version="1.0"?><!DOCTYPE cXML [<!ENTITY x SYSTEM "file:///etc/passwd">]><cXML>&x;</cXML>"""


@pytest.mark.parametrize(("body", "reason", "message"), [
    (b"<cXML><Header>", "malformed_xml", "malformed XML"),
    (BOMB, "malformed_xml", "entity declaration 'a' is not allowed"),
    (XXE, "malformed_xml", "entity declaration 'x' is not allowed"),
    (b"<Order/>", "invalid_document", "expected a cXML document"),
    (CONFIRMATION.replace(b'type="detail"', b'type="maybe"'), "invalid_document",
     "/cXML/Request/ConfirmationRequest/ConfirmationHeader (line 25): Element 'ConfirmationHeader', attribute "
     "'type': [facet 'enumeration'] The value 'maybe' is not an element of the set"),
    (CONFIRMATION.replace(b"<ConfirmationRequest>", b"<OrderRequest>").replace(b"</ConfirmationRequest>",
                                                                              b"</OrderRequest>"),
     "invalid_document", "expected one of ConfirmationRequest, ShipNoticeRequest, StatusUpdateRequest, got "
                         "OrderRequest"),
    (CONFIRMATION.replace(b'ConfirmationItem quantity="2"', b"ConfirmationItem", 1), "invalid_document",
     "/cXML/Request/ConfirmationRequest/ConfirmationItem[1] (line 58): Element 'ConfirmationItem': The attribute "
     "'quantity' is required but missing"),
    (CONFIRMATION.replace(b'quantity="2"', b'quantity="two"', 1), "invalid_document",
     "ConfirmationItem[1] (line 58): Element 'ConfirmationItem', attribute 'quantity'"),
    (CONFIRMATION.replace(b"<ConfirmationStatus", b"<Status", 1).replace(b"</ConfirmationStatus>", b"</Status>", 1),
     "invalid_document", "ConfirmationItem[1]/Status (line 60): Element 'Status': This element is not expected"),
])
def test_bad_documents_are_400_with_a_reason(adapter: CxmlAdapter, body: bytes, reason: str, message: str) -> None:
    with pytest.raises(WebhookRejected) as info:
        adapter.webhook("documents", hook(body))
    assert info.value.status == 400 and info.value.reason == reason
    assert message in str(info.value)


def test_an_oversized_document_is_refused(supplier: Supplier) -> None:
    instance = CxmlAdapter("c", settings(supplier.url, max_bytes=2048))
    with pytest.raises(WebhookRejected, match="larger than the limit of 2048"):
        instance.webhook("documents", hook(CONFIRMATION + b" " * 4096))


def test_a_stored_document_sent_again_is_not_applied_twice(adapter: CxmlAdapter) -> None:
    body = CONFIRMATION.replace(b'payloadID=""', b'payloadID="conf-77@supplier.example"')
    assert len(adapter.webhook("documents", hook(body))) == 1
    _answer(adapter, hook(body), 202, "accepted", accepted=("e1",))  # the bus stored it
    wait_until(lambda: adapter.store.get("received:ACME:conf-77@supplier.example"),
               what="the payloadID to be remembered")
    assert adapter.webhook("documents", hook(body)) == []
    status, answer = _answer(adapter, hook(body), 202, "accepted")
    assert status == 200 and answer["@code"] == "200" and answer["#text"] == "already received"


def test_a_document_the_bus_could_not_store_is_taken_again(adapter: CxmlAdapter) -> None:
    body = CONFIRMATION.replace(b'payloadID=""', b'payloadID="conf-78@supplier.example"')
    adapter.webhook("documents", hook(body))
    status, answer = _answer(adapter, hook(body), 503, "ingest_failed", "could not store")
    assert status == 503 and answer["@code"] == "560"
    assert len(adapter.webhook("documents", hook(body))) == 1  # the supplier's retry is applied


class TestCxmlContract(AdapterContract):
    @pytest.fixture
    def adapter_factory(self) -> Any:
        return lambda s: CxmlAdapter("suppliers_cxml", s)

    @pytest.fixture
    def good_settings(self, supplier: Supplier) -> Mapping[str, Any]:
        self.supplier = supplier
        return settings(supplier.url)

    def junk_settings(self, good_settings: Mapping[str, Any]) -> list[Any]:
        acme = good_settings["suppliers"]["ACME"]
        return [{**good_settings, "profile": "oracle"}, {**good_settings, "suppliers": {}},
                {**good_settings, "suppliers": {"X": {**acme, "url": "ftp://x"}}},
                {**good_settings, "suppliers": {"X": {**acme, "inbound": {"identity": "no-secret"}}}}]

    def arrange_success(self, adapter: Adapter) -> tuple[str, Any]:
        return "order", ORDER

    def arrange_transient(self, adapter: Adapter) -> tuple[str, Any]:
        return "order", _order("cxml-500")

    def arrange_permanent(self, adapter: Adapter) -> tuple[str, Any]:
        return "order", _order("cxml-400")

    def observed_idempotency_key(self, adapter: Adapter) -> str | None:
        return str(self.supplier.last()["@payloadID"]).rsplit("@", 1)[0]

    def arrange_webhook(self, adapter: Adapter) -> tuple[str, WebhookRequest, WebhookRequest]:
        return "documents", hook(CONFIRMATION), hook(CONFIRMATION.replace(b"password123", b"x"))


# -- through the bus's webhook server ---------------------------------------------------------------------------
class Edge:
    """The bus's real webhook server in front of the adapter; ``fail`` makes the ingest fail (journal down)."""

    def __init__(self, adapter: CxmlAdapter) -> None:
        from bus.envelope import Event
        from bus.metrics import Metrics
        from bus.webhooks import WebhookApp, WebhookServer, endpoints_for

        self.events: list[Event] = []
        self.fail = False

        async def ingest(events: list[Event]) -> None:
            if self.fail:
                raise RuntimeError("journal unavailable")
            self.events.extend(events)

        app = WebhookApp(endpoints_for("suppliers_cxml", adapter), ingest, lambda: (True, ""), metrics=Metrics())
        self.server = WebhookServer(app, "127.0.0.1", 0, graceful_timeout=2.0)
        self.server.start()
        self.url = f"{self.server.url}/hooks/suppliers_cxml/documents"

    def post(self, body: bytes, content_type: str = "text/xml") -> tuple[int, dict[str, Any]]:
        import httpx

        response = httpx.post(self.url, content=body, headers={"Content-Type": content_type}, timeout=10)
        assert response.headers["content-type"].startswith("text/xml"), response.text
        return response.status_code, xml_to_dict(response.content)["cXML"]["Response"]["Status"]


@pytest.fixture
def edge(adapter: CxmlAdapter) -> Iterator[Edge]:
    server = Edge(adapter)
    yield server
    server.server.stop()


def test_the_webhook_edge_answers_every_document_in_cxml(edge: Edge) -> None:
    status, answer = edge.post(CONFIRMATION)
    assert (status, answer["@code"]) == (200, "200") and len(edge.events) == 1
    assert edge.events[0].type == "suppliers_cxml.documents" and edge.events[0].key == "269765"
    status, answer = edge.post(CONFIRMATION.replace(b"password123", b"nope"))
    assert (status, answer["@code"]) == (401, "401")
    status, answer = edge.post(BOMB)
    assert (status, answer["@code"]) == (400, "400") and "entity declaration" in answer["#text"]
    status, answer = edge.post(b"{}", content_type="application/json")
    assert (status, answer["@code"]) == (415, "415")
    assert len(edge.events) == 1  # nothing refused was stored


def test_the_webhook_edge_answers_560_when_the_bus_cannot_store(edge: Edge) -> None:
    edge.fail = True
    body = CONFIRMATION.replace(b'payloadID=""', b'payloadID="conf-90@supplier.example"')
    status, answer = edge.post(body)
    assert (status, answer["@code"]) == (503, "560")
    edge.fail = False
    status, answer = edge.post(body)  # the supplier's retry is taken
    assert (status, answer["@code"]) == (200, "200") and len(edge.events) == 1


def _own_dtd(sample: bytes) -> str:
    """A DTD of our own (not the cXML one) for the sample's elements: each ANY with its attributes, except that
    cXML must hold exactly Header then Request."""
    import re

    attributes: dict[str, set[str]] = {}
    for tag, attrs in re.findall(r"<([A-Za-z]+)((?:\s+[A-Za-z:]+=\"[^\"]*\")*)\s*/?>", sample.decode()):
        attributes.setdefault(tag, set()).update(re.findall(r"([A-Za-z:]+)=", attrs))
    out = ["<!ELEMENT cXML (Header, Request)>"]
    for tag in sorted(attributes):
        if tag != "cXML":
            out.append(f"<!ELEMENT {tag} ANY>")
        if attributes[tag]:
            out.append(f"<!ATTLIST {tag} " + " ".join(f"{a} CDATA #IMPLIED" for a in sorted(attributes[tag])) + ">")
    return "\n".join(out) + "\n<!ELEMENT Message ANY>\n"


def test_a_configured_dtd_is_checked_without_network(supplier: Supplier, tmp_path: Path) -> None:
    dtd = tmp_path / "own.dtd"
    dtd.write_text(_own_dtd(CONFIRMATION))
    instance = CxmlAdapter("c", settings(supplier.url, dtd=str(dtd)))
    instance.open()
    assert len(instance.webhook("documents", hook(CONFIRMATION))) == 1
    broken = CONFIRMATION.replace(b"</Request>", b"</Request><Message/>")
    with pytest.raises(WebhookRejected, match="not valid against") as info:
        instance.webhook("documents", hook(broken))
    assert info.value.status == 400 and info.value.reason == "invalid_document"
    instance.close()


def test_an_unreadable_dtd_fails_at_start(supplier: Supplier, tmp_path: Path) -> None:
    from bus.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot read"):
        CxmlAdapter("c", settings(supplier.url, dtd=str(tmp_path / "missing.dtd"))).open()


@st.composite
def _mutated_xml(draw: st.DrawFn) -> bytes:
    doc = bytearray(draw(st.sampled_from([CONFIRMATION, (SAMPLES / "cxml" / "friendsofcxml_ShipNoticeRequest.xml")
                                          .read_bytes()])))
    for _ in range(draw(st.integers(1, 3))):
        if not doc:
            break
        at = draw(st.integers(0, len(doc) - 1))
        kind = draw(st.sampled_from(["cut", "flip", "drop"]))
        if kind == "cut":
            del doc[at:]
        elif kind == "flip":
            doc[at] = draw(st.integers(32, 126))
        else:
            del doc[at:at + draw(st.integers(1, 30))]
    return bytes(doc)


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=_mutated_xml())
def test_a_broken_document_is_a_4xx_never_an_error(supplier: Supplier, body: bytes) -> None:
    instance = CxmlAdapter("c", settings(supplier.url))
    try:
        assert isinstance(instance.webhook("documents", hook(body)), list)
    except WebhookRejected as exc:
        assert 400 <= exc.status < 500 and str(exc)
