"""Shared pieces of the EDI tests: trading partners on folders, and a push transport that stands in for AS2 at the
adapter seam (``unwrap`` / ``answer``, see adapters.b2b)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from adapters.b2b import InboundDocument, OutboundDocument, Receipt, Transport
from adapters.base import WebhookAnswer, WebhookRequest
from bus.errors import WebhookRejected

PUSH_KEY = b"push-test-key"


class RecordingTransport:
    """Wraps a real transport and keeps what went through ``send`` (to observe message ids)."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.sent: list[OutboundDocument] = []

    def open(self) -> None:
        self.inner.open()

    def close(self) -> None:
        self.inner.close()

    def send(self, document: OutboundDocument) -> Receipt:
        self.sent.append(document)
        return self.inner.send(document)

    def fetch(self, watermark: str | None) -> tuple[Sequence[InboundDocument], str | None]:
        return self.inner.fetch(watermark)

    def settle(self, document: InboundDocument) -> None:
        self.inner.settle(document)

    # The push seam an AS2 transport implements: take the carrier request apart, shape the protocol answer.
    def unwrap(self, request: WebhookRequest) -> InboundDocument | None:
        if request.headers.get("x-partner-transport") != "push-test":
            return None
        given = request.headers.get("x-signature", "")
        want = hmac.new(PUSH_KEY, request.body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(given, want):
            raise WebhookRejected("the carrier signature does not match", status=401, reason="bad_signature")
        return InboundDocument(body=request.body, filename="pushed", reference=request.headers.get("message-id", ""))

    def answer(self, request: WebhookRequest, status: int, reason: str, detail: str) -> WebhookAnswer | None:
        return WebhookAnswer(status=200 if status < 300 else status, body=f"receipt {status} {reason}".encode(),
                             content_type="text/plain")


def push_request(body: bytes, message_id: str = "<m-1@partner>", *, forged: bool = False) -> WebhookRequest:
    signature = hmac.new(PUSH_KEY, body, hashlib.sha256).hexdigest()
    return WebhookRequest(method="POST", url="http://127.0.0.1/hooks/edi/pushed",
                          headers={"x-partner-transport": "push-test", "message-id": message_id,
                                   "x-signature": "0" * 64 if forged else signature}, body=body)


def folders(tmp_path: Path, name: str) -> dict[str, Any]:
    """A directory transport block: what we send lands in <name>/out, the partner leaves files in <name>/in."""
    return {"kind": "directory", "outbox": str(tmp_path / name / "out"), "inbox": str(tmp_path / name / "in")}


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []


def segments_of(body: bytes, terminator: str, separator: str) -> list[list[str]]:
    return [s.strip().split(separator) for s in body.decode("latin-1").split(terminator) if s.strip()]


def record(adapter: Any, partner: str) -> RecordingTransport:
    """Put a recording wrapper around the partner's (opened) transport."""
    inner = adapter.transport(partner)
    recorder = RecordingTransport(inner)
    adapter._transports[partner] = recorder
    return recorder


def as_mapping(value: Any) -> Mapping[str, Any]:
    assert isinstance(value, Mapping), value
    return value
