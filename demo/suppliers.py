"""Three simulated suppliers for the B2B demo (examples/suppliers/routes.yaml), each speaking its standard.

* **BOLT** (X12 over folders): answers an 850 with its 997, an 855 that accepts every line but ships the
  first one a week late (the *delayed confirmation* that drives flow 2), then an 856 ship notice; an 860 gets a
  997 and an 865 accepting the change.
* **NUTS** (EDIFACT over folders): answers ORDERS with CONTRL, an ORDRSP that confirms only 60 % of the first
  line (the *partial confirmation*), then a DESADV for what it confirmed.
* **ACME** (cXML over HTTP): its endpoint answers every OrderRequest with a cXML Response 200 at once, then
  posts a ConfirmationRequest (line 1 accepted for a date ten days later) and a ShipNoticeRequest to the bus's
  webhook, with its Sender credential and shared secret.

The EDI suppliers are stations built from the bus's own x12/edifact adapters with the roles swapped — so their
envelopes, control numbers and acknowledgements are the real thing. Use::

    settings = SimulatorSettings(b2b_dir=Path("var/b2b"), buyer_cxml_url="http://127.0.0.1:8080/hooks/...")
    sim = SupplierSimulator(settings)
    sim.start()            # the cXML endpoint; then call sim.step() (or sim.start(background=True))
    ...
    sim.stop()

Wiring it into ``make demo``: run the bus on ``examples/suppliers/routes.yaml`` with ``IRONBUS_B2B`` pointing at
the simulator's ``b2b_dir``, link the partners (``ironbus xref set supplier S-BOLT suppliers_x12 BOLT``, ``S-NUTS
suppliers_edifact NUTS``, ``S-ACME suppliers_cxml ACME``) and start the simulator in the background. The demo's
master data has only the supplier S-BOLT (X12 in ``supplier_channel``); the EDIFACT and cXML paths need S-NUTS
and S-ACME as SRM suppliers too, or ``supplier_channel`` pointed elsewhere.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import structlog

from adapters.base import Call
from adapters.cxml.document import render, timestamp
from adapters.edi.adapter import EdiAdapter
from adapters.edifact import EdifactAdapter
from adapters.x12 import X12Adapter
from bus.envelope import Event
from bus.webhooks import WebhookApp, WebhookServer, endpoints_for
from bus.xmldict import xml_to_dict

__all__ = ["As2Link", "SimulatorSettings", "SupplierSimulator"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class As2Link:
    """BOLT over AS2 instead of folders: its AS2 identity and ours, and the bus's webhook it pushes to.

    Keys and certificates are PEM text or PEM file paths (adapters/b2b/pem.py)."""

    bus_hook: str  # the bus's x12 system's ``pushed`` webhook URL
    bolt_key: str
    bolt_certificate: str
    buyer_certificate: str
    bolt_name: str = "BOLTAS2"
    buyer_name: str = "IRONBUYER"


@dataclass(frozen=True)
class SimulatorSettings:
    """Where the suppliers meet the bus; the defaults match examples/suppliers/routes.yaml."""

    b2b_dir: Path
    buyer_cxml_url: str = "http://127.0.0.1:8080/hooks/suppliers_cxml/documents"
    acme_port: int = 8791
    buyer_edi_id: str = "IRONBUYER"
    buyer_cxml_id: str = "AN-IRONBUYER"
    acme_out_secret: str = "acme-order-secret"   # what the bus sends ACME with its orders
    acme_in_secret: str = "acme-post-secret"     # what ACME sends the bus with its documents
    delay_days: int = 7
    partial_share: float = 0.6
    bolt_as2: As2Link | None = None  # BOLT trades over AS2 (its own AS2 endpoint) instead of folders
    today: Callable[[], dt.date] = field(default=lambda: dt.datetime.now(dt.UTC).date())


def _call(payload: Mapping[str, Any], key: str) -> Call:
    event = Event(type="supplier.simulated", source="demo/suppliers", data=dict(payload))
    return Call(event=event, payload=payload, idempotency_key=key)


def _ymd(day: dt.date) -> str:
    return day.strftime("%Y%m%d")


class EdiSupplier:
    """One EDI supplier: an x12/edifact station whose only partner is the buyer (the bus)."""

    def __init__(self, cls: type[EdiAdapter], name: str, our_id: str, buyer_id: str, folder: Path,
                 answer: Callable[[dict[str, Any]], list[dict[str, Any]]], as2: As2Link | None = None) -> None:
        # What the bus writes to "to-supplier" we read; what we write to "from-supplier" the bus reads. Over
        # AS2 the station pushes to the bus's webhook and takes the bus's pushes on a webhook server of its own.
        self.name = name
        transport: dict[str, Any] = {"kind": "directory", "outbox": str(folder / "from-supplier"),
                                     "inbox": str(folder / "to-supplier")}
        if as2 is not None:
            transport = {"kind": "as2", "url": as2.bus_hook, "as_from": as2.bolt_name, "as_to": as2.buyer_name,
                         "key": as2.bolt_key, "certificate": as2.bolt_certificate,
                         "partner_certificate": as2.buyer_certificate, "mdn": "sync", "timeout": 20}
        self.as2 = as2
        self.inbox: list[dict[str, Any]] = []  # what the bus pushed over AS2, not yet answered
        self._server: WebhookServer | None = None
        partner = {"id": buyer_id, "qualifier": "ZZ", "always_contrl": True,  # (x12 ignores always_contrl)
                   "transport": transport}
        self.station = cls(f"supplier_{name.lower()}", {"our_id": our_id, "our_qualifier": "ZZ",
                                                        "partners": {"BUYER": partner}})
        self.answer = answer
        self.watermark: str | None = None
        self.sent = 0

    def open(self) -> None:
        self.station.open()
        if self.as2 is not None:
            async def take(events: list[Event]) -> None:
                self.inbox.extend(e.data for e in events)

            app = WebhookApp(endpoints_for(self.station.system, self.station), take, lambda: (True, "ok"))
            self._server = WebhookServer(app, "127.0.0.1", 0, graceful_timeout=2.0)
            self._server.start()

    @property
    def as2_url(self) -> str:
        """Where the bus sends this supplier's AS2 messages (its station's ``pushed`` webhook)."""
        assert self._server is not None, "open() an AS2 supplier first"
        return f"{self._server.url}/hooks/{self.station.system}/pushed"

    def close(self) -> None:
        if self._server is not None:
            self._server.stop()
        self.station.close()

    def step(self) -> list[str]:
        """Read what the bus sent (acknowledging it, as the station does) and answer every order."""
        if self.as2 is not None:
            payloads, self.inbox = self.inbox, []
        else:
            result = self.station.poll("received", self.watermark)
            self.watermark = result.watermark
            payloads = [payload for _, payload in result.records]
        said = []
        for payload in payloads:
            if payload.get("status") != "accepted":
                said.append(f"{self.name}: refused a document: {payload.get('reason')}")
                continue
            if payload["document"] in ("997", "CONTRL"):
                continue
            for reply in self.answer(payload):
                self.sent += 1
                key = f"{self.name}-{payload['interchange']['control']}-{reply['document']}"
                self.station.call("send", _call({**reply, "partner": "BUYER"}, key))
                said.append(f"{self.name}: {payload['document']} {self._order_id(payload)} answered with "
                            f"{reply['document']}")
        return said

    @staticmethod
    def _order_id(payload: Mapping[str, Any]) -> str:
        body = payload.get("body") or {}
        for path in (("BEG", "BEG03"), ("BCH", "BCH03")):
            value = (body.get(path[0]) or {}).get(path[1])
            if value:
                return str(value)
        bgm = body.get("BGM") or {}
        return str(bgm.get("BGM02", "?"))


class SupplierSimulator:
    """BOLT (X12), NUTS (EDIFACT) and ACME (cXML); see the module docs."""

    def __init__(self, settings: SimulatorSettings) -> None:
        self.settings = settings
        base = settings.b2b_dir
        self.bolt = EdiSupplier(X12Adapter, "BOLT", "BOLTCO", settings.buyer_edi_id, base / "bolt", self._bolt,
                                as2=settings.bolt_as2)
        self.nuts = EdiSupplier(EdifactAdapter, "NUTS", "NUTSCO", settings.buyer_edi_id, base / "nuts", self._nuts)
        self.acme_orders: list[dict[str, Any]] = []   # OrderRequests received, oldest first
        self.acme_posted: list[tuple[str, int, str]] = []  # (document, HTTP status, cXML status code)
        self._acme_queue: list[dict[str, Any]] = []
        self.said: list[str] = []  # everything the suppliers did in background rounds, oldest first
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._loop: threading.Thread | None = None
        self._stopping = threading.Event()

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self, *, background: bool = False, interval: float = 0.5) -> None:
        """Open the EDI stations and ACME's endpoint; with ``background`` also step every ``interval`` s."""
        self.bolt.open()
        self.nuts.open()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.settings.acme_port), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        daemon=True, name="acme-cxml")
        self._thread.start()
        if background:
            self._loop = threading.Thread(target=self._run, args=(interval,), daemon=True, name="suppliers")
            self._loop.start()

    @property
    def acme_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/cxml"

    def stop(self) -> None:
        self._stopping.set()
        if self._loop is not None:
            self._loop.join(5)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self.bolt.close()
        self.nuts.close()

    def _run(self, interval: float) -> None:
        while not self._stopping.wait(interval):
            try:
                for line in self.step():
                    self.said.append(line)
                    log.info("supplier", said=line)
            except Exception as exc:  # the demo goes on; the error is shown
                log.warning("supplier_step_failed", error=f"{type(exc).__name__}: {exc}")

    def step(self) -> list[str]:
        """One round: every supplier answers what arrived since the last round. Returns what they did."""
        said = self.bolt.step() + self.nuts.step()
        with self._lock:
            queue, self._acme_queue = self._acme_queue, []
        for order in queue:
            said += self._acme_answer(order)
        return said

    # -- BOLT: X12 --------------------------------------------------------------------------------------
    def _bolt(self, order: dict[str, Any]) -> list[dict[str, Any]]:
        body = order["body"]
        later = _ymd(self.settings.today() + dt.timedelta(days=self.settings.delay_days))
        if order["document"] == "850":
            po = body["BEG"]["BEG03"]
            lines = body.get("PO1_loop") or []
            ack_lines = []
            for i, line in enumerate(lines):
                po1 = line["PO1"]
                ack = ["ACK", "IA", po1.get("PO102"), po1.get("PO103")]
                ack_lines.append([["PO1", po1.get("PO101"), po1.get("PO102"), po1.get("PO103"), po1.get("PO104"),
                                   po1.get("PO105"), po1.get("PO106"), po1.get("PO107"), po1.get("PO108"),
                                   po1.get("PO109")],
                                  [*ack, "068", later] if i == 0 else ack])
            confirmation = {"document": "855", "segments": [
                ["BAK", "00", "AC", po, _ymd(self.settings.today())], ack_lines, ["CTT", str(len(lines))]]}
            items = [[["HL", str(3 + i), "2", "I"],
                      ["LIN", po1.get("PO101"), "VP", po1.get("PO109") or po1.get("PO107")],
                      ["SN1", po1.get("PO101"), po1.get("PO102"), po1.get("PO103")]]
                     for i, po1 in enumerate(line["PO1"] for line in lines)]
            notice = {"document": "856", "segments": [
                ["BSN", "00", f"SH-{po}", _ymd(self.settings.today()), "1200"],
                ["HL", "1", None, "S"], ["DTM", "011", _ymd(self.settings.today())], ["DTM", "017", later],
                ["HL", "2", "1", "O"], ["PRF", po], items, ["CTT", str(len(lines) + 2)]]}
            return [confirmation, notice]
        if order["document"] == "860":
            po = body["BCH"]["BCH03"]
            return [{"document": "865", "segments": [["BCA", "06", "AT", po, None, body["BCH"].get("BCH05")],
                                                     ["CTT", "0"]]}]
        return []

    # -- NUTS: EDIFACT -----------------------------------------------------------------------------------
    def _nuts(self, order: dict[str, Any]) -> list[dict[str, Any]]:
        if order["document"] != "ORDERS":
            return []
        body = order["body"]
        po = body["BGM"]["BGM02"]
        lines, shipped = [], []
        for i, line in enumerate(body.get("LIN_loop") or []):
            qty = line["QTY"] if isinstance(line["QTY"], dict) else line["QTY"][0]
            ordered = float(qty["QTY01"][1])
            unit = qty["QTY01"][2] if len(qty["QTY01"]) > 2 else "PCE"
            confirmed = round(ordered * self.settings.partial_share, 3) if i == 0 else ordered
            number = f"{confirmed:g}"
            item = line["LIN"]["LIN03"]
            lines.append([["LIN", line["LIN"]["LIN01"], "6" if i == 0 else "5", item],
                          ["QTY", ["21", f"{ordered:g}", unit]],
                          i == 0 and ["QTY", ["113", number, unit]] or None,
                          i == 0 and ["FTX", "AAI", None, None, "short of stock: the rest is cancelled"] or None])
            shipped.append([["LIN", line["LIN"]["LIN01"], None, item], ["QTY", ["12", number, unit]]])
        today = _ymd(self.settings.today())
        response = {"document": "ORDRSP", "segments": [
            ["BGM", "231", f"RSP-{po}", "4"], ["DTM", ["137", today, "102"]], ["RFF", ["ON", po]], lines,
            ["UNS", "S"]]}
        later = _ymd(self.settings.today() + dt.timedelta(days=3))
        despatch = {"document": "DESADV", "segments": [
            ["BGM", "351", f"ASN-{po}", "9"], ["DTM", ["137", today, "102"]], ["DTM", ["11", today, "102"]],
            ["DTM", ["17", later, "102"]], ["RFF", ["ON", po]], ["CPS", "1"], shipped,
            ["CNT", ["2", str(len(shipped))]]]}
        return [response, despatch]

    # -- ACME: cXML over HTTP --------------------------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        simulator = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                code, text = simulator._acme_receive(body)
                answer = render({"cXML": {"@payloadID": f"{timestamp()}@acme.example", "@timestamp": timestamp(),
                                          "Response": {"Status": {"@code": str(code), "@text": text}}}},
                                version="1.2.050")
                self.send_response(200)
                self.send_header("Content-Type", "text/xml; charset=UTF-8")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                return None

        return Handler

    def _acme_receive(self, body: bytes) -> tuple[int, str]:
        try:
            doc = xml_to_dict(body, source="OrderRequest")["cXML"]
            secret = doc["Header"]["Sender"]["Credential"].get("SharedSecret")
            order = doc["Request"]["OrderRequest"]
        except Exception as exc:  # a real supplier answers a bad document with 400
            return 400, f"Bad Request: {exc}"
        if secret != self.settings.acme_out_secret:
            return 401, "Unauthorized"
        with self._lock:
            self.acme_orders.append(doc)
            if order["OrderRequestHeader"].get("@type", "new") == "new":
                self._acme_queue.append(doc)
        return 200, "OK"

    def _acme_answer(self, order: dict[str, Any]) -> list[str]:
        request = order["Request"]["OrderRequest"]
        head = request["OrderRequestHeader"]
        items = request.get("ItemOut") or []
        items = items if isinstance(items, list) else [items]
        later = (self.settings.today() + dt.timedelta(days=self.settings.delay_days + 3)).isoformat()
        header = {"From": {"Credential": {"@domain": "DUNS", "Identity": "802661173"}},
                  "To": {"Credential": {"@domain": "NetworkID", "Identity": self.settings.buyer_cxml_id}},
                  "Sender": {"Credential": {"@domain": "DUNS", "Identity": "802661173",
                                            "SharedSecret": self.settings.acme_in_secret},
                             "UserAgent": "ACME order desk (simulated)"}}
        reference = {"@orderID": head["@orderID"], "DocumentReference": {"@payloadID": order["@payloadID"]}}
        confirmation = {"ConfirmationRequest": {
            "ConfirmationHeader": {"@type": "detail", "@noticeDate": timestamp(), "@confirmID": f"C-{head['@orderID']}",
                                   "Comments": {"@xml:lang": "en", "#text": "first line ships later"}},
            "OrderReference": reference,
            "ConfirmationItem": [{
                "@lineNumber": item["@lineNumber"], "@quantity": item["@quantity"],
                "UnitOfMeasure": (item.get("ItemDetail") or {}).get("UnitOfMeasure", "EA"),
                "ConfirmationStatus": {"@type": "accept", "@quantity": item["@quantity"],
                                       **({"@deliveryDate": f"{later}T12:00:00+00:00"} if i == 0 else {})}}
                for i, item in enumerate(items)]}}
        notice = {"ShipNoticeRequest": {
            "ShipNoticeHeader": {"@shipmentID": f"SN-{head['@orderID']}", "@operation": "new",
                                 "@noticeDate": timestamp(), "@shipmentDate": timestamp(),
                                 "@deliveryDate": f"{later}T12:00:00+00:00"},
            "ShipControl": {"CarrierIdentifier": {"@domain": "companyName", "#text": "ACME Logistics"},
                            "ShipmentIdentifier": f"TRK-{head['@orderID']}"},
            "ShipNoticePortion": {"OrderReference": reference, "ShipNoticeItem": [
                {"@lineNumber": item["@lineNumber"], "@quantity": item["@quantity"],
                 "UnitOfMeasure": (item.get("ItemDetail") or {}).get("UnitOfMeasure", "EA")} for item in items]}}}
        said = []
        for name, request_body in (("ConfirmationRequest", confirmation), ("ShipNoticeRequest", notice)):
            doc = render({"cXML": {"@payloadID": f"{name}-{head['@orderID']}@acme.example",
                                   "@timestamp": timestamp(), "@xml:lang": "en-US", "Header": header,
                                   "Request": {"@deploymentMode": "production", **request_body}}},
                         version="1.2.050", dtd="Fulfill.dtd")
            try:
                response = httpx.post(self.settings.buyer_cxml_url, content=doc,
                                      headers={"Content-Type": "text/xml; charset=UTF-8"}, timeout=10)
                status = xml_to_dict(response.content)["cXML"]["Response"]["Status"]["@code"]
                self.acme_posted.append((name, response.status_code, str(status)))
                said.append(f"ACME: {name} for {head['@orderID']} -> HTTP {response.status_code}, cXML {status}")
            except Exception as exc:  # the bus may be down: the demo shows it and moves on
                self.acme_posted.append((name, 0, type(exc).__name__))
                said.append(f"ACME: {name} for {head['@orderID']} not delivered: {exc}")
        return said
