"""UN/EDIFACT syntax on top of pydifact: pydifact tokenizes (UNA service string advice, release character,
composites) and serializes; the envelope checks — which pydifact's ``Interchange`` does not make (it quietly
adds a missing UNZ) — and the CONTRL error codes (UN/EDIFACT syntax error codes, data element 0085) are here.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from datetime import datetime

from pydifact.control.characters import Characters
from pydifact.exceptions import EDISyntaxError
from pydifact.parser import Parser
from pydifact.segments import Segment
from pydifact.serializer import Serializer

from adapters.edi.model import Group, Interchange, Message, Problem, Unreadable
from adapters.edi.segments import TAG, Element, RawSegment
from bus.errors import PermanentError

__all__ = ["KNOWN_SEGMENTS", "parse_edifact", "serialize_edifact"]

# Segments each message may contain (UN/EDIFACT D.96A message structures); anything else is refused
# (error 15, "not supported in this position"). A partner's additions go in ``extra_segments``.
_COMMON = {"BGM", "DTM", "PAI", "ALI", "IMD", "FTX", "RFF", "NAD", "LOC", "FII", "CTA", "COM", "TAX", "MOA", "CUX",
           "PAT", "PCD", "TDT", "TOD", "PAC", "PCI", "GIN", "MEA", "QTY", "HAN", "SCC", "RCS", "APR", "DGS", "EQD",
           "RNG", "GIS", "LIN", "PIA", "PRI", "QVR", "DOC", "MTD", "CCI", "STG", "EFI", "UNS", "CNT", "GIR", "ALC",
           "RTE", "SEQ", "DLM", "SGP", "TSR", "EQA", "CPS", "SEL"}
KNOWN_SEGMENTS: dict[str, frozenset[str]] = {
    "ORDERS": frozenset(_COMMON), "ORDCHG": frozenset(_COMMON), "ORDRSP": frozenset(_COMMON),
    "DESADV": frozenset(_COMMON), "CONTRL": frozenset({"UCI", "UCM", "UCS", "UCD", "UCF"}),
}


def _characters(text: str) -> Characters:
    if text.startswith("UNA") and len(text) >= 9:
        return Characters.from_str(text[:9])
    return Characters()  # type: ignore[no-untyped-call]


def _el(elements: Sequence[Element], position: int, component: int = 0) -> str:
    if position > len(elements):
        return ""
    value = elements[position - 1]
    if isinstance(value, list):
        return value[component].strip() if component < len(value) else ""
    return value.strip() if component == 0 else ""


def parse_edifact(data: bytes, *, extra_segments: Sequence[str] = ()) -> Interchange:
    """Read one interchange (UNA optional). Raises :class:`Unreadable` when no UNB can be read."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    text = text.lstrip("\ufeff\r\n\t ")
    try:
        chars = _characters(text)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydifact warns that it has no segment directories; we check ours
            parsed: list[RawSegment] = [(s.tag, list(s.elements)) for s in Parser().parse(text) if s.tag != "UNA"]
    except EDISyntaxError as exc:
        raise Unreadable(f"EDIFACT syntax error: {exc}") from None
    except Exception as exc:  # pydifact raises its own validation and Python errors on broken input
        raise Unreadable(f"EDIFACT syntax error ({type(exc).__name__}): {exc}") from None
    if not parsed or parsed[0][0] != "UNB":
        raise Unreadable("an EDIFACT interchange must start with UNB (after an optional UNA)")
    unb = parsed[0][1]
    stamp = _el(unb, 4) + _el(unb, 4, 1)
    prepared = ""
    for fmt in ("%y%m%d%H%M", "%Y%m%d%H%M"):
        try:
            prepared = datetime.strptime(stamp, fmt).isoformat()
            break
        except ValueError:
            continue
    ic = Interchange(standard="edifact", sender=_el(unb, 2), sender_qualifier=_el(unb, 2, 1), receiver=_el(unb, 3),
                     receiver_qualifier=_el(unb, 3, 1), control=_el(unb, 5), prepared=prepared,
                     test=_el(unb, 11) == "1", ack_requested=_el(unb, 9) == "1",
                     separators={"component": chars.component_separator, "element": chars.data_separator,
                                 "decimal": chars.decimal_point, "release": chars.escape_character,
                                 "segment": chars.segment_terminator, "syntax": _el(unb, 1)})
    if not ic.control:
        ic.problems.append(Problem("13", "UNB0020 interchange control reference is missing", "UNB"))
    if not prepared:
        ic.problems.append(Problem("12", f"UNB date/time {stamp!r} is not YYMMDD:HHMM", "UNB"))
    group = Group(functional_id="", control="", version="")
    ic.groups.append(group)
    extra = frozenset(extra_segments)
    message: Message | None = None
    count = 0
    ended = False
    for tag, elements in parsed[1:]:
        if ended:
            ic.problems.append(Problem("18", f"segment {tag} after UNZ"))
            break
        if message is not None and tag != "UNT":
            if tag in ("UNH", "UNZ"):
                message.problems.append(Problem("13", f"message trailer UNT missing before {tag}", "UNT"))
                message = None
            else:
                count += 1
                _check(message, tag, elements, count, extra)
                continue
        if tag == "UNH":
            version = ":".join(_el(elements, 2, i) for i in range(1, 5) if _el(elements, 2, i))
            message = Message(code=_el(elements, 2), control=_el(elements, 1), version=version)
            count = 1
            group.messages.append(message)
            if message.code not in KNOWN_SEGMENTS:
                message.problems.append(Problem("18", f"message type {message.code!r} is not supported", "UNH", 1))
        elif tag == "UNT":
            if message is None:
                ic.problems.append(Problem("18", "UNT without its UNH"))
                continue
            count += 1
            if _el(elements, 2) != message.control:
                message.problems.append(Problem("28", f"UNT0062 {_el(elements, 2)!r} does not match UNH0062 "
                                                      f"{message.control!r}", "UNT", count))
            if _el(elements, 1) != str(count):
                message.problems.append(Problem("29", f"UNT0074 says {_el(elements, 1) or 'nothing'} segments, the "
                                                      f"message has {count}", "UNT", count))
            message = None
        elif tag == "UNZ":
            if _el(elements, 2) != ic.control:
                ic.problems.append(Problem("28", f"UNZ0020 {_el(elements, 2)!r} does not match UNB0020 "
                                                 f"{ic.control!r}", "UNZ"))
            if _el(elements, 1) != str(len(group.messages)):
                ic.problems.append(Problem("29", f"UNZ0036 says {_el(elements, 1) or 'nothing'} messages, the "
                                                 f"interchange has {len(group.messages)}", "UNZ"))
            ended = True
        elif tag in ("UNG", "UNE"):
            continue  # functional groups are rare in EDIFACT; their messages are read as ungrouped
        else:
            ic.problems.append(Problem("18", f"segment {tag} outside a message"))
    if message is not None:
        message.problems.append(Problem("13", "message trailer UNT missing (the interchange ends early)", "UNT"))
    if not ended:
        ic.problems.append(Problem("13", "the interchange ends without UNZ (truncated)", "UNZ"))
    return ic


