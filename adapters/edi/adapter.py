"""The EDI adapter both standards share: send documents a mapping wrote, receive, acknowledge and reconcile.

Outbound (operation ``send``): the payload names the ``partner``, the ``document`` (``850``, ``ORDERS`` …)
and its ``segments`` (see :mod:`adapters.edi.segments`); the adapter adds the envelope with control numbers
from the partner's series, sends it over the partner's transport and, when the partner acknowledges,
remembers it as ``awaiting:`` until the 997 / CONTRL arrives — resending it after ``ack_timeout``.

Inbound: every received document, whatever carried it, goes through :meth:`EdiAdapter.receive` — the poll
trigger ``received`` (a pull transport's ``fetch``) and the webhook trigger ``pushed`` (a push transport such
as AS2, see :mod:`adapters.b2b`). One payload per transaction set / message comes out, with its segments as a
tree under ``body``; a document that fails the syntax checks comes out as ``status: rejected`` with the
reason (route those to an operator) and gets a negative acknowledgement; a duplicate interchange is never
applied twice.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

import structlog

from adapters.b2b import (
    InboundDocument,
    OutboundDocument,
    PushTransport,
    Transport,
    carrier_refusal,
    carrier_request,
    open_transport,
)
from adapters.base import (
    Adapter,
    Call,
    Health,
    Outcome,
    PollResult,
    Refused,
    WebhookAnswer,
    WebhookRequest,
    operation,
    trigger,
)
from adapters.edi.ledger import Awaiting, Ledger
from adapters.edi.model import Interchange, Problem, Unreadable
from adapters.edi.segments import LoopSpec, flatten_segments, segment_tree
from adapters.edi.settings import partner_schema
from adapters.edi.standard import Partner, Standard
from bus.errors import ConfigError, DeliveryError, PermanentError, TransientError, WebhookRejected

__all__ = ["EdiAdapter"]

log = structlog.get_logger(__name__)

RAW_LIMIT = 65536  # characters of a rejected document kept in its payload (the rest is in the partner's copy)


class EdiAdapter(Adapter):
    """Base of the ``x12`` and ``edifact`` adapters; a subclass sets ``standard`` and ``partner_options``."""

    standard: ClassVar[Standard]
    webhook_blocking: ClassVar[bool] = True

    def __init__(self, system: str, settings: Mapping[str, Any]) -> None:
        super().__init__(system, settings)
        self.partners = self._partners(settings)
        self._transports: dict[str, Transport] = {}
        self._opening = threading.Lock()
        # The documents the last poll returned, with the watermark it returned: settled once the bus stored it.
        self._unsettled: tuple[str | None, list[tuple[str, InboundDocument]]] = (None, [])

    def _partners(self, settings: Mapping[str, Any]) -> dict[str, Partner]:
        raw = settings.get("partners")
        if not isinstance(raw, Mapping) or not raw:
            raise ConfigError(f"{self.system}: settings 'partners' must name at least one trading partner")
        shared = set(partner_schema({})["properties"])
        out = {}
        for name, p in raw.items():
            out[str(name)] = Partner(
                name=str(name), id=str(p["id"]), qualifier=str(p.get("qualifier", self.default_qualifier)),
                our_id=str(p.get("our_id", settings.get("our_id", ""))),
                our_qualifier=str(p.get("our_qualifier", settings.get("our_qualifier", self.default_qualifier))),
                transport=dict(p["transport"]), acknowledge=bool(p.get("acknowledge", True)),
                expect_ack=bool(p.get("expect_ack", True)), ack_timeout=float(p.get("ack_timeout", 86400)),
                ack_retries=int(p.get("ack_retries", 2)), test=bool(p.get("test", False)),
                extra_segments=tuple(p.get("extra_segments", ())),
                options={k: v for k, v in p.items() if k not in shared}, qualifier_given="qualifier" in p)
        return out

    default_qualifier: ClassVar[str] = ""

    @property
    def ledger(self) -> Ledger:
        return Ledger(self.store, self.standard.name)

    # -- lifecycle -------------------------------------------------------------------------------------
    def transport(self, partner: str) -> Transport:
        with self._opening:  # workers, the poll and webhook threads share one transport per partner
            found = self._transports.get(partner)
            if found is None:
                found = open_transport(self.partners[partner].transport, self.store)
                try:
                    found.open()
                except OSError as exc:  # a folder or mount that is not there (yet): the bus retries
                    raise TransientError(f"cannot open the transport to {partner}: {exc.strerror or exc}") from None
                self._transports[partner] = found
            return found

    def open(self) -> None:
        for name in self.partners:
            try:
                self.transport(name)
            except DeliveryError as exc:  # a partner that is down must not stop the others
                log.warning("edi_transport_not_open", system=self.system, partner=name, error=str(exc))

    def health(self) -> Health:
        late = [a for a in self.ledger.awaiting() if a.overdue]
        if late:
            return Health(False, f"{len(late)} interchange(s) unacknowledged after every resend")
        return Health(True, f"{len(self.partners)} partner(s)")

    def close(self) -> None:
        for transport in self._transports.values():
            try:
                transport.close()
            except Exception as exc:  # closing one must not keep the others open
                log.warning("edi_transport_close_failed", system=self.system, error=str(exc))
        self._transports.clear()
        super().close()

    # -- outbound --------------------------------------------------------------------------------------
    @operation("send", description="Send one document (segments from a mapping) to a trading partner")
    def send(self, call: Call) -> Outcome:
        payload = call.payload
        if not isinstance(payload, Mapping):
            raise PermanentError("payload must be an object with 'partner', 'document' and 'segments'")
        partner = self._partner(payload.get("partner"))
        document = str(payload.get("document") or "")
        if document not in self.standard.documents:
            raise PermanentError(f"payload 'document' {document!r} is not one this adapter writes; expected one of "
                                 f"{', '.join(self.standard.documents)}")
        segments = flatten_segments(payload.get("segments"))
        numbers, when = self.ledger.numbers_for(call.idempotency_key, partner.name)
        stamp = datetime.fromtimestamp(when, UTC)
        version = payload.get("version")
        body = self.standard.envelope(partner, document, str(version) if version else None, segments, numbers,
                                      stamp)
        control = f"{numbers.interchange:09d}" if self.standard.name == "x12" else str(numbers.interchange)
        # Names sort in sending order (one number series per partner), so a reader that takes files in name
        # order after a watermark (the directory transport) never skips one.
        filename = f"{partner.name}_{numbers.interchange:09d}_{document}.{self.standard.extension}"
        waits = partner.expect_ack and document != self.standard.ack_document
        if waits:
            # Recorded before sending: a partner fast enough to acknowledge before send() returns must find it.
            self.ledger.await_ack(Awaiting(
                standard=self.standard.name, partner=partner.name, interchange=control, group=str(numbers.group),
                document=document, filename=filename, sent_at=time.time(), attempts=1, body=body.decode("latin-1"),
                detail=f"{document} to {partner.name}, awaiting {self.standard.ack_document}"))
        try:
            receipt = self.transport(partner.name).send(OutboundDocument(
                body=body, filename=filename, content_type=self.standard.content_type,
                message_id=call.idempotency_key, partner=partner.name))
        except DeliveryError:
            if waits:
                self.ledger.forget(partner.name, control)  # not sent: nothing to wait for (a retry records it again)
            raise
        log.info("edi_sent", system=self.system, partner=partner.name, document=document, interchange=control)
        return Outcome(result={"partner": partner.name, "document": document, "interchange": control,
                               "group": str(numbers.group), "message": str(numbers.message), "filename": filename,
                               "transport_reference": receipt.reference},
                       reference=control, detail=receipt.detail)

    def _partner(self, name: Any) -> Partner:
        partner = self.partners.get(str(name)) if name is not None else None
        if partner is None:
            raise PermanentError(f"payload 'partner' {name!r} is not a configured trading partner; known: "
                                 f"{', '.join(sorted(self.partners))}")
        return partner

    # -- inbound ---------------------------------------------------------------------------------------
    def receive(self, body: bytes, partner: str | None = None, reference: str = "", *,
                trigger: str = "received", again: bool = False) -> list[dict[str, Any]]:
        """Every payload in one received document, whatever carried it (see the module docs).

        ``partner`` is the partner the transport knows it came from (None: find it by the sender id);
        ``reference`` identifies the carrier message or file, so reading the same one again is not taken for
        a duplicate interchange. Sends the acknowledgement the partner expects and keeps what it refuses as a
        dead letter (:meth:`Adapter.refuse`, ``trigger`` names the trigger that read it) — unless ``again``: a
        dead letter read again (:meth:`reprocess`) sends no second acknowledgement and records nothing."""
        def rejected(partner: str | None, ic: Interchange | None, reason: str) -> dict[str, Any]:
            payload = self._rejected(partner, ic, reason, body, reference)
            if not again:
                self.refuse(Refused(trigger=trigger, reason=reason, body=body, partner=partner,
                                    document=f"{self.standard.name} interchange", reference=reference,
                                    meta={"scope": "interchange"},
                                    key=f"{partner}:{reference}:{hashlib.sha256(body).hexdigest()}"))
            return payload

        try:
            ic = self.standard.parse(body, self._extra(partner))
        except Unreadable as exc:
            log.warning("edi_unreadable", system=self.system, partner=partner, error=str(exc))
            return [rejected(partner, None, f"unreadable interchange: {exc}")]
        found = self._sender(ic, partner)
        if found is None:
            return [rejected(partner, ic, f"sender {ic.sender!r} (qualifier {ic.sender_qualifier!r}) is not "
                                          "a configured trading partner")]
        if found.extra_segments and partner is None:
            ic = self.standard.parse(body, found.extra_segments)
        if ic.receiver != found.our_id:
            wrong = f"the interchange is addressed to {ic.receiver!r}, not to us ({found.our_id!r})"
            ic.problems.append(Problem(self.standard.wrong_recipient_code, wrong))
        earlier = self.ledger.duplicate_of(found.name, ic.control, body, reference)
        if earlier is not None:
            if not again:
                self._acknowledge(ic, found, body, duplicate=True)
            when = datetime.fromtimestamp(float(earlier.get("at", 0)), UTC).isoformat()
            return [rejected(found.name, ic, f"duplicate interchange {ic.control}: already received {when}; "
                                             "not applied again")]
        if not again:
            self._acknowledge(ic, found, body)
        payloads: list[dict[str, Any]] = []
        if ic.problems:
            return [rejected(found.name, ic, ic.describe())]
        if any(g.ok and m.ok for g in ic.groups for m in g.messages):
            # Only an interchange that was (partly) applied is a duplicate when it comes again; a wholly
            # rejected one is usually resent corrected under the same number.
            self.ledger.remember(found.name, ic.control, body, reference)
        for result in self.standard.reconcile(ic):
            entry = self.ledger.acknowledged(found.name, result.interchange, result.group, result.accepted,
                                             result.detail)
            log.info("edi_ack_received", system=self.system, partner=found.name, accepted=result.accepted,
                     interchange=result.interchange, group=result.group, matched=entry is not None)
        for group in ic.groups:
            for message in group.messages:
                head = self._head(found.name, ic) | {
                    "document": message.code, "control": message.control, "version": message.version,
                    "group": {"control": group.control, "functional_id": group.functional_id,
                              "version": group.version}}
                problems = group.problems + message.problems
                if problems:
                    reason = "; ".join(p.text for p in problems)
                    payloads.append(head | {"status": "rejected", "reason": reason,
                                            "raw": body.decode("latin-1")[:RAW_LIMIT]})
                    if not again:
                        self.refuse(Refused(
                            trigger=trigger, reason=reason, body=body, partner=found.name,
                            document=f"{message.code} {message.control} (interchange {ic.control})",
                            reference=reference,
                            meta={"scope": "message", "group": group.control, "message": message.control},
                            key=f"{found.name}:{reference}:{hashlib.sha256(body).hexdigest()}:{group.control}:"
                                f"{message.control}"))
                    continue
                spec = self.standard.loops.get(message.code, LoopSpec())
                payloads.append(head | {"status": "accepted", "body": segment_tree(message.segments, spec)})
        return payloads

    def _extra(self, partner: str | None) -> Sequence[str]:
        return self.partners[partner].extra_segments if partner in self.partners else ()

    def _sender(self, ic: Interchange, partner: str | None) -> Partner | None:
        if partner is not None:
            known = self.partners.get(partner)
            return known if known is not None and known.id == ic.sender else None
        for candidate in self.partners.values():
            if candidate.id == ic.sender and (not candidate.qualifier_given or not ic.sender_qualifier
                                              or candidate.qualifier == ic.sender_qualifier):
                return candidate
        return None

    def _head(self, partner: str | None, ic: Interchange | None) -> dict[str, Any]:
        head: dict[str, Any] = {"standard": self.standard.name, "partner": partner}
        if ic is not None:
            head["interchange"] = {"control": ic.control, "sender": ic.sender, "receiver": ic.receiver,
                                   "prepared": ic.prepared, "test": ic.test}
        return head

    def _rejected(self, partner: str | None, ic: Interchange | None, reason: str, body: bytes,
                  reference: str) -> dict[str, Any]:
        log.warning("edi_rejected", system=self.system, partner=partner, reason=reason, reference=reference)
        return self._head(partner, ic) | {"document": None, "status": "rejected", "reason": reason,
                                          "reference": reference, "raw": body.decode("latin-1")[:RAW_LIMIT]}

    def _acknowledge(self, ic: Interchange, partner: Partner, body: bytes, duplicate: bool = False) -> None:
        if not partner.acknowledge or self.ledger.ack_sent(partner.name, ic.control, body) and not duplicate:
            return
        if all(m.code == self.standard.ack_document for g in ic.groups for m in g.messages) and ic.groups and \
                not ic.problems:
            return  # acknowledgements are not acknowledged
        if not ic.groups and ic.receipts:
            return  # a TA1 alone is not acknowledged either
        taken: dict[str, int] = {}

        def take(kind: str) -> int:
            taken[kind] = self.ledger.take(partner.name, kind)
            return taken[kind]

        ack = self.standard.acknowledgement(ic, partner, take, datetime.now(UTC), duplicate=duplicate)
        if ack is None:
            return
        name = f"{partner.name}_{taken.get('interchange', 0):09d}_{self.standard.ack_document}" \
               f"{'_dup' if duplicate else ''}.{self.standard.extension}"
        self.transport(partner.name).send(OutboundDocument(
            body=ack, filename=name, content_type=self.standard.content_type,
            message_id=f"ack-{self.system}-{partner.name}-{ic.control}{'-dup' if duplicate else ''}",
            partner=partner.name))
        if not duplicate:
            self.ledger.mark_ack_sent(partner.name, ic.control, body)

    @trigger("received", kind="poll", interval=60.0,
             description="Documents the partners left on pull transports (SFTP, folders); resends unacknowledged")
    def received(self, watermark: str | None) -> PollResult:
        returned, documents = self._unsettled
        if watermark is not None and watermark == returned:
            # The bus stored the watermark the previous poll returned, so its documents are journaled: take them.
            for partner, doc in documents:
                self.transport(partner).settle(doc)
        self._unsettled = (None, [])
        marks: dict[str, Any] = json.loads(watermark) if watermark else {}
        records: list[tuple[str, Any]] = []
        failed: list[str] = []
        fetched: list[tuple[str, InboundDocument]] = []
        for name in self.partners:
            try:
                docs, mark = self.transport(name).fetch(marks.get(name))
            except (OSError, DeliveryError) as exc:  # one partner down must not hold up the others
                log.warning("edi_fetch_failed", system=self.system, partner=name, error=str(exc))
                failed.append(f"{name}: {exc}")
                continue
            for doc in docs:
                for payload in self.receive(doc.body, name, doc.reference):
                    records.append((self._dedup_key(name, doc, payload), payload))
                fetched.append((name, doc))
            if mark is not None:
                marks[name] = mark
        if failed and len(failed) == len(self.partners):
            raise TransientError("cannot read from any partner: " + "; ".join(failed))
        self.resend_unacknowledged()
        new_mark = json.dumps(marks, sort_keys=True) if marks else None
        self._unsettled = (new_mark, fetched)
        return PollResult(records, new_mark)

    @staticmethod
    def _dedup_key(partner: str, doc: InboundDocument, payload: Mapping[str, Any]) -> str:
        ic = payload.get("interchange") or {}
        group = payload.get("group") or {}
        return f"{partner}:{doc.reference}:{ic.get('control', '')}:{group.get('control', '')}:" \
               f"{payload.get('control', '')}:{payload.get('status')}"

    def resend_unacknowledged(self, now: float | None = None) -> list[Awaiting]:
        """Resend interchanges whose acknowledgement is overdue; report those past their last resend."""
        now = time.time() if now is None else now
        resent = []
        for entry in self.ledger.awaiting():
            partner = self.partners.get(entry.partner)
            if partner is None or entry.overdue or now - entry.sent_at < partner.ack_timeout:
                continue
            if entry.attempts > partner.ack_retries:
                entry.overdue = True
                entry.detail = f"{entry.document} to {entry.partner}: no {self.standard.ack_document} after " \
                               f"{entry.attempts} sends"
                self.ledger.update(entry)
                log.error("edi_ack_overdue", system=self.system, partner=entry.partner, interchange=entry.interchange)
                continue
            try:
                self.transport(entry.partner).send(OutboundDocument(
                    body=entry.body.encode("latin-1"), filename=entry.filename, content_type=self.standard.content_type,
                    message_id=f"resend-{entry.interchange}-{entry.attempts}", partner=entry.partner))
            except DeliveryError as exc:
                log.warning("edi_resend_failed", system=self.system, partner=entry.partner, error=str(exc))
                continue
            entry.attempts += 1
            entry.sent_at = now
            entry.detail = f"{entry.document} to {entry.partner}, resent {entry.attempts - 1}x, awaiting " \
                           f"{self.standard.ack_document}"
            self.ledger.update(entry)
            resent.append(entry)
        return resent

    # -- push transports (AS2): see adapters.b2b ---------------------------------------------------------
    @trigger("pushed", kind="webhook", description="Documents a push transport (AS2) received for a partner")
    def pushed(self, request: WebhookRequest) -> list[Any]:
        for name in self.partners:
            transport = self.transport(name)
            if not isinstance(transport, PushTransport):
                continue
            try:
                doc = transport.unwrap(request)
            except WebhookRejected as exc:  # a broken signature, MIC, encryption: the negative MDN goes out
                self.refuse(carrier_refusal(request, name, exc))
                raise
            if doc is None:
                continue
            if not doc.body:  # the carrier recognised a resent message: acknowledged again, applied once
                return []
            return self.receive(doc.body, name, doc.reference, trigger="pushed")
        raise WebhookRejected("no partner with a push transport (AS2) accepts this request", status=403,
                              reason="unknown_partner")

    def reprocess(self, refused: Refused) -> list[Any]:
        """Read a refused document again (``ironbus dlq retry``) with the current partner settings: unwrap it
        again when its carrier refused it (AS2), then parse it; the payloads of the letter's interchange (or
        of its one message) when they pass now, else :class:`PermanentError` with the reason. No
        acknowledgement is sent again."""
        partner = refused.partner if refused.partner in self.partners else None
        body, reference = refused.body, refused.reference
        if refused.meta.get("carrier") is not None:
            if partner is None:
                raise PermanentError(f"partner {refused.partner!r} is not configured any more")
            transport = self.transport(partner)
            if not isinstance(transport, PushTransport):
                raise PermanentError(f"partner {partner!r} no longer uses a push transport (AS2)")
            doc = transport.unwrap(carrier_request(refused))
            if doc is None or not doc.body:
                raise PermanentError("the message is not between this partner and us, or was received since")
            body, reference = doc.body, doc.reference
        payloads = self.receive(body, partner, reference, trigger=refused.trigger, again=True)
        if refused.meta.get("scope") == "message":
            payloads = [p for p in payloads if (p.get("group") or {}).get("control") == refused.meta.get("group")
                        and p.get("control") == refused.meta.get("message")] or payloads[:1]
        bad = [str(p.get("reason")) for p in payloads if p.get("status") == "rejected"]
        if bad:
            raise PermanentError("; ".join(bad))
        return payloads

    def webhook_answer(self, trigger_name: str, request: WebhookRequest | None, status: int, reason: str,
                       detail: str, accepted: Sequence[str]) -> WebhookAnswer | None:
        if trigger_name != "pushed" or request is None:
            return None
        for transport in self._transports.values():
            if not isinstance(transport, PushTransport):
                continue
            try:
                shaped: WebhookAnswer | None = transport.answer(request, status, reason, detail)
            except Exception as exc:  # must not raise: the bus's own answer is the fallback
                log.warning("edi_transport_answer_failed", system=self.system, error=str(exc))
                continue
            if shaped is not None:
                return shaped
        return None
