"""Outbound EDI (operation ``send``): the payload names the ``partner``, the ``document`` (``850``, ``ORDERS`` …)
and its ``segments`` (see :mod:`adapters.edi.segments`); the adapter adds the envelope with control numbers
from the partner's series, sends it over the partner's transport and, when the partner acknowledges,
remembers it as ``awaiting:`` until the 997 / CONTRL arrives — resending it after ``ack_timeout``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import structlog

from adapters.b2b import OutboundDocument
from adapters.base import Call, Outcome, operation
from adapters.edi.ledger import Awaiting
from adapters.edi.segments import flatten_segments
from adapters.edi.standard import Partner
from adapters.edi.system import EdiSystem
from bus.errors import DeliveryError, PermanentError

__all__ = ["EdiOutbound"]

log = structlog.get_logger(__name__)


class EdiOutbound(EdiSystem):
    """Building and sending interchanges, and resending those whose acknowledgement is overdue."""

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