def _check(message: Message, tag: str, elements: list[Element], position: int, extra: frozenset[str]) -> None:
    known = KNOWN_SEGMENTS.get(message.code)
    if not TAG.match(tag) or (known is not None and tag not in known and tag not in extra):
        message.problems.append(Problem("15", f"segment {position}: {tag} is not part of a {message.code} message",
                                        tag[:3], position))
        return
    message.segments.append((tag, elements))


def serialize_edifact(segments: Sequence[RawSegment], *, syntax: str = "UNOC", una: bool = True,
                      newline: bool = True) -> bytes:
    """Segments as EDIFACT text with the usual service characters (``:+.? '``, decimal point, as the numbers a
    mapping writes), values escaped with ``?``."""
    chars = Characters.from_str("UNA:+.? '")
    try:
        text = Serializer(chars).serialize([Segment(tag, *elements) for tag, elements in segments],
                                           with_una_header=una, break_lines=newline)
    except (TypeError, ValueError) as exc:
        raise PermanentError(f"cannot write the EDIFACT segments: {exc}") from None
    encoding = "latin-1" if syntax in ("UNOA", "UNOB", "UNOC") else "utf-8"
    try:
        return text.encode(encoding)
    except UnicodeEncodeError as exc:
        raise PermanentError(f"a value holds {text[exc.start:exc.end]!r}, which syntax {syntax} cannot carry") from None
