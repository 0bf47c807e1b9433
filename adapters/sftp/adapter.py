"""The ``sftp`` adapter: upload documents to a partner's SFTP server and poll the partner's outbox.

Operation ``send`` takes a document payload (``filename``, ``content_type``, ``text`` or ``base64``; see
:mod:`adapters.b2b.payload`) and uploads it atomically. Poll trigger ``received`` emits one event per document
the partner left in ``inbox``, in the same payload shape, and moves each into ``processed`` on the poll after
the one that read it, i.e. once the bus has stored the watermark, which it does only after the events were
journaled: a crash in between reads the file again (same dedup key, same event id) rather than losing it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import structlog

from adapters.b2b.payload import document_from_payload, document_payload
from adapters.base import Adapter, Call, Health, Outcome, PollResult, operation, trigger
from adapters.sftp.transport import SETTINGS_PROPERTIES, SftpTransport
from bus.errors import DeliveryError

__all__ = ["SftpAdapter"]

log = structlog.get_logger(__name__)


class SftpAdapter(Adapter):
    """One trading partner's SFTP server: atomic uploads, and an outbox polled with persisted watermarks."""

    name: ClassVar[str] = "sftp"
    summary: ClassVar[str] = "B2B documents over SFTP: atomic upload, outbox poll with download-then-move"
    settings_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["host", "user", "host_key"],
        "anyOf": [{"required": ["password"]}, {"required": ["key"]}],
        "properties": {
            **SETTINGS_PROPERTIES,
            "partner": {"type": "string", "description": "The partner's name in payloads (default: the system)."},
            "triggers": {"type": "object", "description": "Poll timing: {received: {interval: '60s'}} or a cron "
                                                          "schedule: {received: {schedule: '*/5 * * * *'}}."},
        },
    }

    def __init__(self, system: str, settings: Mapping[str, Any]) -> None:
        super().__init__(system, settings)
        self.partner = str(self.settings.get("partner") or system)
        transport_settings = {k: v for k, v in self.settings.items() if k in SETTINGS_PROPERTIES}
        self.transport = SftpTransport({"kind": "sftp", **transport_settings})

    def open(self) -> None:
        self.transport.open()

    def close(self) -> None:
        if not self.closed:
            self.transport.close()
        super().close()

    def health(self) -> Health:
        try:
            return Health(True, self.transport.health_check())
        except DeliveryError as exc:
            return Health(False, str(exc))
        except Exception as exc:  # health() must never raise
            return Health(False, f"{type(exc).__name__}: {exc}")

    @operation("send", description="Upload a document {filename, content_type, text | base64} to the outbox")
    def send(self, call: Call) -> Outcome:
        document = document_from_payload(call.payload, call.idempotency_key, self.partner)
        receipt = self.transport.send(document)
        return Outcome(result={"path": receipt.reference, "filename": document.filename, "size": len(document.body),
                               "detail": receipt.detail, "idempotency_key": call.idempotency_key},
                       reference=receipt.reference, detail=receipt.detail)

    @trigger("received", kind="poll", interval=60.0, description="Documents the partner left in the inbox")
    def received(self, watermark: str | None) -> PollResult:
        # What the previous poll emitted is journaled now (the bus stored its watermark): move it aside first.
        self.transport.settle_references(watermark)
        documents, mark = self.transport.fetch(None)
        records = [(doc.reference, document_payload(doc, "sftp", partner=self.partner)) for doc in documents]
        if records:
            log.info("sftp documents fetched", system=self.system, documents=len(records))
        return PollResult(records, mark)
