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

import json
from collections.abc import Mapping
from typing import Any

import structlog

from adapters.b2b import InboundDocument
from adapters.base import PollResult, trigger
from adapters.edi.inbound import EdiInbound
from adapters.edi.outbound import EdiOutbound
from bus.errors import DeliveryError, TransientError

__all__ = ["EdiAdapter"]

log = structlog.get_logger(__name__)


# The parts live in adapters.edi.system (partners, transports, ledger), adapters.edi.outbound (send, resend)
# and adapters.edi.inbound (receive, acknowledge, push); the poll below drives both directions.
class EdiAdapter(EdiInbound, EdiOutbound):
    """Base of the ``x12`` and ``edifact`` adapters; a subclass sets ``standard`` and ``partner_options``."""

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
