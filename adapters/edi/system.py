"""What sending and receiving EDI share: a system's trading partners (from its settings), the transport to each
(opened once, shared by workers, the poll and webhook threads) and the ledger of control numbers and
interchanges awaiting acknowledgement. :class:`EdiSystem` is the base of :mod:`adapters.edi.outbound` and
:mod:`adapters.edi.inbound`, which :class:`~adapters.edi.adapter.EdiAdapter` combines.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, ClassVar

import structlog

from adapters.b2b import InboundDocument, Transport, open_transport
from adapters.base import Adapter, Health
from adapters.edi.ledger import Ledger
from adapters.edi.settings import partner_schema
from adapters.edi.standard import Partner, Standard
from bus.errors import ConfigError, DeliveryError, TransientError

__all__ = ["EdiSystem"]

log = structlog.get_logger(__name__)


class EdiSystem(Adapter):
    """One EDI system's partners, their transports and its ledger, with the lifecycle that opens and closes them."""

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
