"""The event payload of one B2B document, as the transport adapters (``as2``, ``sftp``) emit and take it.

This is the seam between a transport and the document adapters (cXML, X12, EDIFACT): a received document simply
becomes the data of a bus event, and a route hands it to a document adapter (or a mapping) as it would any
payload. Nothing in the core knows about it. The shape, for a received document::

    {
      "filename": "po-4711.edi",                 # as the partner named it (AS2 Content-Disposition, SFTP file)
      "content_type": "application/edi-x12",
      "text": "ISA*00*...~",                     # the bytes as UTF-8 text, when they are valid UTF-8 ...
      "base64": "MIAGCSqGSIb3...",               # ... otherwise base64; exactly one of the two is present
      "size": 1234,                              # bytes
      "sha256": "9f86d081...",                   # hex digest of the bytes
      "reference": "<id>",                       # AS2 Message-ID, or remote path @ modification time
      "partner": "SUPPLIER1",                    # the partner's AS2 id / the system's partner name
      "transport": "as2",                        # or "sftp"
      "as2": {"message_id": ..., "from": ..., "to": ..., "subject": ..., "signed": true, "encrypted": true,
              "compressed": false, "mic": "...", "mic_algorithm": "sha256"}     # AS2 only
    }

The ``send`` operations of both adapters take the same keys (``text`` or ``base64``, and optionally ``filename``
and ``content_type``); :func:`document_from_payload` reads them, :func:`payload_body` gives a payload's bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from typing import Any

from adapters.b2b.transport import InboundDocument, OutboundDocument
from bus.errors import PermanentError

__all__ = ["document_from_payload", "document_payload", "payload_body", "safe_filename"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(name: str) -> str:
    """A plain file name (no folders, not hidden) from a partner's or a payload's name."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = _UNSAFE.sub("_", base).lstrip(".")
    return cleaned[:200] or "document"


def document_payload(document: InboundDocument, transport: str, **extra: Any) -> dict[str, Any]:
    """The event payload of one received document (see the module docstring)."""
    body = document.body
    payload: dict[str, Any] = {"filename": document.filename, "content_type": document.content_type}
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and "\x00" not in text:
        payload["text"] = text
    else:
        payload["base64"] = base64.b64encode(body).decode("ascii")
    payload.update({"size": len(body), "sha256": hashlib.sha256(body).hexdigest(), "reference": document.reference,
                    "partner": document.partner, "transport": transport})
    payload.update(extra)
    return payload


def payload_body(payload: Any) -> bytes:
    """The document bytes of a payload: its ``text`` (UTF-8) or its ``base64``."""
    if not isinstance(payload, Mapping):
        raise PermanentError("a document payload must be an object with 'text' or 'base64' (and 'filename')")
    has_text, has_b64 = isinstance(payload.get("text"), str), isinstance(payload.get("base64"), str)
    if has_text == has_b64:
        raise PermanentError("a document payload needs exactly one of 'text' (a string) or 'base64' (a string)")
    if has_text:
        return str(payload["text"]).encode("utf-8")
    try:
        return base64.b64decode(str(payload["base64"]), validate=True)
    except (binascii.Error, ValueError):
        raise PermanentError("payload 'base64' is not valid base64") from None


_EXTENSIONS = {"application/edi-x12": ".x12", "application/edifact": ".edi", "application/xml": ".xml",
               "text/xml": ".xml", "application/json": ".json", "text/csv": ".csv", "text/plain": ".txt"}


def document_from_payload(payload: Any, message_id: str, partner: str = "",
                          default_type: str = "application/octet-stream") -> OutboundDocument:
    """An :class:`OutboundDocument` from a ``send`` payload; ``message_id`` should come from the idempotency key.

    Without a ``filename`` the document is named after ``message_id`` (plus an extension for its type), so a
    retry of one delivery carries the same name and the partner can tell it from a new document.
    """
    body = payload_body(payload)
    content_type = payload.get("content_type", default_type)
    if not isinstance(content_type, str) or "/" not in content_type:
        raise PermanentError(f"payload 'content_type' {str(content_type)[:100]!r} is not a media type")
    name = payload.get("filename")
    if name is None:
        name = safe_filename(message_id) + _EXTENSIONS.get(content_type.split(";")[0].strip().lower(), ".dat")
    if not isinstance(name, str) or not name.strip():
        raise PermanentError("payload 'filename' must be a plain file name such as 'po-4711.edi'")
    if safe_filename(name) != name:
        raise PermanentError(f"payload 'filename' {name[:100]!r} is not a plain file name (letters, digits, "
                             "'.', '_', '-'; no folders; not hidden)")
    return OutboundDocument(body=body, filename=name, content_type=content_type, message_id=message_id,
                            partner=partner)
