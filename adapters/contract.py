"""The values that cross the adapter contract (:mod:`adapters.base`): a :class:`Call` in, an :class:`Outcome`
out, what a poll or a webhook gives the bus, a refused document, a master-data record, and the specs the
``operation``/``trigger`` decorators attach. Plain frozen dataclasses, so the bus core can pass them around
without knowing any adapter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from bus.envelope import Event

__all__ = [
    "Call",
    "Health",
    "MasterRecord",
    "OperationSpec",
    "Outcome",
    "PollResult",
    "Refused",
    "RefusalSink",
    "SettingsWarning",
    "TriggerSpec",
    "WebhookAnswer",
    "WebhookRequest",
]


@dataclass(frozen=True)
class Call:
    """One delivery of one event to one operation.

    ``payload`` is the event data after the route's (and the target's) mapping. ``idempotency_key`` is
    stable across retries, redeliveries and replays of the same event to the same route and target: an
    adapter whose vendor supports it passes it on (e.g. an ``Idempotency-Key`` header).
    """

    event: Event
    payload: Any
    idempotency_key: str
    route: str = ""
    attempt: int = 1
    args: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """What an operation did. ``result`` becomes the data of a follow-up event when the route asks for one
    (``emit:``); ``reference`` is the id the target gave the record (a PO number, a note id …)."""

    result: Any = None
    reference: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class PollResult:
    """Records found by a poll, and the watermark to store once they are safely journaled.

    Each record is ``(dedup_key, payload)``: the dedup key (e.g. ``"42@2026-11-24T22:42:56.398358"``,
    id plus write date) lets the bus drop records seen in the overlap window of the previous poll.
    """

    records: Sequence[tuple[str, Any]]
    watermark: str | None
    #: dedup key -> the correlation id of the bus delivery whose write produced this state of the record (an
    #: adapter that remembers its own writes): the polled event then continues that transaction instead of
    #: starting one, so ``trace`` shows a change as one tree across the system round trip.
    correlations: Mapping[str, str] = field(default_factory=dict)
    #: dedup key -> the id of the event whose delivery wrote it: the polled event is that event's child
    #: (``causationid``), so the round trip through the system reads as one hop deeper in the trace tree.
    causations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WebhookRequest:
    """An inbound HTTP request as a webhook trigger sees it: raw body, lower-case headers, full URL."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes
    query: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WebhookAnswer:
    """The HTTP answer a vendor protocol dictates for an inbound document (a cXML ``Response``, a SOAP ``Ack``,
    an AS2 MDN), given by :meth:`Adapter.webhook_answer` in place of the bus's JSON answer."""

    status: int
    body: bytes
    content_type: str
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Refused:
    """An inbound document an adapter refused (a broken signature, a truncated interchange, an invalid cXML
    request): kept by the bus as a dead letter with ``reason``, so an operator sees it in ``ironbus dlq`` and
    the console and can re-read it (:meth:`Adapter.reprocess`) once a setting or mapping is fixed.

    ``body`` is the document as received (bytes; an adapter removes secrets — a shared secret — before);
    ``meta`` is what the adapter needs to re-read it (safe carrier headers, which message of an interchange),
    small JSON values only. ``key`` identifies the refusal, so reading the same file again after a crash
    keeps one letter."""

    trigger: str
    reason: str
    body: bytes
    partner: str | None = None
    document: str | None = None
    reference: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)
    key: str = ""


class RefusalSink(Protocol):
    """Where an adapter's refusals go: the journal's dead letters once the bus binds it
    (:meth:`Adapter.bind_refusals`)."""

    def __call__(self, system: str, refused: Refused) -> None: ...


@dataclass(frozen=True)
class MasterRecord:
    """One master-data record as a system holds it, for ``ironbus xref check`` and ``xref match``: the system's
    own id, its business code (SKU, customer number) and name, and ``attributes`` in the canonical schema's names
    (``active``, ``vat_id``, ``gtin``, ``email``, ``unit`` …) that ownership compares across systems."""

    id: str
    code: str | None = None
    name: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OperationSpec:
    name: str
    method: str
    description: str = ""
    bulk: bool = False  # the method takes a list of calls (the vendor has a bulk API)


@dataclass(frozen=True)
class TriggerSpec:
    name: str
    method: str
    kind: Literal["poll", "webhook", "schedule"]
    description: str = ""
    interval: float | None = None  # default poll interval in seconds


@dataclass(frozen=True)
class SettingsWarning:
    """Something in a system's settings that works but should change (a deprecated form): ``ironbus lint``
    reports it as a warning at ``path`` (keys and list indexes under ``settings:``)."""

    path: tuple[str | int, ...]
    message: str
