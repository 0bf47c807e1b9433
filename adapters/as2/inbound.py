"""Receiving AS2: a message from the partner (decrypt, verify, decompress, MIC, MDN) and an asynchronous MDN.

pyas2lib does the S/MIME work; this module decides what the bus does with the outcome. A message that fails a
check is refused with a 4xx whose reason names the check (``authentication_failed``, ``decryption_failed`` …)
and, when the partner asked for one, a negative MDN saying the same. A message id the partner sent before
(its resend after a lost MDN) is answered with a "duplicate-document" MDN and not emitted again.
"""

from __future__ import annotations

import binascii
import json
import quopri
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyas2lib import Mdn, Message
from pyas2lib.exceptions import DuplicateDocument

from adapters.as2._compat import MAX_DECOMPRESSED
from adapters.as2.profile import As2Profile
from adapters.as2.transport import evaluate_mdn, outbound_state_key, raw_message, store_id
from adapters.b2b.payload import document_payload, safe_filename
from adapters.b2b.transport import InboundDocument
from adapters.base import AdapterStore, WebhookAnswer
from bus.errors import WebhookRejected

__all__ = ["Received", "inbound_state_key", "parse_async_mdn", "receive_message"]

#: pyas2lib disposition modifier -> (HTTP status, fixed reason code)
_REFUSALS: dict[str, tuple[int, str]] = {
    "authentication-failed": (401, "authentication_failed"),
    "decryption-failed": (400, "decryption_failed"),
    "insufficient-message-security": (400, "insufficient_security"),
    "unknown-trading-partner": (403, "unknown_partner"),
    "decompression-failed": (400, "decompression_failed"),
}


def inbound_state_key(partner: str, message_id: str) -> str:
    """Where the store remembers a message id the partner sent us (duplicate detection)."""
    return f"as2:in:{partner}:{store_id(message_id)}"


@dataclass
class Received:
    """The outcome of one inbound message, kept between the webhook handler and the HTTP answer."""

    message_id: str
    payloads: list[dict[str, Any]]
    mdn: Mdn | None
    duplicate: bool = False
    refusal: WebhookRejected | None = None
    raw: bytes = b""
    document: InboundDocument | None = None  # what the message carried, when it was accepted
    created: float = field(default_factory=time.monotonic)

    @property
    def mdn_mode(self) -> str | None:
        return None if self.mdn is None else str(self.mdn.mdn_mode)


def _decode_transfer_encoding(headers: Mapping[str, str], body: bytes) -> tuple[dict[str, str], bytes]:
    """Undo a base64 / quoted-printable transfer encoding of the whole message (OpenSSL and some AS2 products
    send enveloped data base64-encoded). pyas2lib copies the outer headers onto the document it unpacks, so an
    outer ``Content-Transfer-Encoding: base64`` would make it decode the document's own text as base64."""
    out = {k: v for k, v in headers.items() if k.lower() != "content-transfer-encoding"}
    encoding = next((v for k, v in headers.items() if k.lower() == "content-transfer-encoding"), "").strip().lower()
    if encoding == "base64":
        try:
            body = binascii.a2b_base64(body)
        except binascii.Error:
            pass  # left as it is: decryption then fails and says so
    elif encoding == "quoted-printable":
        body = quopri.decodestring(body)
    elif encoding:
        out["Content-Transfer-Encoding"] = encoding
        return out, body
    out["Content-Transfer-Encoding"] = "binary"
    return out, body


def _unquote(name: str) -> str:
    name = name.strip()
    return name[1:-1] if len(name) > 1 and name[0] == name[-1] == '"' else name


