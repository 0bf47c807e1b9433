"""What the B2B document adapters share: the transport contract (AS2, SFTP, a local folder).

**The receive seam.** Every document a partner sends — whatever carried it — goes through one function of the
document adapter: ``EdiAdapter.receive(body: bytes, partner: str | None, reference: str) -> list[payload]``
(:mod:`adapters.edi.inbound`, used by the ``x12`` and ``edifact`` adapters). ``partner`` is the partner name
from the adapter's settings when the carrier knows it (None: found from the interchange's sender id);
``reference`` names the carrier message or file (an AS2 Message-ID, a remote path), so that reading the *same*
message again after a crash is not refused as a duplicate interchange. ``receive`` parses, checks, sends the
997/CONTRL back through the partner's own transport (``send``), and returns one payload per transaction set.

* **Pull transports** (SFTP, folders): the adapter's poll trigger ``received`` calls ``fetch`` with the stored
  watermark, hands each :class:`InboundDocument` to ``receive``, and calls ``settle`` only once the bus has
  stored the watermark that poll returned (the documents are then journaled).
* **Push transports** (AS2): the adapter's webhook trigger ``pushed`` (``POST /hooks/<system>/pushed``) offers
  the HTTP request to each partner's transport that has ``unwrap(request: WebhookRequest) -> InboundDocument |
  None``: the transport verifies and unpacks it (signature, decryption, decompression, MIC) and returns the
  payload document, returns None when the request is not for its partner, or raises
  :class:`~bus.errors.WebhookRejected` (4xx) for a bad signature. The adapter's ``webhook_answer`` then asks
  the transports' ``answer(request, status, reason, detail) -> WebhookAnswer | None`` for the protocol's
  answer — the synchronous MDN — with the bus's decision (202 stored, 4xx refused, 503 could not store: a
  negative or no MDN so the partner resends). ``answer`` must not block on I/O. An asynchronous MDN is the
  transport's own business (it knows the URL); the EDI acknowledgement travels as a document via ``send``.

``OutboundDocument.message_id`` is the bus's idempotency key of the delivery (stable across retries), or
``ack-…`` / ``resend-…`` for the acknowledgements and resends the adapter itself sends.
"""

from adapters.b2b.refusals import carrier_refusal, carrier_request
from adapters.b2b.transport import (
    KINDS,
    DirectoryTransport,
    InboundDocument,
    OutboundDocument,
    PushTransport,
    Receipt,
    Transport,
    open_transport,
    transport_schema,
)

__all__ = [
    "KINDS",
    "DirectoryTransport",
    "InboundDocument",
    "OutboundDocument",
    "PushTransport",
    "Receipt",
    "Transport",
    "carrier_refusal",
    "carrier_request",
    "open_transport",
    "transport_schema",
]
