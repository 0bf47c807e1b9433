"""The as2 adapter against a second, independent AS2 station (tests/helpers/as2station.py, pyas2lib on its own
HTTP server), and the station against our webhook edge served by the bus's own webhook server.

Keys and certificates are generated per test module (RSA 2048, self-signed). Covered: signed + encrypted +
compressed both ways, synchronous and asynchronous MDNs both ways, a tampered body, a wrong certificate, a
duplicate message, a negative MDN, a wrong MIC, and a partner that is down or answers 5xx.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from adapters.as2 import As2Adapter, As2Transport
from adapters.b2b import OutboundDocument, open_transport, transport_schema
from adapters.b2b.payload import payload_body
from adapters.base import Adapter, MemoryAdapterStore, WebhookRequest
from bus.envelope import Event
from bus.errors import ConfigError, PermanentError, TransientError
from bus.testing import AdapterContract, make_call
from bus.webhooks import endpoints_for
from bus.webhooks.app import WebhookApp
from bus.webhooks.server import WebhookServer
from tests.helpers.as2station import As2Station, Identity, identity, tls_server_certificate
from tests.helpers.wait import wait_until

DOCUMENT = "UNB+UNOC:3+ACME:14+SUPPLIER1:14+261207:0130+1'UNH+1+ORDERS:D:96A:UN'BGM+220+PO-4711+9'UNT+3+1'UNZ+1+1'"


@pytest.fixture(scope="module")
def acme() -> Identity:
    return identity("ACME")


@pytest.fixture(scope="module")
def supplier() -> Identity:
    return identity("SUPPLIER1")


@pytest.fixture(scope="module")
def stranger() -> Identity:
    return identity("SUPPLIER1")  # same AS2 name, a key nobody agreed on


@pytest.fixture
def station(acme: Identity, supplier: Identity) -> Iterator[As2Station]:
    made = As2Station(supplier, "ACME", acme.certificate)
    yield made
    made.close()


def settings_for(acme: Identity, supplier: Identity, station: As2Station, tmp_path: Path,
                 **extra: Any) -> dict[str, Any]:
    return {"url": f"{station.url}/as2", "as_from": "ACME", "as_to": "SUPPLIER1", "key": acme.key,
            "certificate": acme.certificate, "partner_certificate": supplier.certificate, "compress": True,
            "timeout": 20, "quarantine": str(tmp_path / "quarantine"), **extra}


class Edge:
    """Our side as deployed: the adapter's webhooks served by the bus's webhook server; events collected."""

    def __init__(self, adapter: As2Adapter) -> None:
        self.adapter = adapter
        self.events: list[Event] = []

        async def ingest(events: list[Event]) -> None:
            self.events.extend(events)

        self.server = WebhookServer(WebhookApp(endpoints_for("acme", adapter), ingest, lambda: (True, "")),
                                    "127.0.0.1", 0, graceful_timeout=2.0)
        self.server.start()

    def url(self, trigger: str) -> str:
        return f"{self.server.url}/hooks/acme/{trigger}"

    def close(self) -> None:
        self.server.stop()
        self.adapter.close()


@pytest.fixture
def edge(acme: Identity, supplier: Identity, station: As2Station, tmp_path: Path) -> Iterator[Edge]:
    adapter = As2Adapter("acme", settings_for(acme, supplier, station, tmp_path))
    adapter.open()
    made = Edge(adapter)
    yield made
    made.close()


def request_of(message: Any, *, body: bytes | None = None) -> WebhookRequest:
    return WebhookRequest("POST", "http://127.0.0.1/hooks/acme/receive",
                          {k.lower(): str(v) for k, v in message.headers.items()},
                          message.content if body is None else body)


# -- the contract ---------------------------------------------------------------------------------------------------
class TestAs2Contract(AdapterContract):
    @pytest.fixture
    def adapter_factory(self) -> Any:
        return lambda settings: As2Adapter("acme", settings)

    @pytest.fixture
    def good_settings(self, acme: Identity, supplier: Identity, station: As2Station,
                      tmp_path: Path) -> Mapping[str, Any]:
        self.station = station
        self.acme, self.supplier = acme, supplier
        return settings_for(acme, supplier, station, tmp_path)

    def junk_settings(self, good_settings: Mapping[str, Any]) -> list[Any]:
        return [{k: v for k, v in good_settings.items() if k != "partner_certificate"},
                {**good_settings, "mdn": "sometimes"}, {**good_settings, "digest": "md5"},
                {**good_settings, "url": "ftp://partner"}]

    def arrange_success(self, adapter: Adapter) -> tuple[str, Any]:
        return "send", {"filename": "ORDERS-4711.edi", "content_type": "application/edifact", "text": DOCUMENT}

    def arrange_transient(self, adapter: Adapter) -> tuple[str, Any]:
        self.station.answer_status = 503
        return "send", {"filename": "a.edi", "text": DOCUMENT}

    def arrange_permanent(self, adapter: Adapter) -> tuple[str, Any]:
        # The partner no longer trusts our certificate: it answers with a negative MDN (authentication-failed).
        self.station.peer_certificate = identity("ACME").certificate
        return "send", {"filename": "a.edi", "text": DOCUMENT}

    def observed_idempotency_key(self, adapter: Adapter) -> str | None:
        return self.station.received[-1].message_id.split("@")[0]

    def arrange_webhook(self, adapter: Adapter) -> tuple[str, WebhookRequest, WebhookRequest]:
        genuine = self.station.build(DOCUMENT.encode())
        forged = self.station.build(DOCUMENT.encode(), signer=identity("SUPPLIER1"))
        return "receive", request_of(genuine), request_of(forged)


def test_listed_as_a_transport_kind_with_its_schema(acme: Identity, supplier: Identity, station: As2Station,
                                                   tmp_path: Path) -> None:
    block = {"kind": "as2", **{k: v for k, v in settings_for(acme, supplier, station, tmp_path).items()
                               if k != "quarantine"}}
    transport = open_transport(block)
    assert isinstance(transport, As2Transport)
    assert jsonschema.Draft202012Validator(transport_schema()).is_valid(block)
    assert transport.fetch("w") == ([], "w")


# -- outbound ---------------------------------------------------------------------------------------------------
def test_send_signed_encrypted_compressed_with_a_synchronous_mdn(acme: Identity, supplier: Identity,
                                                                 station: As2Station, tmp_path: Path) -> None:
    adapter = As2Adapter("acme", settings_for(acme, supplier, station, tmp_path))
    adapter.open()
    outcome = adapter.call("send", make_call({"filename": "ORDERS-4711.edi", "content_type": "application/edifact",
                                              "text": DOCUMENT}, idempotency_key="evt-1:orders:supplier1.send"))
    adapter.close()
    [got] = station.received
    assert got.status == "processed" and got.signed and got.encrypted and got.compressed
    assert got.body == DOCUMENT.encode() and got.filename == "ORDERS-4711.edi"
    assert got.content_type == "application/edifact"
    assert outcome.reference == got.message_id == "evt-1-orders-supplier1.send@acme"
    assert outcome.result["status"] == "processed" and outcome.result["mic"]  # the MDN's MIC matched ours


def test_a_retry_is_the_same_message_and_the_partners_duplicate_answer_counts_as_delivered(
        acme: Identity, supplier: Identity, station: As2Station, tmp_path: Path) -> None:
    adapter = As2Adapter("acme", settings_for(acme, supplier, station, tmp_path))
    call = make_call({"filename": "a.edi", "text": DOCUMENT}, idempotency_key="evt-2:r:t")
    first = adapter.call("send", call)
    again = adapter.call("send", call)  # e.g. the worker lost the first answer
    adapter.close()
    assert first.reference == again.reference
    assert [r.status for r in station.received] == ["processed", "processed/Warning"]
    assert "duplicate" in again.detail


def test_binary_documents_travel_as_base64(acme: Identity, supplier: Identity, station: As2Station,
                                           tmp_path: Path) -> None:
    blob = bytes(range(256)) * 8
    adapter = As2Adapter("acme", settings_for(acme, supplier, station, tmp_path))
    adapter.call("send", make_call({"filename": "scan.pdf", "content_type": "application/pdf",
                                    "base64": base64.b64encode(blob).decode()}))
    adapter.close()
    assert station.received[0].body == blob


def test_a_wrong_partner_certificate_gives_a_negative_mdn_and_a_permanent_error(
        acme: Identity, supplier: Identity, stranger: Identity, station: As2Station, tmp_path: Path) -> None:
    # We encrypt to a certificate that is not the partner's: it cannot decrypt and says so in its MDN.
    adapter = As2Adapter("acme", settings_for(acme, supplier, station, tmp_path,
                                              partner_certificate=stranger.certificate))
    with pytest.raises(PermanentError, match="could not be verified"):
        adapter.call("send", make_call({"filename": "a.edi", "text": DOCUMENT}))
    adapter.close()
    assert station.received[0].detail == "decryption-failed"


def test_a_negative_mdn_is_permanent(acme: Identity, supplier: Identity, station: As2Station,
                                     tmp_path: Path) -> None:
    station.peer_certificate = identity("ACME").certificate  # the partner has a different certificate for us
    adapter = As2Adapter("acme", settings_for(acme, supplier, station, tmp_path))
    with pytest.raises(PermanentError, match="negative MDN: processed/Error: authentication-failed"):
        adapter.call("send", make_call({"filename": "a.edi", "text": DOCUMENT}))
    adapter.close()


def test_a_wrong_mic_in_the_mdn_is_permanent(acme: Identity, supplier: Identity, station: As2Station,
                                             tmp_path: Path) -> None:
    station.wrong_mic = True
    adapter = As2Adapter("acme", settings_for(acme, supplier, station, tmp_path))
    with pytest.raises(PermanentError, match="MIC"):
        adapter.call("send", make_call({"filename": "a.edi", "text": DOCUMENT}))
    adapter.close()


def test_an_mdn_signed_by_someone_else_is_permanent(acme: Identity, supplier: Identity, stranger: Identity,
                                                    station: As2Station, tmp_path: Path) -> None:
    # The station signs its MDN with its own key; we expect the stranger's signature, so verification fails.
    station.encrypt = False
    adapter = As2Adapter("acme", settings_for(acme, supplier, station, tmp_path, encrypt=False,
                                              partner_certificate=stranger.certificate))
    with pytest.raises(PermanentError, match="could not be verified"):
        adapter.call("send", make_call({"filename": "a.edi", "text": DOCUMENT}))
    adapter.close()


def test_partner_down_or_5xx_is_transient(acme: Identity, supplier: Identity, station: As2Station,
                                          tmp_path: Path) -> None:
    station.answer_status = 502
    adapter = As2Adapter("acme", settings_for(acme, supplier, station, tmp_path))
    with pytest.raises(TransientError, match="HTTP 502"):
        adapter.call("send", make_call({"filename": "a.edi", "text": DOCUMENT}))
    adapter.close()
    station.close()
    adapter = As2Adapter("acme", settings_for(acme, supplier, station, tmp_path))
    with pytest.raises(TransientError, match="cannot reach"):
        adapter.call("send", make_call({"filename": "a.edi", "text": DOCUMENT}))
    adapter.close()


def test_a_bad_payload_is_permanent(acme: Identity, supplier: Identity, station: As2Station, tmp_path: Path) -> None:
    adapter = As2Adapter("acme", settings_for(acme, supplier, station, tmp_path))
    for payload in ({"filename": "a.edi"}, {"filename": "../x", "text": "x"}, {"text": "x", "base64": "eA=="},
                    {"base64": "not base64!"}, "just text"):
        with pytest.raises(PermanentError):
            adapter.call("send", make_call(payload))
    adapter.close()
    assert station.received == []


def test_asynchronous_mdn_for_what_we_send(acme: Identity, supplier: Identity, station: As2Station,
                                           tmp_path: Path) -> None:
    adapter = As2Adapter("acme", settings_for(acme, supplier, station, tmp_path, mdn="async",
                                              mdn_url="http://127.0.0.1:9/placeholder"))
    adapter.open()
    edge = Edge(adapter)
    try:
        # The MDN URL is our own edge, known only once it listens: rebuild the adapter's profile with it.
        adapter.profile.organization.mdn_url = edge.url("mdn")
        call = make_call({"filename": "a.edi", "text": DOCUMENT}, idempotency_key="evt-async:r:t")
        outcome = adapter.call("send", call)
        assert outcome.detail == "awaiting asynchronous MDN" and outcome.result["status"] == "pending"
        wait_until(lambda: edge.events, 20, "the partner's asynchronous MDN to arrive at the edge")
        [event] = edge.events
        assert event.type == "acme.mdn"
        assert event.data["delivered"] is True and event.data["message_id"] == outcome.reference
        state = json.loads(adapter.store.get(f"as2:out:{outcome.reference}") or "{}")
        assert state["status"] == "processed"
        again = adapter.call("send", call)  # acknowledged already: not sent twice
        assert again.detail == "already acknowledged" and len(station.received) == 1
    finally:
        edge.close()


def test_an_mdn_for_a_message_we_never_sent_is_refused(edge: Edge, station: As2Station) -> None:
    message = station.build(DOCUMENT.encode(), mdn_mode="SYNC")
    # A genuine MDN, but for the station's own message: we have no record of it.
    response, _, _ = station.post(edge.url("receive"), message)
    assert response.status_code == 200
    mdn_body = response.content
    headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "date", "server")}
    refused = httpx.post(edge.url("mdn"), content=mdn_body, headers=headers)
    assert refused.status_code == 400 and refused.json()["error"] == "unknown_message"


# -- inbound, through the bus's webhook server ------------------------------------------------------------------
def test_receive_signed_encrypted_compressed_with_a_synchronous_signed_mdn(edge: Edge, station: As2Station) -> None:
    message = station.build(DOCUMENT.encode(), filename="ORDRSP-77.edi")
    response, status, detail = station.post(edge.url("receive"), message)
    assert response.status_code == 200 and response.headers["as2-to"] == "SUPPLIER1"
    assert response.headers["content-type"].startswith("multipart/signed")
    assert (status, detail) == ("processed", None)  # the station verified our signature and the MIC
    [event] = edge.events
    assert event.type == "acme.receive"
    assert event.data["filename"] == "ORDRSP-77.edi" and event.data["content_type"] == "application/edifact"
    assert payload_body(event.data) == DOCUMENT.encode()
    assert event.data["as2"]["signed"] and event.data["as2"]["encrypted"] and event.data["as2"]["compressed"]
    assert event.data["as2"]["message_id"] == message.message_id and event.data["partner"] == "SUPPLIER1"


def test_receive_with_an_asynchronous_mdn(edge: Edge, station: As2Station) -> None:
    message = station.build(DOCUMENT.encode(), mdn_mode="ASYNC")
    response, status, _ = station.post(edge.url("receive"), message)
    assert response.status_code == 200 and status is None and response.content == b""
    wait_until(lambda: station.mdns, 20, "our asynchronous MDN to reach the station")
    assert station.mdns == [(message.message_id, "processed", None)]
    assert len(edge.events) == 1
    wait_until(lambda: not edge.adapter.store.items("as2:mdn-out:"), 5, "the delivered MDN to be forgotten")


def test_a_duplicate_message_is_acknowledged_but_not_emitted_twice(edge: Edge, station: As2Station) -> None:
    message = station.build(DOCUMENT.encode())
    first = station.post(edge.url("receive"), message)
    second = station.post(edge.url("receive"), message)  # the partner resends: it never saw our MDN
    assert first[1] == "processed"
    assert second[0].status_code == 200 and second[1] == "processed/Warning"
    assert "duplicate" in str(second[2])
    assert len(edge.events) == 1


def test_a_tampered_body_is_refused_with_a_negative_mdn_and_kept(edge: Edge, station: As2Station,
                                                                 tmp_path: Path) -> None:
    station.encrypt = station.compress = False  # so that the bytes we change are the signed document itself
    edge.adapter.profile.partner.encrypt = False
    message = station.build(DOCUMENT.encode())
    response, status, detail = station.post(edge.url("receive"), message, tamper=(b"PO-4711", b"PO-4712"))
    assert response.status_code == 401
    assert status == "processed/Error" and detail == "authentication-failed"
    assert edge.events == []
    kept = sorted((tmp_path / "quarantine").iterdir())
    assert [p.suffix for p in kept] == [".msg", ".txt"]
    assert b"PO-4712" in kept[0].read_bytes() and "authentication_failed" in kept[1].read_text()


def test_a_message_signed_with_an_unknown_certificate_is_refused(edge: Edge, station: As2Station,
                                                                 stranger: Identity) -> None:
    message = station.build(DOCUMENT.encode(), signer=stranger)
    response, status, detail = station.post(edge.url("receive"), message)
    assert response.status_code == 401 and detail == "authentication-failed"
    assert edge.events == []


def test_a_refused_message_is_kept_for_a_dead_letter_and_read_again_after_the_certificate_is_fixed(
        edge: Edge, station: As2Station, stranger: Identity, acme: Identity, supplier: Identity,
        tmp_path: Path) -> None:
    # Given the partner rolled its signing certificate without telling us: its message is refused
    message = station.build(DOCUMENT.encode(), signer=stranger)
    response, _, detail = station.post(edge.url("receive"), message)
    assert response.status_code == 401 and detail == "authentication-failed"
    [refused] = edge.adapter.refused  # what the bus's sink keeps as a dead letter
    assert refused.trigger == "receive" and refused.partner == "SUPPLIER1" and refused.document == "AS2 message"
    assert "authentication_failed" in refused.reason and refused.meta["carrier"] == "as2"
    with pytest.raises(PermanentError):
        edge.adapter.reprocess(refused)  # read again with the same settings: still refused
    # When the new certificate is configured, the letter's retry reads the message: its document comes out once
    fixed = As2Adapter("acme", settings_for(acme, supplier, station, tmp_path,
                                            partner_certificate=stranger.certificate))
    fixed.bind_store(edge.adapter.store)
    fixed.open()
    try:
        [payload] = fixed.reprocess(refused)
        assert payload_body(payload) == DOCUMENT.encode()
        with pytest.raises(PermanentError, match="received since"):
            fixed.reprocess(refused)
    finally:
        fixed.close()


def test_an_unsigned_message_is_refused_when_signing_is_agreed(edge: Edge, station: As2Station) -> None:
    station.sign = False
    message = station.build(DOCUMENT.encode())
    response, status, detail = station.post(edge.url("receive"), message)
    assert response.status_code == 400 and detail == "insufficient-message-security"
    assert edge.events == []


def test_a_message_for_someone_else_or_not_as2_is_refused(edge: Edge, station: As2Station) -> None:
    station.me = Identity("OTHER", station.me.key, station.me.certificate)
    message = station.build(DOCUMENT.encode())
    response, status, _ = station.post(edge.url("receive"), message)
    assert response.status_code == 403 and response.json()["error"] == "unknown_partner" and status is None
    plain = httpx.post(edge.url("receive"), content=b"hello", headers={"content-type": "text/plain"})
    assert plain.status_code == 400 and plain.json()["error"] == "not_as2"
    assert edge.events == []


def test_a_resend_after_the_bus_could_not_store_is_not_a_duplicate(acme: Identity, supplier: Identity,
                                                                   station: As2Station, tmp_path: Path) -> None:
    adapter = As2Adapter("acme", settings_for(acme, supplier, station, tmp_path))
    adapter.open()
    message = station.build(DOCUMENT.encode())
    request = request_of(message)
    assert adapter.webhook("receive", request)
    assert adapter.webhook_answer("receive", request, 503, "ingest_failed", "", []) is None  # JSON 503, no MDN
    retry = request_of(message)
    assert adapter.webhook("receive", retry), "the resend must be taken, not called a duplicate"
    answer = adapter.webhook_answer("receive", retry, 202, "accepted", "", ["e-1"])
    assert answer is not None and answer.status == 200
    adapter.close()


def test_settings_errors_name_the_setting_and_no_key(acme: Identity, supplier: Identity, station: As2Station,
                                                     tmp_path: Path) -> None:
    good = settings_for(acme, supplier, station, tmp_path)
    with pytest.raises(ConfigError, match="mdn_url"):
        As2Adapter("acme", {**good, "mdn": "async"})
    with pytest.raises(ConfigError, match="partner_certificate") as info:
        As2Adapter("acme", {**good, "partner_certificate": str(tmp_path / "missing.pem")})
    with pytest.raises(ConfigError) as info:
        As2Adapter("acme", {**good, "key": acme.key.replace("A", "B", 40)})
    assert acme.key[40:80] not in str(info.value)


def test_the_transport_keeps_state_in_the_store_it_is_given(acme: Identity, supplier: Identity,
                                                            station: As2Station, tmp_path: Path) -> None:
    store = MemoryAdapterStore()
    block = {"kind": "as2", **{k: v for k, v in settings_for(acme, supplier, station, tmp_path, mdn="async",
                                                             mdn_url="http://127.0.0.1:9/mdn").items()
                               if k != "quarantine"}}
    transport = As2Transport(block, store=store)
    transport.open()
    receipt = transport.send(OutboundDocument(DOCUMENT.encode(), "a.edi", "application/edifact", "po-1"))
    transport.close()
    assert receipt.acknowledgement["status"] == "pending"
    assert json.loads(store.get(f"as2:out:{receipt.reference}") or "{}")["mic"] == receipt.acknowledgement["mic"]


def test_an_owed_asynchronous_mdn_survives_a_restart(acme: Identity, supplier: Identity, station: As2Station,
                                                     tmp_path: Path) -> None:
    store = MemoryAdapterStore()  # stands in for the journal's store, which outlives the process
    station.mdn_status = 503  # the partner's MDN endpoint is down for now
    first = As2Adapter("acme", settings_for(acme, supplier, station, tmp_path))
    first.bind_store(store)
    first.open()
    message = station.build(DOCUMENT.encode(), mdn_mode="ASYNC")
    request = request_of(message)
    assert first.webhook("receive", request)
    assert first.webhook_answer("receive", request, 202, "accepted", "", ["e-1"]) is not None
    wait_until(lambda: '"attempts": 1' in (store.get(f"as2:mdn-out:{message.message_id}") or ""), 10,
               "the first, failed attempt to post the MDN")
    assert "1 asynchronous MDN(s) to send" in first.health().detail
    first.close()  # the bus stops while it still owes the MDN
    station.mdn_status = None
    second = As2Adapter("acme", settings_for(acme, supplier, station, tmp_path))
    second.bind_store(store)
    second.open()
    try:
        wait_until(lambda: station.mdns, 10, "the owed MDN to be posted after the restart")
        assert station.mdns == [(message.message_id, "processed", None)]
        wait_until(lambda: not store.items("as2:mdn-out:"), 5, "the owed MDN to be forgotten once delivered")
        # and the message id is still known: a resend now is a duplicate
        again = request_of(message)
        assert second.webhook("receive", again) == []
    finally:
        second.close()


def test_received_message_ids_are_forgotten_after_the_window(acme: Identity, supplier: Identity,
                                                             station: As2Station, tmp_path: Path) -> None:
    adapter = As2Adapter("acme", settings_for(acme, supplier, station, tmp_path, remember_days=1))
    message = station.build(DOCUMENT.encode())
    request = request_of(message)
    adapter.webhook("receive", request)
    adapter.webhook_answer("receive", request, 202, "accepted", "", ["e-1"])
    assert adapter.prune() == 0
    assert adapter.prune(now=time.time() + 2 * 86400) == 1
    assert adapter.webhook("receive", request_of(message)), "outside the window it is a new message again"
    adapter.close()


def test_a_decompression_bomb_is_refused_with_a_negative_mdn(acme: Identity, supplier: Identity,
                                                              station: As2Station, tmp_path: Path) -> None:
    adapter = As2Adapter("acme", settings_for(acme, supplier, station, tmp_path, max_size=1_000_000))
    adapter.open()
    edge = Edge(adapter)
    try:
        message = station.build(b"0" * 3_000_000)  # compresses to a few KiB
        assert len(message.content) < 100_000
        response, status, detail = station.post(edge.url("receive"), message)
        assert response.status_code == 400 and detail == "decompression-failed"
        assert edge.events == []
        small = station.build(b"0" * 900_000)
        assert station.post(edge.url("receive"), small)[1] == "processed"
        assert len(payload_body(edge.events[0].data)) == 900_000
    finally:
        edge.close()


def test_plain_as2_without_keys_when_nothing_is_signed_or_encrypted(acme: Identity, supplier: Identity,
                                                                    station: As2Station, tmp_path: Path) -> None:
    plain = {"url": f"{station.url}/as2", "as_from": "ACME", "as_to": "SUPPLIER1", "sign": False, "encrypt": False,
             "mdn_signed": False, "quarantine": str(tmp_path / "q")}
    validator = jsonschema.Draft202012Validator(dict(As2Adapter.settings_schema))
    assert validator.is_valid(plain)
    assert not validator.is_valid({**plain, "sign": True}), "signing needs our key pair and their certificate"
    assert not validator.is_valid({k: v for k, v in plain.items() if k != "mdn_signed"}), "a signed MDN needs keys"
    assert validator.is_valid({**{k: v for k, v in plain.items() if k != "mdn_signed"}, "mdn": "none"})
    station.sign = station.encrypt = station.compress = False
    adapter = As2Adapter("acme", plain)
    outcome = adapter.call("send", make_call({"filename": "a.edi", "text": DOCUMENT}))
    adapter.close()
    assert outcome.result["status"] == "processed"
    assert not station.received[0].signed and not station.received[0].encrypted
    with pytest.raises(ConfigError, match="key"):
        As2Adapter("acme", {**plain, "sign": True})


def test_https_to_a_partner_with_a_private_ca(acme: Identity, supplier: Identity, tmp_path: Path) -> None:
    ca, certificate, key = tls_server_certificate()
    station = As2Station(supplier, "ACME", acme.certificate, tls=(certificate, key))
    try:
        trusting = As2Adapter("acme", settings_for(acme, supplier, station, tmp_path, tls_ca=ca))
        assert trusting.call("send", make_call({"filename": "a.edi", "text": DOCUMENT})).detail == "processed"
        trusting.close()
        untrusting = As2Adapter("acme", settings_for(acme, supplier, station, tmp_path))
        with pytest.raises(PermanentError, match="not trusted"):
            untrusting.call("send", make_call({"filename": "b.edi", "text": DOCUMENT}))
        untrusting.close()
        assert [r.filename for r in station.received] == ["a.edi"]
    finally:
        station.close()


def test_a_very_long_message_id_is_remembered_by_its_digest(acme: Identity, supplier: Identity,
                                                            station: As2Station, tmp_path: Path) -> None:
    adapter = As2Adapter("acme", settings_for(acme, supplier, station, tmp_path))
    message = station.build(DOCUMENT.encode())
    long_id = "<" + "x" * 900 + "@supplier1>"  # RFC 5322 allows 998; a database index does not

    def request() -> WebhookRequest:
        plain = request_of(message)
        return WebhookRequest(plain.method, plain.url, {**plain.headers, "message-id": long_id}, plain.body)

    first = request()
    assert adapter.webhook("receive", first)
    adapter.webhook_answer("receive", first, 202, "accepted", "", ["e-1"])
    assert all(len(name) < 300 for name, _ in adapter.store.items("as2:"))
    assert adapter.webhook("receive", request()) == [], "the resend is a duplicate"
    adapter.close()


def test_http_basic_auth_when_the_partner_asks_for_it(acme: Identity, supplier: Identity, station: As2Station,
                                                      tmp_path: Path) -> None:
    station.basic_auth = "acme:s3cret-pass"
    anonymous = As2Adapter("acme", settings_for(acme, supplier, station, tmp_path))
    with pytest.raises(PermanentError, match="http_auth") as info:
        anonymous.call("send", make_call({"filename": "a.edi", "text": DOCUMENT}))
    anonymous.close()
    login = {"username": "acme", "password": "s3cret-pass"}
    adapter = As2Adapter("acme", settings_for(acme, supplier, station, tmp_path, http_auth=login))
    assert adapter.call("send", make_call({"filename": "b.edi", "text": DOCUMENT})).detail == "processed"
    adapter.close()
    assert [r.filename for r in station.received] == ["b.edi"]
    assert "s3cret" not in str(info.value)
