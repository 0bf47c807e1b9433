"""ANSI X12 syntax: read an interchange with the separators it declares, write one with ours.

Why not a library: pyx12 (the maintained one) is built around HIPAA healthcare maps and validates against them;
badx12 has had no release since 2018; the others on PyPI are young single-author packages. X12's syntax is
small — a fixed-width ISA that declares the element separator (its 4th character), the component separator
(ISA16) and the segment terminator (the character after ISA16) — and what matters here is the envelope checking
and the acknowledgement codes, which none of them produce. So it is done here, against the published envelope
rules (ASC X12 control segments ISA/IEA, GS/GE, ST/SE, TA1 and 997).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from adapters.edi.model import Group, Interchange, Message, Problem, Unreadable
from adapters.edi.segments import TAG, Element, RawSegment
from bus.errors import PermanentError

__all__ = ["KNOWN_SEGMENTS", "X12Separators", "element", "isa_fields", "parse_x12", "serialize_x12"]

ISA_LENGTH = 106

# Segments each transaction set may contain (ASC X12 004010 tables); anything else is "not in defined
# transaction set" (997 AK304 code 6). A partner's own additions go in its ``extra_segments`` setting.
_COMMON = {"REF", "PER", "DTM", "N1", "N2", "N3", "N4", "NTE", "MSG", "N9", "PID", "MEA", "TD1", "TD3", "TD4",
           "TD5", "FOB", "SAC", "CUR", "ITD", "TAX", "TXI", "PKG", "PO4", "CTT", "AMT", "LIN", "SLN", "SCH", "QTY",
           "SI", "LDT", "MAN", "PWK", "CTP", "CSH", "DIS", "PAM", "PCT", "CTB", "G61", "III", "NX2", "SPI", "ADV",
           "IT8", "PO3", "SDQ", "LM", "LQ", "FST", "CB1", "TC2", "INC", "YNQ"}
KNOWN_SEGMENTS: dict[str, frozenset[str]] = {
    "850": frozenset(_COMMON | {"BEG", "PO1"}),
    "855": frozenset(_COMMON | {"BAK", "PO1", "ACK"}),
    "860": frozenset(_COMMON | {"BCH", "POC", "ACK"}),
    "865": frozenset(_COMMON | {"BCA", "POC", "ACK"}),
    "856": frozenset(_COMMON | {"BSN", "HL", "PRF", "SN1", "SN2", "SN3", "PAL", "PO4", "LH1", "CLD", "CUR", "TSD",
                                "INV", "LH2", "LHR", "LFH", "LEP", "LH3", "LH4", "LHT", "LHE", "V1", "TD2"}),
    "997": frozenset({"AK1", "AK2", "AK3", "AK4", "AK5", "AK9"}),
}


@dataclass(frozen=True)
class X12Separators:
    element: str = "*"
    component: str = ">"
    segment: str = "~"
    repetition: str = "^"

    def check(self) -> None:
        chars = [self.element, self.component, self.segment]
        if any(len(c) != 1 or c.isalnum() or c == " " for c in chars) or len(set(chars)) != 3:
            raise PermanentError(f"X12 separators must be three distinct single non-alphanumeric characters, "
                                 f"got {chars!r}")


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")  # X12's extended character set; never fails


def _split(body: str, seps: X12Separators) -> list[RawSegment]:
    out: list[RawSegment] = []
    for raw in body.split(seps.segment):
        raw = raw.strip("\r\n\t ")
        if not raw:
            continue
        parts = raw.split(seps.element)
        elements: list[Element] = [p.split(seps.component) if seps.component in p else p for p in parts[1:]]
        out.append((parts[0].strip(), elements))
    return out


def _el(segment: RawSegment, position: int) -> str:
    elements = segment[1]
    if position > len(elements):
        return ""
    value = elements[position - 1]
    return (value if isinstance(value, str) else ":".join(value)).strip()


def parse_x12(data: bytes, *, extra_segments: Sequence[str] = ()) -> Interchange:
    """Read one interchange. Raises :class:`Unreadable` only when the ISA itself is broken; every other problem
    is recorded on the interchange, group or transaction set it concerns."""
    text = _decode(data).lstrip("\ufeff\r\n\t ")
    if not text.startswith("ISA"):
        raise Unreadable("an X12 interchange must start with ISA")
    if len(text) < ISA_LENGTH:
        raise Unreadable(f"the ISA segment is {len(text)} characters long, shorter than the fixed {ISA_LENGTH}")
    element = text[3]
    isa_fields = text[:ISA_LENGTH - 1].split(element)
    if len(isa_fields) != 17:
        raise Unreadable(f"the ISA segment has {len(isa_fields) - 1} elements, expected 16 of fixed width")
    seps = X12Separators(element=element, component=text[ISA_LENGTH - 2], segment=text[ISA_LENGTH - 1],
                         repetition=isa_fields[11] if not isa_fields[11].isalnum() else "^")
    if seps.segment.isalnum() or seps.component.isalnum() or len({element, seps.component, seps.segment}) != 3:
        raise Unreadable("the ISA declares unusable separators (they must be distinct and not letters or digits)")
    segments = _split(text, seps)
    isa = segments[0]
    try:
        prepared = datetime.strptime(_el(isa, 9) + _el(isa, 10), "%y%m%d%H%M").isoformat()
    except ValueError:
        prepared = ""
    ic = Interchange(standard="x12", sender=_el(isa, 6), sender_qualifier=_el(isa, 5), receiver=_el(isa, 8),
                     receiver_qualifier=_el(isa, 7), control=_el(isa, 13), prepared=prepared,
                     test=_el(isa, 15) == "T", separators={"element": seps.element, "component": seps.component,
                                                            "segment": seps.segment},
                     ack_requested=_el(isa, 14) == "1")
    if not re.fullmatch(r"\d{9}", ic.control):
        ic.problems.append(Problem("018", f"ISA13 control number {ic.control!r} is not 9 digits"))
    if not prepared:
        ic.problems.append(Problem("014", "ISA09/ISA10 is not a valid date and time"))
    extra = frozenset(extra_segments)
    group: Group | None = None
    message: Message | None = None
    message_count = 0
    ended = False
    for index, seg in enumerate(segments[1:], 2):
        tag = seg[0]
        if ended:
            ic.problems.append(Problem("022", f"segment {index} ({tag}) after IEA"))
            break
        if message is not None and tag not in ("SE",):
            if tag in ("ST", "GE", "IEA", "GS"):
                message.problems.append(Problem("2", f"transaction set trailer SE missing before {tag}"))
                message = None
            else:
                message_count += 1
                _check_segment(message, seg, message_count, extra)
                continue
        if tag == "GS":
            if group is not None:
                group.problems.append(Problem("3", "functional group trailer GE missing before the next GS"))
            group = Group(functional_id=_el(seg, 1), sender=_el(seg, 2), receiver=_el(seg, 3),
                          control=_el(seg, 6), version=_el(seg, 8))
            ic.groups.append(group)
        elif tag == "ST":
            if group is None:
                ic.problems.append(Problem("024", "ST outside a functional group (no GS before it)"))
                group = Group(functional_id="", control="", version="")
                ic.groups.append(group)
            message = Message(code=_el(seg, 1), control=_el(seg, 2), version=_el(seg, 3) or group.version)
            message_count = 1
            group.messages.append(message)
            if message.code not in KNOWN_SEGMENTS:
                message.problems.append(Problem("1", f"transaction set {message.code!r} is not supported"))
        elif tag == "SE":
            if message is None:
                ic.problems.append(Problem("022", f"SE at segment {index} without its ST"))
                continue
            message_count += 1
            declared, control = _el(seg, 1), _el(seg, 2)
            if control != message.control:
                message.problems.append(Problem("3", f"SE02 {control!r} does not match ST02 {message.control!r}"))
            if declared != str(message_count):
                message.problems.append(Problem("4", f"SE01 says {declared or 'nothing'} segments, the transaction "
                                                     f"set has {message_count}"))
            message = None
        elif tag == "GE":
            if group is None:
                ic.problems.append(Problem("022", "GE without its GS"))
                continue
            if _el(seg, 2) != group.control:
                group.problems.append(Problem("4", f"GE02 {_el(seg, 2)!r} does not match GS06 {group.control!r}"))
            if _el(seg, 1) != str(len(group.messages)):
                group.problems.append(Problem("5", f"GE01 says {_el(seg, 1) or 'nothing'} transaction sets, the "
                                                   f"group has {len(group.messages)}"))
            group = None
        elif tag == "IEA":
            if group is not None:
                group.problems.append(Problem("3", "functional group trailer GE missing before IEA"))
                group = None
            if _el(seg, 2) != ic.control:
                ic.problems.append(Problem("001", f"IEA02 {_el(seg, 2)!r} does not match ISA13 {ic.control!r}"))
            if _el(seg, 1) != str(len(ic.groups)):
                ic.problems.append(Problem("021", f"IEA01 says {_el(seg, 1) or 'nothing'} groups, the interchange "
                                                  f"has {len(ic.groups)}"))
            ended = True
        else:
            ic.problems.append(Problem("024", f"segment {index} ({tag}) outside a transaction set"))
    if message is not None:
        message.problems.append(Problem("2", "transaction set trailer SE missing (the interchange ends early)"))
    if not ended:
        ic.problems.append(Problem("023", "the interchange ends without IEA (truncated)"))
        if group is not None:
            group.problems.append(Problem("3", "functional group trailer GE missing"))
    return ic


def _check_segment(message: Message, seg: RawSegment, position: int, extra: frozenset[str]) -> None:
    tag = seg[0]
    if not TAG.match(tag):
        message.problems.append(Problem("1", f"segment {position}: {tag!r} is not a segment id", tag[:3], position))
        return
    known = KNOWN_SEGMENTS.get(message.code)
    if known is not None and tag not in known and tag not in extra:
        message.problems.append(Problem("6", f"segment {position}: {tag} is not defined in transaction set "
                                             f"{message.code}", tag, position))
        return
    message.segments.append(seg)


def _value(value: Element, seps: X12Separators, where: str) -> str:
    parts = value if isinstance(value, list) else [value]
    for part in parts:
        for name, char in (("element", seps.element), ("component", seps.component), ("segment", seps.segment)):
            if char in part:
                raise PermanentError(f"{where}: value {part!r} contains the {name} separator {char!r}; X12 has no "
                                     "escape character, so the value must change (or the partner's separators)")
    return seps.component.join(parts)


def serialize_x12(segments: Sequence[RawSegment], seps: X12Separators, *, newline: bool = True) -> bytes:
    """Segments as X12 text; the ISA's separators are written by the caller in its fixed-width fields."""
    end = seps.segment + ("\n" if newline else "")
    lines = []
    for position, (tag, elements) in enumerate(segments, 1):
        if tag == "ISA":
            lines.append(tag + seps.element + seps.element.join(str(e) for e in elements) + end)
            continue
        values = [_value(e, seps, f"segment {position} {tag}{i:02d}") for i, e in enumerate(elements, 1)]
        lines.append(seps.element.join([tag, *values]) + end)
    return "".join(lines).encode("utf-8")


def isa_fields(*, sender_qualifier: str, sender: str, receiver_qualifier: str, receiver: str, when: datetime,
               control: int, version: str, usage: str, ack_requested: bool, seps: X12Separators) -> list[Element]:
    """The 16 fixed-width ISA elements."""
    return ["00", " " * 10, "00", " " * 10, sender_qualifier.ljust(2)[:2], sender.ljust(15)[:15],
            receiver_qualifier.ljust(2)[:2], receiver.ljust(15)[:15], when.strftime("%y%m%d"), when.strftime("%H%M"),
            seps.repetition if version >= "00402" else "U", version, f"{control:09d}",
            "1" if ack_requested else "0", usage, seps.component]


def element(segment: RawSegment, position: int) -> str:
    """Element ``position`` (1-based) of a segment as text ('' when absent)."""
    return _el(segment, position)