def _headers_lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def receive_message(profile: As2Profile, store: AdapterStore, headers: Mapping[str, str], body: bytes,
                    partner_name: str, max_size: int = 64 * 1024 * 1024) -> Received:
    """Parse one inbound AS2 message. Never raises: a refusal is returned in :attr:`Received.refusal`.
    ``max_size`` bounds the decompressed document (a compressed message can be a decompression bomb)."""
    lower = _headers_lower(headers)
    missing = [h for h in ("as2-from", "as2-to", "message-id") if not lower.get(h)]
    if missing:
        refusal = WebhookRejected(f"not an AS2 message: header(s) {', '.join(missing)} missing", status=400,
                                  reason="not_as2")
        return Received("", [], None, refusal=refusal)
    sender, receiver = _unquote(lower["as2-from"]), _unquote(lower["as2-to"])
    if sender != profile.as_to or receiver != profile.as_from:
        # Not this relationship: no MDN, since we could only sign it for a partner we do not know.
        refusal = WebhookRejected(f"AS2 message from {sender[:60]!r} to {receiver[:60]!r}: this endpoint takes "
                                  f"messages from {profile.as_to!r} to {profile.as_from!r} only", status=403,
                                  reason="unknown_partner")
        return Received(lower["message-id"].strip("<> ")[:250], [], None, refusal=refusal,
                        raw=raw_message(headers, body))
    headers, body = _decode_transfer_encoding(headers, body)
    raw = raw_message(headers, body)
    message = Message()

    def find_org_partner(org_id: str, partner_id: str) -> tuple[Any, Any]:
        org = profile.organization if org_id == profile.as_from else None
        partner = profile.partner if partner_id == profile.as_to else None
        return org, partner

    def seen_before(message_id: str, partner_id: str) -> bool:
        return store.get(inbound_state_key(partner_id, message_id)) is not None

    token = MAX_DECOMPRESSED.set(max_size)
    try:
        status, (error, _trace), mdn = message.parse(raw, find_org_partner_cb=find_org_partner,
                                                     find_message_cb=seen_before)
    except Exception as exc:  # pyas2lib failed while building its answer: refuse, without an MDN
        status, error, mdn = "processed/Error", exc, None
    finally:
        MAX_DECOMPRESSED.reset(token)
    message_id = str(message.message_id or lower["message-id"].strip("<> "))
    if isinstance(error, DuplicateDocument):
        return Received(message_id, [], mdn, duplicate=True)
    if error is not None or str(status).lower() != "processed":
        modifier = str(getattr(error, "disposition_modifier", "") or "unexpected-processing-error")
        http, reason = _REFUSALS.get(modifier, (400, "unprocessable"))
        what = f"{type(error).__name__}: {str(error)[:200]}" if error is not None else str(status)
        refusal = WebhookRejected(f"AS2 message {message_id[:120]} from {lower['as2-from'][:60]} refused "
                                  f"({modifier}): {what}", status=http, reason=reason)
        return Received(message_id, [], mdn, refusal=refusal, raw=raw)
    payload = message.payload
    filename = payload.get_filename() if payload is not None else None
    content = message.content
    body_bytes = content if isinstance(content, bytes) else str(content).encode("utf-8")
    document = InboundDocument(
        body=body_bytes, filename=safe_filename(filename or f"{message_id}.dat"), reference=message_id,
        content_type=payload.get_content_type() if payload is not None else "application/octet-stream",
        partner=partner_name)
    as2 = {"message_id": message_id, "from": profile.as_to, "to": profile.as_from,
           "subject": lower.get("subject", ""), "signed": bool(message.signed), "encrypted": bool(message.encrypted),
           "compressed": bool(message.compressed), "mic": message.mic.decode() if message.mic else None,
           "mic_algorithm": message.digest_alg, "mdn": mdn.mdn_mode if mdn is not None else None}
    return Received(message_id, [document_payload(document, "as2", as2=as2)], mdn, document=document)


