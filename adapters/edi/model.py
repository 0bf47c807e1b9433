"""A received interchange, whatever the standard: envelope facts, groups, messages and what was wrong with them.

The syntax readers (:mod:`adapters.edi.x12syntax`, :mod:`adapters.edi.edifactsyntax`) never raise on a bad
document they could at least partly read: they record :class:`Problem` s at the level they concern
(interchange, group, message), because the functional acknowledgement must say which level failed and why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from adapters.edi.segments import RawSegment

__all__ = ["Group", "Interchange", "Message", "Problem", "Unreadable"]


class Unreadable(Exception):
    """Not even the interchange header could be read: nothing can be acknowledged, the sender is unknown."""


@dataclass(frozen=True)
class Problem:
    """One error: a standard's code (X12 TA1/AK5/AK3 codes, EDIFACT 0085 syntax error codes), the segment
    concerned (tag and 1-based position inside its message, 0 when none) and a sentence for people."""

    code: str
    text: str
    tag: str = ""
    position: int = 0


@dataclass
class Message:
    """One transaction set (X12 ST..SE) or message (EDIFACT UNH..UNT), envelope segments excluded."""

    code: str
    control: str
    version: str
    segments: list[RawSegment] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class Group:
    """An X12 functional group (GS..GE); EDIFACT messages without UNG sit in one implicit group."""

    functional_id: str
    control: str
    version: str
    sender: str = ""
    receiver: str = ""
    messages: list[Message] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and all(m.ok for m in self.messages)


@dataclass
class Interchange:
    """One interchange (ISA..IEA, UNB..UNZ) as received."""

    standard: str
    sender: str
    sender_qualifier: str
    receiver: str
    receiver_qualifier: str
    control: str
    prepared: str  # ISO 8601, as the sender wrote it (no zone in either standard)
    test: bool
    separators: dict[str, str]
    groups: list[Group] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    ack_requested: bool = True
    #: Interchange-level acknowledgements carried beside the groups (X12 TA1 segments).
    receipts: list[RawSegment] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and all(g.ok for g in self.groups)

    def describe(self) -> str:
        """Every problem, one per line, naming its level, for logs, rejected payloads and dead letters."""
        lines = [f"interchange {self.control}: {p.text}" for p in self.problems]
        for g in self.groups:
            lines += [f"group {g.control}: {p.text}" for p in g.problems]
            for m in g.messages:
                lines += [f"{m.code} {m.control}: {p.text}" for p in m.problems]
        return "; ".join(lines)
