"""The ``as2`` adapter: one AS2 trading relationship (our station and one partner).

* operation ``send`` — a document payload (``text`` or ``base64``, ``filename``, ``content_type``; see
  :mod:`adapters.b2b.payload`) goes out signed, compressed and encrypted as the profile says; the MDN decides
  the outcome (see :mod:`adapters.as2.transport`);
* webhook ``receive`` (``POST /hooks/<system>/receive``, the URL the partner sends to) — a verified, decrypted,
  decompressed message becomes one event whose payload is the document; the HTTP answer is the signed
  synchronous MDN, or 200 at once and the MDN posted to the partner's URL afterwards when it asked for an
  asynchronous one. A message that fails a check is refused (4xx, a negative MDN) and its raw form is kept in
  ``quarantine``, so nothing is lost; a resent message id is answered "duplicate-document" and not emitted;
* webhook ``mdn`` (``POST /hooks/<system>/mdn``, our ``mdn_url``) — the partner's asynchronous MDNs for what we
  sent, verified against the MIC we stored; each becomes an event ``{message_id, delivered, disposition, …}``
  so a route can alert on a negative one.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import httpx
import structlog
from pyas2lib import Mdn, Message

from adapters.as2.inbound import Received, answer_received, inbound_state_key, parse_async_mdn, receive_message
from adapters.as2.profile import KEYS_REQUIRED, SETTINGS_PROPERTIES
from adapters.as2.transport import As2Transport, store_id
from adapters.b2b.payload import document_from_payload
from adapters.b2b.refusals import carrier_refusal, carrier_request
from adapters.base import (
    Adapter,
    AdapterStore,
    Call,
    Health,
    Outcome,
    Refused,
    WebhookAnswer,
    WebhookRequest,
    operation,
    trigger,
)
from bus.errors import PermanentError

__all__ = ["As2Adapter"]

log = structlog.get_logger(__name__)

_PENDING_MDN = "as2:mdn-out:"  # asynchronous MDNs we still owe a partner


class As2Adapter(Adapter):
    """AS2 with one partner: send documents, receive them at the webhook edge, sync and async MDNs."""

    name: ClassVar[str] = "as2"
    summary: ClassVar[str] = "B2B documents over AS2 (pyas2lib): signed, encrypted, compressed; sync/async MDNs"
    settings_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["as_from", "as_to"],
        **KEYS_REQUIRED,
        "properties": {
            **SETTINGS_PROPERTIES,
            "partner": {"type": "string", "description": "The partner's name in payloads (default: as_to)."},
            "quarantine": {"type": "string", "minLength": 1,
                           "description": "Folder where refused inbound messages are kept, raw, with the "
                                          "reason (default var/as2/<system>/quarantine)."},
            "max_size": {"type": "integer", "minimum": 1, "default": 64 * 1024 * 1024,
                         "description": "Largest document accepted after decompression, in bytes (a compressed "
                                        "message that expands beyond it is refused: decompression bomb)."},
            "remember_days": {"type": "number", "exclusiveMinimum": 0, "default": 30,
                              "description": "How long received Message-IDs are remembered, so that a resend "
                                             "is answered as a duplicate (pruned when the bus starts)."},
            "mdn_attempts": {"type": "integer", "minimum": 1, "maximum": 50, "default": 8,
                             "description": "Tries to post an asynchronous MDN before giving up (backoff "
                                            "1 s doubling, at most 5 min apart)."},
        },
    }

    def __init__(self, system: str, settings: Mapping[str, Any]) -> None:
        super().__init__(system, settings)
        transport_settings = {k: v for k, v in self.settings.items() if k in SETTINGS_PROPERTIES}
        self.transport = As2Transport({"kind": "as2", **transport_settings}, store=self.store)
        self.profile = self.transport.profile
        self.partner = str(self.settings.get("partner") or self.profile.as_to)
        self.quarantine = Path(str(self.settings.get("quarantine") or Path("var") / "as2" / system / "quarantine"))
        self.mdn_attempts = int(self.settings.get("mdn_attempts", 8))
        self.remember_days = float(self.settings.get("remember_days", 30))
        self.max_size = int(self.settings.get("max_size", 64 * 1024 * 1024))
        self._received: OrderedDict[int, tuple[WebhookRequest, Received]] = OrderedDict()
        self._received_lock = threading.Lock()
        self._outbox: queue.Queue[str | None] = queue.Queue()
        self._sender: threading.Thread | None = None
        self._stop = threading.Event()

    def bind_store(self, store: AdapterStore) -> None:
        super().bind_store(store)
        self.transport.store = store

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def open(self) -> None:
        self.transport.open()
        self.prune()
        self._stop.clear()
        self._sender = threading.Thread(target=self._send_mdns, name=f"as2-mdn-{self.system}", daemon=True)
        self._sender.start()
        for name, _ in self.store.items(_PENDING_MDN):  # owed before a restart
            self._outbox.put(name)

    def prune(self, now: float | None = None) -> int:
        """Forget received message ids, and records of sent messages, older than ``remember_days`` (the window
        in which a resend is recognised as a duplicate; an MDN that has not come by then will not). Returns
        how many were removed."""
        cutoff = (now if now is not None else time.time()) - self.remember_days * 86400.0
        removed = 0
        for prefix, stamps in ((f"as2:in:{self.profile.as_to}:", ("at",)), ("as2:out:", ("received", "sent"))):
            for name, value in self.store.items(prefix):
                try:
                    record = json.loads(value)
                    at = float(next((record[k] for k in stamps if record.get(k)), 0))
                except (ValueError, AttributeError, TypeError):
                    at = 0.0
                if at and at < cutoff:
                    self.store.put(name, None)
                    removed += 1
        return removed

    def close(self) -> None:
        if not self.closed:
            self._stop.set()
            self._outbox.put(None)
            if self._sender is not None:
                self._sender.join(10)
            self.transport.close()
        super().close()

    def health(self) -> Health:
        """Always ok (AS2 has no login to probe); says what is outstanding: MDNs we owe, MDNs we wait for."""
        owed = len(self.store.items(_PENDING_MDN))
        awaited = sum(1 for _, v in self.store.items("as2:out:") if _status(v) == "pending")
        return Health(True, f"AS2 {self.profile.as_from} <-> {self.profile.as_to}; {owed} asynchronous MDN(s) to "
                            f"send, {awaited} sent message(s) awaiting the partner's MDN")

    # -- outbound ----------------------------------------------------------------------------------------------
    @operation("send", description="Send a document {text | base64, filename, content_type} to the partner")
    def send(self, call: Call) -> Outcome:
        document = document_from_payload(call.payload, call.idempotency_key, self.partner,
                                         default_type="application/octet-stream")
        receipt = self.transport.send(document)
        log.info("as2 send", system=self.system, message_id=receipt.reference, event_id=call.event.id,
                 correlation_id=call.event.correlationid, detail=receipt.detail)
        return Outcome(result={**dict(receipt.acknowledgement), "message_id": receipt.reference,
                               "filename": document.filename, "detail": receipt.detail},
                       reference=receipt.reference, detail=receipt.detail)

    # -- inbound -----------------------------------------------------------------------------------------------
    @trigger("receive", kind="webhook", description="AS2 messages from the partner (answered with an MDN)")
    def receive(self, request: WebhookRequest) -> list[Any]:
        received = receive_message(self.profile, self.store, request.headers, request.body, self.partner,
                                   self.max_size)
        with self._received_lock:
            self._received[id(request)] = (request, received)
            while len(self._received) > 256:  # answers never asked for (a crashed request) must not pile up
                self._received.popitem(last=False)
        if received.refusal is not None:
            self._keep_refused(request, received)
            if received.refusal.reason not in _NOT_A_PARTNERS:  # junk for another endpoint is no partner's document
                self.refuse(carrier_refusal(request, self.partner, received.refusal, trigger="receive"))
            raise received.refusal
        if received.duplicate:
            log.info("as2 duplicate message", system=self.system, message_id=received.message_id)
        return list(received.payloads)

    def reprocess(self, refused: Refused) -> list[Any]:
        """Verify a refused message again (``ironbus dlq retry``) with the current keys and certificates; its
        document when it passes now. No MDN is sent again (the partner got the negative one)."""
        request = carrier_request(refused)
        received = receive_message(self.profile, self.store, request.headers, request.body, self.partner,
                                   self.max_size)
        if received.refusal is not None:
            raise received.refusal
        if received.duplicate:
            raise PermanentError(f"message {received.message_id} was received since; not applied again")
        if received.message_id:  # a later resend of it by the partner is then a duplicate, not applied twice
            self.store.put(inbound_state_key(self.profile.as_to, received.message_id),
                           json.dumps({"at": time.time(), "reread": True}))
        return list(received.payloads)

    @trigger("mdn", kind="webhook", description="Asynchronous MDNs for messages we sent")
    def mdn(self, request: WebhookRequest) -> list[Any]:
        outcome = parse_async_mdn(self.profile, self.store, request.headers, request.body,
                                  lambda: Message(sender=self.profile.organization, receiver=self.profile.partner))
        level = log.info if outcome["delivered"] else log.warning
        level("as2 asynchronous mdn", system=self.system, message_id=outcome["message_id"],
              delivered=outcome["delivered"], disposition=outcome["disposition"])
        return [outcome]

    def webhook_answer(self, trigger_name: str, request: WebhookRequest | None, status: int, reason: str,
                       detail: str, accepted: Sequence[str]) -> WebhookAnswer | None:
        if trigger_name != "receive" or request is None:
            return None
        with self._received_lock:
            entry = self._received.pop(id(request), None)
        if entry is None or entry[0] is not request:
            return None
        received = entry[1]
        answer, owe = answer_received(received, status, self.store, self.profile.as_to, accepted)
        if owe and received.mdn is not None:
            self._owe(received, received.mdn)
        return answer

    # -- asynchronous MDNs we send -------------------------------------------------------------------------------
    def _owe(self, received: Received, mdn: Mdn) -> None:
        url = str(mdn.mdn_url or "")
        if not url.lower().startswith(("http://", "https://")):
            log.warning("as2 asynchronous mdn url is not http(s); not sent", system=self.system,
                        message_id=received.message_id)
            return
        name = f"{_PENDING_MDN}{store_id(received.message_id)}"
        headers = {k: str(v) for k, v in mdn.headers.items() if k.lower() != "mime-version"}
        body = mdn.content if isinstance(mdn.content, bytes) else str(mdn.content).encode()
        self.store.put(name, json.dumps({"url": url, "headers": headers, "body": body.decode("latin-1"),
                                         "attempts": 0}))
        self._outbox.put(name)

    def _send_mdns(self) -> None:
        client = httpx.Client(timeout=self.profile.timeout, verify=self.profile.verify_tls,
                              auth=self.profile.http_auth)
        delay: dict[str, float] = {}
        try:
            while not self._stop.is_set():
                try:
                    name = self._outbox.get(timeout=0.5)
                except queue.Empty:
                    name = None
                due = [n for n, at in delay.items() if at <= time.monotonic()]
                for retry in due:
                    del delay[retry]
                for item in ([name] if name else []) + due:
                    wait = self._post_mdn(client, item)
                    if wait is not None:
                        delay[item] = time.monotonic() + wait
        finally:
            client.close()

    def _post_mdn(self, client: httpx.Client, name: str) -> float | None:
        """Post one owed MDN; the seconds to wait before the next try, or None when done (sent or given up)."""
        raw = self.store.get(name)
        if raw is None:
            return None
        owed = json.loads(raw)
        try:
            response = client.post(owed["url"], content=owed["body"].encode("latin-1"), headers=owed["headers"])
            ok, problem = response.status_code < 300, f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            ok, problem = False, type(exc).__name__
        if ok:
            self.store.put(name, None)
            log.info("as2 asynchronous mdn sent", system=self.system, message_id=name[len(_PENDING_MDN):])
            return None
        owed["attempts"] = int(owed.get("attempts", 0)) + 1
        if owed["attempts"] >= self.mdn_attempts:
            self.store.put(name, None)
            log.error("as2 asynchronous mdn given up", system=self.system, message_id=name[len(_PENDING_MDN):],
                      attempts=owed["attempts"], error=problem)
            return None
        self.store.put(name, json.dumps(owed))
        log.warning("as2 asynchronous mdn not delivered; will retry", system=self.system,
                    message_id=name[len(_PENDING_MDN):], attempts=owed["attempts"], error=problem)
        return float(min(300.0, 2.0 ** (owed["attempts"] - 1)))

    # -- refused messages ----------------------------------------------------------------------------------------
    def _keep_refused(self, request: WebhookRequest, received: Received) -> None:
        """Keep a refused message as it arrived, with why, so an operator can look at it or replay it."""
        refusal = received.refusal
        assert refusal is not None
        try:
            self.quarantine.mkdir(parents=True, exist_ok=True)
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
            base = self.quarantine / f"{stamp}-{refusal.reason}"
            base.with_suffix(".msg").write_bytes(received.raw or request.body)
            base.with_suffix(".txt").write_text(
                f"system: {self.system}\nmessage-id: {received.message_id}\nreason: {refusal.reason}\n"
                f"status: {refusal.status}\ndetail: {refusal}\nat: {stamp}\n")
            log.warning("as2 message refused; kept in quarantine", system=self.system,
                        message_id=received.message_id, reason=refusal.reason, file=str(base.with_suffix(".msg")))
        except OSError as exc:
            log.error("as2 message refused; quarantine not writable", system=self.system,
                      message_id=received.message_id, reason=refusal.reason, error=exc.strerror or str(exc))


#: Refusals of requests that are no partner's AS2 message (not AS2, another relationship): not kept as letters.
_NOT_A_PARTNERS = frozenset({"not_as2", "unknown_partner"})


def _status(value: str) -> str | None:
    try:
        state = json.loads(value)
    except ValueError:
        return None
    return str(state.get("status")) if isinstance(state, dict) else None
