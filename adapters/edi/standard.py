"""What differs between X12 and EDIFACT, behind one small interface the shared EDI adapter drives."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from adapters.edi.model import Interchange
from adapters.edi.segments import LoopSpec, RawSegment

__all__ = ["AckResult", "Numbers", "Partner", "Standard"]


@dataclass(frozen=True)
class Partner:
    """One trading partner's settings (see the adapters' settings schemas)."""

    name: str
    id: str
    qualifier: str
    our_id: str
    our_qualifier: str
    transport: Mapping[str, Any]
    acknowledge: bool = True
    expect_ack: bool = True
    ack_timeout: float = 86400.0
    ack_retries: int = 2
    test: bool = False
    extra_segments: tuple[str, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)
    #: Whether ``qualifier`` was configured (then a received sender qualifier must match it) or is the default.
    qualifier_given: bool = False


@dataclass(frozen=True)
class Numbers:
    """Control numbers of one outbound interchange (interchange, group, message)."""

    interchange: int
    group: int
    message: int


@dataclass(frozen=True)
class AckResult:
    """What one received acknowledgement says about an interchange we sent (by its control number, or by the
    group's control number for an X12 997)."""

    interchange: str | None
    group: str | None
    accepted: bool
    detail: str


#: Takes the next control number of a kind ("interchange", "group", "message") for a partner.
TakeNumber = Callable[[str], int]


class Standard(Protocol):
    name: str
    ack_document: str
    content_type: str
    extension: str
    loops: Mapping[str, LoopSpec]
    #: The message/transaction set codes the adapter generates and reads (acknowledgement included).
    documents: tuple[str, ...]
    #: The error code for "interchange not addressed to us" (X12 TA1 008, EDIFACT 0085 code 7).
    wrong_recipient_code: str

    def parse(self, data: bytes, extra_segments: Sequence[str]) -> Interchange: ...

    def envelope(self, partner: Partner, document: str, version: str | None, segments: Sequence[RawSegment],
                 numbers: Numbers, when: datetime) -> bytes: ...

    def acknowledgement(self, ic: Interchange, partner: Partner, take: TakeNumber, when: datetime,
                        duplicate: bool = False) -> bytes | None: ...

    def reconcile(self, ic: Interchange) -> list[AckResult]: ...