def parse_async_mdn(profile: As2Profile, store: AdapterStore, headers: Mapping[str, str], body: bytes,
                    message_factory: Callable[[], Message]) -> dict[str, Any]:
    """Verify an asynchronous MDN for a message we sent, record its disposition, and give the event payload.

    Raises :class:`~bus.errors.WebhookRejected` when it is no MDN, answers no message of ours, or fails
    verification; a genuine *negative* MDN is accepted and reported (``delivered: false``)."""
    raw = raw_message(headers, body)
    found: dict[str, Any] = {}

    def find_original(original_id: str, recipient: str | None) -> Message | None:
        state = _state(store.get(outbound_state_key(original_id)))
        if not state:
            return None
        message = message_factory()
        message.message_id = original_id
        message.mic = state["mic"].encode() if state.get("mic") else None
        found.update(state)
        return message

    mdn = Mdn()
    status, detail = mdn.parse(raw, find_original)
    if detail == "mdn-not-found":
        raise WebhookRejected("not an AS2 MDN (expected multipart/report, possibly signed)", status=400,
                              reason="not_an_mdn")
    if detail == "original-message-not-found":
        raise WebhookRejected(f"MDN for unknown message {str(mdn.orig_message_id)[:120]!r}", status=400,
                              reason="unknown_message")
    if detail and (detail.startswith("Failed to parse received MDN") or detail.startswith("Expected signed MDN")):
        raise WebhookRejected(f"MDN for {str(mdn.orig_message_id)[:120]} failed verification: {detail[:200]}",
                              status=401, reason="authentication_failed")
    delivered, explanation = evaluate_mdn(status, detail)
    original = str(mdn.orig_message_id)
    store.put(outbound_state_key(original), json.dumps({**found, "status": "processed" if delivered else "failed",
                                                        "disposition": status, "detail": detail,
                                                        "mdn_message_id": mdn.message_id, "received": time.time()}))
    return {"message_id": original, "delivered": delivered, "disposition": status, "detail": explanation,
            "mdn_message_id": mdn.message_id, "partner": profile.as_to, "filename": found.get("filename"),
            "transport": "as2"}


def _state(value: str | None) -> dict[str, Any]:
    if not value:
        return {}
    try:
        state = json.loads(value)
    except ValueError:
        return {}
    return state if isinstance(state, dict) else {}


_MDN_HEADERS_SKIPPED = {"content-type", "mime-version"}


def mdn_to_answer(mdn: Mdn, status: int) -> WebhookAnswer:
    """A synchronous MDN as the HTTP answer to the message it acknowledges."""
    headers = {k: str(v) for k, v in mdn.headers.items() if k.lower() not in _MDN_HEADERS_SKIPPED}
    body = mdn.content if isinstance(mdn.content, bytes) else str(mdn.content).encode()
    content_type = str(mdn.headers.get("Content-Type") or mdn.payload.get("Content-Type"))
    return WebhookAnswer(status, body, " ".join(content_type.split()), headers)


def answer_received(received: Received, status: int, store: AdapterStore, partner_as2: str,
                    accepted: Sequence[str]) -> tuple[WebhookAnswer | None, bool]:
    """The HTTP answer to one received message once the bus decided (``status``), and whether an asynchronous
    MDN is owed instead. Remembers the message id once its documents are journaled, so a resend is a duplicate.

    Not stored (5xx) or refused by the bus after the message itself was fine: no MDN, so the partner resends.
    """
    if status >= 500 or (status >= 400 and received.refusal is None):
        return None, False
    if status < 300 and received.message_id and not received.duplicate:
        store.put(inbound_state_key(partner_as2, received.message_id),
                  json.dumps({"at": time.time(), "events": list(accepted)}))
    mdn = received.mdn
    if mdn is None:  # the partner asked for no MDN (or a refusal has none): the bus's JSON says why
        return (None if status >= 400 else WebhookAnswer(200, b"", "text/plain")), False
    if mdn.mdn_mode == "ASYNC" and status < 300:
        return WebhookAnswer(200, b"", "text/plain"), True
    return mdn_to_answer(mdn, status if status >= 400 else 200), False
