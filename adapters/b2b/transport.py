"""How a B2B document travels to and from a trading partner, whatever the document is.

The document adapters (cXML, EDI X12, EDIFACT) build and parse documents; a *transport* carries their bytes.
A partner's ``transport:`` settings block names its ``kind`` and the kind's own settings, so any document type
travels over any transport:

.. code-block:: yaml

    transport: {kind: as2, url: "https://partner.example/as2", as_from: ACME, as_to: SUPPLIER1, ...}
    transport: {kind: sftp, host: 127.0.0.1, port: 2222, user: acme, outbox: /out, inbox: /in, ...}
    transport: {kind: directory, outbox: var/b2b/out, inbox: var/b2b/in}

``send`` carries one document out and raises :class:`~bus.errors.TransientError` (network, 5xx, a server that
is down) or :class:`~bus.errors.PermanentError` (refused, a negative MDN); ``fetch`` lists documents waiting
in the partner's outbox after a watermark, and ``settle`` marks one as taken once the bus journaled it, so a
crash between the two re-reads it rather than loses it. Kinds are loaded lazily by name, so a transport whose
library is not installed costs nothing until a system uses it.
"""

from __future__ import annotations

import importlib
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from adapters.base import AdapterStore, WebhookAnswer, WebhookRequest
from bus.errors import ConfigError, PermanentError, TransientError

__all__ = [
    "KINDS",
    "DirectoryTransport",
    "InboundDocument",
    "OutboundDocument",
    "PushTransport",
    "Receipt",
    "Transport",
    "open_transport",
    "transport_schema",
]


@dataclass(frozen=True)
class OutboundDocument:
    """One document for one partner. ``message_id`` is stable across retries of the same delivery (derived
    from the bus's idempotency key), so a transport that can tell a resend from a new document does."""

    body: bytes
    filename: str
    content_type: str
    message_id: str
    partner: str = ""


@dataclass(frozen=True)
class Receipt:
    """What the transport knows once the partner has the document: its reference (an AS2 Message-ID, a remote
    path) and, where the protocol gives one, the acknowledgement (an AS2 MDN's disposition and MIC)."""

    reference: str
    detail: str = ""
    acknowledgement: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InboundDocument:
    """One document a partner left for us. ``reference`` identifies it for dedup and ``settle``."""

    body: bytes
    filename: str
    reference: str
    content_type: str = "application/octet-stream"
    partner: str = ""


@runtime_checkable
class Transport(Protocol):
    """One configured way to a partner: ``open``/``close`` around ``send``, and for pull transports
    ``fetch``/``settle``. A push-only transport (AS2 receives through the webhook edge) returns no documents
    from ``fetch``."""

    def open(self) -> None: ...

    def close(self) -> None: ...

    def send(self, document: OutboundDocument) -> Receipt: ...

    def fetch(self, watermark: str | None) -> tuple[Sequence[InboundDocument], str | None]: ...

    def settle(self, document: InboundDocument) -> None: ...


@runtime_checkable
class PushTransport(Transport, Protocol):
    """A transport whose partner pushes documents to the bus's webhook edge (AS2): see adapters/b2b/__init__."""

    def unwrap(self, request: WebhookRequest) -> InboundDocument | None: ...

    def answer(self, request: WebhookRequest, status: int, reason: str, detail: str) -> WebhookAnswer | None: ...


@runtime_checkable
class StatefulTransport(Protocol):
    """A transport that keeps durable state (AS2: MICs awaiting MDNs, message ids seen) in its adapter's store."""

    store: AdapterStore


#: kind -> "module:Class"; each class takes ``(settings: Mapping[str, Any])`` and implements :class:`Transport`
#: and has a ``settings_schema`` class attribute (JSON Schema of its block, ``kind`` included).
KINDS: dict[str, str] = {
    "directory": "adapters.b2b.transport:DirectoryTransport",
    "as2": "adapters.as2.push:As2PushTransport",
    "sftp": "adapters.sftp.transport:SftpTransport",
}


