"""X12 over AS2, both ways, against a second, independent AS2 station (pyas2lib on its own HTTP server).

Given an x12 partner whose transport is ``{kind: as2}``, when the bus sends an 850 it arrives at the station
signed, encrypted and acknowledged by a synchronous MDN; when the station posts an 855 to the adapter's ``pushed``
webhook on the bus's real HTTP server, the bus verifies and unpacks it, journals one event and answers with a
signed MDN; a resent message is acknowledged again and not applied twice; a tampered one is refused with a 4xx.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.b2b import carrier_refusal
from adapters.base import WebhookRequest
from adapters.x12 import X12Adapter
from bus.envelope import Event
from bus.errors import PermanentError, WebhookRejected
from bus.testing import make_call
from bus.webhooks import WebhookApp, WebhookServer, endpoints_for
from tests.adapters.edi.test_x12 import ACK_855, PO_850, interchange
from tests.helpers.as2station import As2Station, Identity, identity


@pytest.fixture(scope="module")
def ours() -> Identity:
    return identity("IRONBUYER")


@pytest.fixture(scope="module")
def theirs() -> Identity:
    return identity("SUPPLIERAS2")


class Bus:
    def __init__(self, adapter: X12Adapter) -> None:
        self.events: list[Event] = []
        app = WebhookApp(endpoints_for("edi", adapter), self.ingest, lambda: (True, "ok"))
        self.server = WebhookServer(app, "127.0.0.1", 0, graceful_timeout=2.0)
        self.server.start()

    async def ingest(self, events: list[Event]) -> None:
        self.events.extend(events)

    @property
    def hook(self) -> str:
        return f"{self.server.url}/hooks/edi/pushed"


@pytest.fixture
def world(ours: Identity, theirs: Identity, tmp_path: Path) -> Iterator[tuple[X12Adapter, As2Station, Bus]]:
    station = As2Station(theirs, "IRONBUYER", ours.certificate)
    transport = {"kind": "as2", "url": f"{station.url}/as2", "as_from": "IRONBUYER", "as_to": "SUPPLIERAS2",
                 "key": ours.key, "certificate": ours.certificate, "partner_certificate": theirs.certificate,
                 "mdn": "sync", "timeout": 20, "quarantine": str(tmp_path / "quarantine")}
    adapter = X12Adapter("edi", {"our_id": "BUYERCO", "our_qualifier": "ZZ", "partners": {
        "SUP1": {"id": "SUPPLIER1", "qualifier": "ZZ", "transport": transport}}})
    adapter.open()
    bus = Bus(adapter)
    yield adapter, station, bus
    bus.server.stop()
    adapter.close()
    station.close()


def test_an_850_goes_out_over_as2_and_the_mdn_confirms_it(world: tuple[X12Adapter, As2Station, Any]) -> None:
    adapter, station, _ = world
    outcome = adapter.call("send", make_call(PO_850, idempotency_key="po-6112"))
    [exchange] = station.received
    assert exchange.signed and exchange.encrypted
    assert exchange.body.startswith(b"ISA*") and b"BEG*00*SA*PO-6112" in exchange.body
    assert outcome.reference == "000000001"


def test_an_855_pushed_over_as2_is_journaled_once_and_answered_with_a_signed_mdn(
        world: tuple[X12Adapter, As2Station, Bus]) -> None:
    _, station, bus = world
    message = station.build(interchange(ACK_855), filename="855.x12", content_type="application/edi-x12")
    response, status, detail = station.post(bus.hook, message)
    assert response.status_code == 200, response.text
    assert status == "processed", detail
    [event] = bus.events
    assert event.data["document"] == "855" and event.data["partner"] == "SUP1" and event.data["status"] == "accepted"
    # and our 997 went back to the partner over AS2 too
    assert any(r.body.startswith(b"ISA*") and b"ST*997*" in r.body for r in station.received)
    # The partner did not get our answer and sends the same message again: acknowledged (with AS2's
    # duplicate-document warning), not applied twice
    again, status_again, detail_again = station.post(bus.hook, message)
    assert again.status_code == 200 and status_again == "processed/Warning", detail_again
    assert len(bus.events) == 1


def test_a_tampered_message_is_refused_with_a_4xx_and_nothing_is_journaled(
        world: tuple[X12Adapter, As2Station, Bus]) -> None:
    _, station, bus = world
    message = station.build(interchange(ACK_855), filename="855.x12", content_type="application/edi-x12")
    body = message.content
    forged = body[:-40] + bytes(b ^ 1 for b in body[-40:-20]) + body[-20:]
    response = httpx.post(bus.hook, content=forged, headers={**{k: str(v) for k, v in message.headers.items()},
                                                             "authorization": "Bearer not-for-letters"})
    assert 400 <= response.status_code < 500
    assert bus.events == []


def test_a_tampered_message_is_kept_for_a_dead_letter_and_stays_refused_when_read_again(
        world: tuple[X12Adapter, As2Station, Bus]) -> None:
    adapter, station, bus = world
    message = station.build(interchange(ACK_855), filename="855.x12", content_type="application/edi-x12")
    body = message.content
    forged = body[:-40] + bytes(b ^ 1 for b in body[-40:-20]) + body[-20:]
    response = httpx.post(bus.hook, content=forged, headers={**{k: str(v) for k, v in message.headers.items()},
                                                             "authorization": "Bearer not-for-letters"})
    assert 400 <= response.status_code < 500 and b"Disposition" in response.content  # the negative MDN
    [refused] = adapter.refused  # no journal bound here: kept on the adapter, as the bus's sink would get it
    assert refused.partner == "SUP1" and refused.trigger == "pushed" and refused.body == forged
    assert refused.meta["carrier"] == "as2" and "authorization" not in refused.meta["headers"]
    assert refused.meta["headers"]["as2-from"] and refused.reference
    with pytest.raises(PermanentError):
        adapter.reprocess(refused)
    # the untouched message, kept the same way, is read again into its 855
    kept = carrier_refusal(WebhookRequest("POST", "", {k: str(v) for k, v in message.headers.items()}, body),
                           "SUP1", WebhookRejected("x"))
    [payload] = adapter.reprocess(kept)
    assert payload["status"] == "accepted" and payload["document"] == "855"


def test_a_message_for_another_relationship_is_not_taken(world: tuple[X12Adapter, As2Station, Bus],
                                                         theirs: Identity) -> None:
    _, _, bus = world
    stranger = As2Station(identity("STRANGER"), "IRONBUYER", theirs.certificate)
    try:
        message = stranger.build(interchange(ACK_855), filename="855.x12")
        response, _, _ = stranger.post(bus.hook, message)
        assert response.status_code == 403
    finally:
        stranger.close()
    assert bus.events == []
