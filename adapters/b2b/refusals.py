"""A message its carrier refused (AS2: a broken signature or MIC, a decryption failure), kept as a dead letter.

:func:`carrier_refusal` turns the refused HTTP request into a :class:`~adapters.base.Refused` holding the body as
received (still encrypted and signed, so it can be verified again) and only the headers S/MIME and AS2 need —
never ``Authorization`` or cookies. :func:`carrier_request` rebuilds the request from it, for a re-read after the
partner's certificate or our key was fixed (``ironbus dlq retry``).
"""

from __future__ import annotations

from adapters.base import Refused, WebhookRequest
from bus.errors import WebhookRejected

__all__ = ["carrier_refusal", "carrier_request"]

#: Headers kept with a refused message: what unwrapping it again needs, nothing that authenticates a client.
_KEPT = ("as2-from", "as2-to", "as2-version", "message-id", "content-type", "content-transfer-encoding",
         "content-disposition", "mime-version", "subject", "from", "date", "disposition-notification-to",
         "disposition-notification-options", "receipt-delivery-option", "ediint-features")


def carrier_refusal(request: WebhookRequest, partner: str | None, refusal: WebhookRejected,
                    trigger: str = "pushed") -> Refused:
    """The refused message as a :class:`Refused` of ``trigger`` (``reason`` is the refusal's text and code)."""
    headers = {k.lower(): v for k, v in request.headers.items() if k.lower() in _KEPT}
    message_id = headers.get("message-id", "")
    return Refused(trigger=trigger, reason=f"{refusal} ({refusal.reason})", body=request.body, partner=partner,
                   document="AS2 message", reference=message_id,
                   meta={"carrier": "as2", "headers": headers, "status": refusal.status},
                   key=f"as2:{message_id}:{refusal.reason}")


def carrier_request(refused: Refused) -> WebhookRequest:
    """The request a :func:`carrier_refusal` was made from (its kept headers and body)."""
    headers = refused.meta.get("headers")
    return WebhookRequest(method="POST", url="", body=refused.body,
                          headers={str(k): str(v) for k, v in (headers or {}).items()})