def _load(kind: str) -> Any:
    target = KINDS.get(kind)
    if target is None:
        raise ConfigError(f"transport kind {kind!r} is not known; expected one of {', '.join(sorted(KINDS))}")
    module, _, name = target.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"transport kind {kind!r} ({target}) cannot be loaded: {exc}") from None


def transport_schema() -> dict[str, Any]:
    """JSON Schema of a ``transport:`` block: one of the kinds' own schemas, chosen by ``kind``."""
    choices: list[dict[str, Any]] = []
    for kind in sorted(KINDS):
        try:
            schema = dict(_load(kind).settings_schema)
        except ConfigError:
            continue  # a kind whose module is absent cannot be configured
        choices.append({"if": {"properties": {"kind": {"const": kind}}, "required": ["kind"]}, "then": schema})
    return {"type": "object", "required": ["kind"], "properties": {"kind": {"enum": sorted(KINDS)}},
            "allOf": choices}


def open_transport(settings: Mapping[str, Any], store: AdapterStore | None = None) -> Transport:
    """Build (not yet open) the transport a ``transport:`` settings block describes; ``store`` is the adapter's
    durable state, handed to a transport that keeps some."""
    kind = str(settings.get("kind", ""))
    transport: Transport = _load(kind)(settings)
    if store is not None and isinstance(transport, StatefulTransport):
        transport.store = store
    return transport


class DirectoryTransport:
    """Documents as files in local folders: for a partner that mounts a share, for the demo and for tests.

    ``send`` writes to a temporary name and renames, so a reader never sees half a file; ``fetch`` lists the
    inbox in name order after the watermark (the last name taken); ``settle`` moves a file to ``done/``.
    """

    settings_schema: Mapping[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["kind", "outbox"],
        "properties": {
            "kind": {"const": "directory"},
            "outbox": {"type": "string", "description": "Folder documents for the partner are written to."},
            "inbox": {"type": "string", "description": "Folder the partner leaves documents in."},
        },
    }

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.outbox = Path(str(settings["outbox"]))
        self.inbox = Path(str(settings["inbox"])) if settings.get("inbox") else None

    def open(self) -> None:
        self.outbox.mkdir(parents=True, exist_ok=True)
        if self.inbox is not None:
            (self.inbox / "done").mkdir(parents=True, exist_ok=True)

    def close(self) -> None:
        return None

    def send(self, document: OutboundDocument) -> Receipt:
        name = Path(document.filename).name
        if not name or name in (".", ".."):
            raise PermanentError(f"document file name {document.filename!r} is not a plain file name")
        final = self.outbox / name
        if final.exists() and final.read_bytes() == document.body:
            return Receipt(reference=str(final), detail="already delivered")  # a retry after a lost answer
        try:
            fd, tmp = tempfile.mkstemp(dir=self.outbox, prefix=".part-")
            with os.fdopen(fd, "wb") as out:
                out.write(document.body)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, final)
        except OSError as exc:
            raise TransientError(f"cannot write {final}: {exc.strerror or exc}") from None
        return Receipt(reference=str(final))

    def fetch(self, watermark: str | None) -> tuple[Sequence[InboundDocument], str | None]:
        if self.inbox is None or not self.inbox.is_dir():
            return [], watermark
        names = sorted(p.name for p in self.inbox.iterdir() if p.is_file() and not p.name.startswith("."))
        docs = [InboundDocument(body=(self.inbox / n).read_bytes(), filename=n, reference=n) for n in names
                if watermark is None or n > watermark]
        return docs, (docs[-1].reference if docs else watermark)

    def settle(self, document: InboundDocument) -> None:
        if self.inbox is None:
            return
        source = self.inbox / document.reference
        if source.exists():
            os.replace(source, self.inbox / "done" / document.reference)
