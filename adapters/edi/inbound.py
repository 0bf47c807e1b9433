"""Inbound EDI: every received document, whatever carried it, goes through :meth:`EdiInbound.receive` — the poll
trigger ``received`` (a pull transport's ``fetch``, see :mod:`adapters.edi.adapter`) and the webhook trigger
``pushed`` (a push transport such as AS2, see :mod:`adapters.b2b`). One payload per transaction set / message
comes out, with its segments as a tree under ``body``; a document that fails the syntax checks comes out as
``status: rejected`` with the reason (route those to an operator) and gets a negative acknowledgement; a
duplicate interchange is never applied twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import structlog

from adapters.b2b import OutboundDocument, PushTransport, carrier_refusal, carrier_request
from adapters.base import Refused, WebhookAnswer, WebhookRequest, trigger
from adapters.edi.model import Interchange, Problem, Unreadable
from adapters.edi.segments import LoopSpec, segment_tree
from adapters.edi.standard import Partner
from adapters.edi.system import EdiSystem
from bus.errors import PermanentError, WebhookRejected

__all__ = ["EdiInbound"]

log = structlog.get_logger(__name__)

RAW_LIMIT = 65536  # characters of a rejected document kept in its payload (the rest is in the partner's copy)


class EdiInbound(EdiSystem):
    """Parsing received interchanges, acknowledging them, reconciling acknowledgements, refusing bad documents."""

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
