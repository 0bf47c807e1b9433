"""Sending documents over AS2 (RFC 4130) with pyas2lib: sign, compress, encrypt, POST, and check the MDN.

* **Message-ID** is derived from :attr:`OutboundDocument.message_id` (the bus's idempotency key), so every retry
  of one delivery is the same AS2 message; a partner that already has it answers "duplicate-document", which
  counts as delivered.
* **Synchronous MDN:** the answer on the same connection is verified (signature, when asked for) and its
  ``Received-Content-MIC`` compared with the MIC we computed. A positive MDN is a :class:`Receipt`; a negative
  MDN, a wrong MIC or an MDN that fails verification is a :class:`~bus.errors.PermanentError` (dead letter).
* **Asynchronous MDN:** the partner answers 2xx at once and posts the MDN later to ``mdn_url`` (the ``as2``
  adapter's ``mdn`` webhook); the MIC is kept in the :class:`~adapters.base.AdapterStore` until it arrives.
* A network failure, a timeout, 408/429 or 5xx is a :class:`~bus.errors.TransientError`; any other refusal is
  permanent. Inbound AS2 arrives through the webhook edge (the ``as2`` adapter), so :meth:`fetch` finds nothing.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

import httpx
import structlog
from pyas2lib import Mdn, Message
from pyas2lib.exceptions import AS2Exception, ImproperlyConfigured

from adapters.as2.profile import KEYS_REQUIRED, SETTINGS_PROPERTIES, As2Profile, load_profile, message_id_for
from adapters.b2b.transport import InboundDocument, OutboundDocument, Receipt
from adapters.base import AdapterStore, MemoryAdapterStore
from bus.errors import PermanentError, TransientError

__all__ = ["As2Transport", "evaluate_mdn", "outbound_state_key", "store_id"]

log = structlog.get_logger(__name__)

_MDN_TYPES = ("multipart/report", "multipart/signed")


def store_id(message_id: str) -> str:
    """A Message-ID as part of a store name: as it is, or its digest when it is long (a partner's ids can be up
    to 998 characters, more than a database index takes)."""
    return message_id if len(message_id) <= 200 else "sha256-" + hashlib.sha256(message_id.encode()).hexdigest()


def outbound_state_key(message_id: str) -> str:
    """Where the store keeps what we know of one sent message (its MIC, the MDN's disposition)."""
    return f"as2:out:{store_id(message_id)}"


def raw_message(headers: Mapping[str, str] | Sequence[tuple[str, str]], body: bytes) -> bytes:
    """Headers and body as one MIME document, the form pyas2lib parses."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    head = "".join(f"{k}: {v}\r\n" for k, v in items if k.lower() not in ("content-length", "transfer-encoding"))
    return head.encode("utf-8", "replace") + b"\r\n" + body


def evaluate_mdn(status: str | None, detail: str | None) -> tuple[bool, str]:
    """``(delivered, explanation)`` from the disposition pyas2lib read out of an MDN."""
    text = (status or "").strip()
    lower, why = text.lower(), (detail or "").strip()
    if lower == "processed":
        return True, "processed"
    if lower.startswith("processed/warning") and "duplicate" in why.lower():
        return True, "the partner already had this message (duplicate-document)"
    if why.startswith(("Failed to parse received MDN", "Expected signed MDN")):
        return False, f"the partner's MDN could not be verified ({why[:200]}); the message may or may not " \
                      "have arrived"
    if "integrity check failed" in why.lower():
        return False, "the MIC in the partner's MDN does not match the message we sent (integrity check failed)"
    return False, f"negative MDN: {text or 'no disposition'}{': ' + why if why else ''}"


def _survives_as_text(body: bytes) -> bool:
    """Whether MIME text encoding leaves ``body`` as it is: UTF-8, no NUL, every line break a CRLF."""
    if b"\x00" in body or body.count(b"\r") != body.count(b"\r\n") or body.count(b"\n") != body.count(b"\r\n"):
        return False
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return not body.endswith(b"\r\n")  # the MIME generator may add or drop a final line break


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


class As2Transport:
    """One AS2 partner: :meth:`send` builds, posts and checks; :meth:`fetch` is empty (AS2 pushes to us)."""

    settings_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["kind", "url", "as_from", "as_to"],
        "properties": {"kind": {"const": "as2"}, **SETTINGS_PROPERTIES},
        **KEYS_REQUIRED,
    }

    def __init__(self, settings: Mapping[str, Any], *, store: AdapterStore | None = None,
                 client: httpx.Client | None = None) -> None:
        self.profile: As2Profile = load_profile(settings)
        #: Durable state (MICs awaiting an asynchronous MDN); the ``as2`` adapter hands it its journal store,
        #: and a document adapter using this transport should do the same (``transport.store = self.store``).
        self.store: AdapterStore = store or MemoryAdapterStore()
        self._client = client
        self._own_client = client is None

    @property
    def label(self) -> str:
        return f"AS2 {self.profile.as_from} -> {self.profile.as_to}"

    def open(self) -> None:
        if self._client is None:
            self._client = httpx.Client(timeout=self.profile.timeout, verify=self.profile.verify_tls,
                                        follow_redirects=False, auth=self.profile.http_auth)
            self._own_client = True

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._own_client:
            client.close()

    # -- outbound -------------------------------------------------------------------------------------------
    def build(self, document: OutboundDocument) -> Message:
        """The signed / compressed / encrypted AS2 message of a document (not sent)."""
        profile = self.profile
        left, _ = message_id_for(document.message_id, profile.domain)
        message = Message(sender=profile.organization, receiver=profile.partner)
        content_type = document.content_type
        if not _survives_as_text(document.body):
            # pyas2lib sends every type but octet-stream as MIME text, which rewrites line ends to CRLF: a
            # document with bare LF line ends (common in X12) or binary bytes goes as binary so it arrives exact.
            content_type = "application/octet-stream"
        message.build(document.body, filename=document.filename, subject=profile.subject,
                      content_type=content_type, message_id=left, disposition_notification_to=profile.as_from)
        return message

    def send(self, document: OutboundDocument) -> Receipt:
        profile = self.profile
        if not profile.url:
            raise PermanentError(f"{self.label}: 'url' is not set, so there is nowhere to send to")
        _, message_id = message_id_for(document.message_id, profile.domain)
        state_key = outbound_state_key(message_id)
        known = _load_state(self.store.get(state_key))
        if known.get("status") == "processed":
            # The partner acknowledged this very message before (an asynchronous MDN after a lost answer).
            return Receipt(reference=message_id, detail="already acknowledged", acknowledgement=known)
        try:
            message = self.build(document)
        except (AS2Exception, ImproperlyConfigured, ValueError) as exc:
            raise PermanentError(f"{self.label}: cannot build the AS2 message for {document.filename}: "
                                 f"{type(exc).__name__}: {str(exc)[:200]}") from None
        mic = message.mic.decode() if message.mic else None
        headers = {k: str(v) for k, v in message.headers.items()}
        body: bytes = message.content
        if profile.mdn == "async":
            # Stored before sending: the MDN may arrive before this call returns.
            self.store.put(state_key, json.dumps({"status": "pending", "mic": mic, "digest": message.digest_alg,
                                                  "sent": time.time(), "filename": document.filename}))
        if self._client is None:
            self.open()
        assert self._client is not None
        try:
            response = self._client.post(profile.url, content=body, headers=headers)
        except httpx.TimeoutException:
            raise TransientError(f"{self.label}: no answer from {profile.url} within {profile.timeout:g}s") from None
        except httpx.HTTPError as exc:
            if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "certificate verify failed" in str(exc):
                # Retrying will not make the certificate trusted: fix tls_ca / the partner's certificate, replay.
                raise PermanentError(f"{self.label}: the HTTPS certificate of {profile.url} is not trusted "
                                     "(set tls_ca to the partner's CA)") from None
            raise TransientError(f"{self.label}: cannot reach {profile.url}: {type(exc).__name__}: "
                                 f"{str(exc)[:200]}") from None
        try:
            return self._answer(response, message, message_id, mic)
        except PermanentError:
            if profile.mdn == "async":
                self.store.put(state_key, None)  # refused: no MDN will come for it
            raise

    def _answer(self, response: httpx.Response, message: Message, message_id: str, mic: str | None) -> Receipt:
        status = response.status_code
        if status in (408, 425, 429) or status >= 500:
            raise TransientError(f"{self.label}: partner answered HTTP {status}", retry_after=_retry_after(response))
        if status in (401, 403) and not response.headers.get("content-type", "").startswith(_MDN_TYPES):
            raise PermanentError(f"{self.label}: partner refused our HTTP login (HTTP {status}); check http_auth")
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        has_mdn = content_type in _MDN_TYPES
        if self.profile.mdn != "sync" or not has_mdn:
            if status >= 400:
                raise PermanentError(f"{self.label}: partner refused the message: HTTP {status} "
                                     f"{response.text[:200]!r}")
            if self.profile.mdn == "sync":
                raise PermanentError(f"{self.label}: partner answered HTTP {status} without the synchronous MDN "
                                     "we asked for (check its MDN settings for us)")
            detail = "awaiting asynchronous MDN" if self.profile.mdn == "async" else "sent (no MDN asked for)"
            log.info("as2 message sent", partner=self.profile.as_to, message_id=message_id, http=status,
                     mdn=self.profile.mdn)
            return Receipt(reference=message_id, detail=detail,
                           acknowledgement={"status": "pending" if self.profile.mdn == "async" else "none",
                                            "mic": mic, "message_id": message_id})
        mdn = Mdn()
        disposition, why = mdn.parse(raw_message(response.headers.multi_items(), response.content),
                                     lambda original_id, recipient: message)
        delivered, explanation = evaluate_mdn(disposition, why)
        acknowledgement = {"status": disposition, "detail": why, "mic": mic, "message_id": message_id,
                           "mdn_message_id": mdn.message_id, "original_message_id": mdn.orig_message_id}
        if mdn.orig_message_id and mdn.orig_message_id != message_id:
            raise PermanentError(f"{self.label}: the MDN answers message {mdn.orig_message_id!r}, not {message_id!r}")
        if not delivered:
            log.warning("as2 negative mdn", partner=self.profile.as_to, message_id=message_id, disposition=disposition,
                        detail=why)
            raise PermanentError(f"{self.label}: message {message_id}: {explanation}")
        log.info("as2 message delivered", partner=self.profile.as_to, message_id=message_id, mdn=mdn.message_id)
        return Receipt(reference=message_id, detail=explanation, acknowledgement=acknowledgement)

    # -- inbound (pushed to the as2 adapter's webhook) --------------------------------------------------------
    def fetch(self, watermark: str | None) -> tuple[Sequence[InboundDocument], str | None]:
        return [], watermark

    def settle(self, document: InboundDocument) -> None:
        return None


def _load_state(value: str | None) -> dict[str, Any]:
    if not value:
        return {}
    try:
        state = json.loads(value)
    except ValueError:
        return {}
    return state if isinstance(state, dict) else {}
