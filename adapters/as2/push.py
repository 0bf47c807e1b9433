"""AS2 as a push transport of the document adapters (``transport: {kind: as2, …}`` on an x12/edifact partner).

Outbound it is :class:`~adapters.as2.transport.As2Transport`. Inbound, the partner posts its AS2 messages to
the document adapter's webhook trigger ``pushed``; the adapter offers each request to its partners' transports
(:class:`adapters.b2b.PushTransport`): :meth:`As2PushTransport.unwrap` takes the messages between this partner
and us (others: None), verifies, decrypts, decompresses and checks the MIC with the same code as the ``as2``
adapter, and :meth:`answer` gives the synchronous MDN once the bus has decided. A partner that asks for an
asynchronous MDN over this seam gets none (the document adapter keeps no outbox of MDNs): configure it for
synchronous MDNs, or receive through the ``as2`` adapter.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import structlog

from adapters.as2.inbound import Received, answer_received, receive_message
from adapters.as2.transport import As2Transport
from adapters.b2b.transport import InboundDocument
from adapters.base import WebhookAnswer, WebhookRequest

__all__ = ["As2PushTransport"]

log = structlog.get_logger(__name__)

_MAX_SIZE = 64 * 1024 * 1024


def _unquote(name: str) -> str:
    name = name.strip()
    return name[1:-1] if len(name) > 1 and name[0] == name[-1] == '"' else name


class As2PushTransport(As2Transport):
    """An AS2 partner of a document adapter: sends as :class:`As2Transport`, receives through ``pushed``."""

    def __init__(self, settings: Mapping[str, Any], **kwargs: Any) -> None:
        super().__init__(settings, **kwargs)
        self._received: OrderedDict[int, tuple[WebhookRequest, Received]] = OrderedDict()
        self._lock = threading.Lock()

    def unwrap(self, request: WebhookRequest) -> InboundDocument | None:
        """The document of an AS2 message from this partner to us; None when the message is not between us.

        Raises :class:`~bus.errors.WebhookRejected` for a message that fails (signature, decryption, MIC). A
        duplicate message gives an empty document: acknowledged again, applied once.
        """
        headers = {k.lower(): v for k, v in request.headers.items()}
        if _unquote(headers.get("as2-from", "")) != self.profile.as_to \
                or _unquote(headers.get("as2-to", "")) != self.profile.as_from:
            return None
        received = receive_message(self.profile, self.store, request.headers, request.body, self.profile.as_to,
                                   _MAX_SIZE)
        with self._lock:
            self._received[id(request)] = (request, received)
            while len(self._received) > 256:  # answers never asked for (a crashed request) must not pile up
                self._received.popitem(last=False)
        if received.refusal is not None:
            raise received.refusal
        if received.duplicate or received.document is None:
            return InboundDocument(body=b"", filename="", reference=received.message_id, partner=self.profile.as_to)
        return received.document

    def answer(self, request: WebhookRequest, status: int, reason: str, detail: str) -> WebhookAnswer | None:
        """The synchronous MDN for ``request`` given the bus's decision; None when it was not this partner's."""
        with self._lock:
            entry = self._received.pop(id(request), None)
        if entry is None or entry[0] is not request:
            return None
        answer, owe = answer_received(entry[1], status, self.store, self.profile.as_to, [])
        if owe:
            log.warning("as2 asynchronous mdn asked for over a document adapter's pushed trigger; none is sent "
                        "(configure the partner for synchronous MDNs)", partner=self.profile.as_to,
                        message_id=entry[1].message_id)
        return answer
