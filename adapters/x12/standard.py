"""ANSI X12 for the shared EDI adapter: envelopes (ISA/GS/ST … SE/GE/IEA), TA1 and 997, loops of the
purchasing transaction sets 850, 855, 856, 860, 865."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime

from adapters.edi.model import Interchange
from adapters.edi.segments import Element, LoopSpec, RawSegment
from adapters.edi.standard import AckResult, Numbers, Partner, TakeNumber
from adapters.edi.x12syntax import X12Separators, element, isa_fields, parse_x12, serialize_x12
from bus.errors import PermanentError

__all__ = ["FUNCTIONAL_IDS", "X12"]

#: Functional identifier code (GS01) of each transaction set.
FUNCTIONAL_IDS = {"850": "PO", "855": "PR", "856": "SH", "860": "PC", "865": "CA", "997": "FA"}

_N1 = frozenset({"N1"})
LOOPS = {
    "850": LoopSpec({"N9": frozenset(), "N1": frozenset(), "PO1": frozenset({"N1", "SLN"}), "SLN": frozenset()},
                    frozenset({"CTT"})),
    "855": LoopSpec({"N1": frozenset(), "PO1": _N1}, frozenset({"CTT"})),
    "860": LoopSpec({"N1": frozenset(), "POC": _N1}, frozenset({"CTT"})),
    "865": LoopSpec({"N1": frozenset(), "POC": _N1}, frozenset({"CTT"})),
    "856": LoopSpec({"HL": _N1, "N1": frozenset()}, frozenset({"CTT"}), hierarchical="HL"),
    "997": LoopSpec({"AK2": frozenset({"AK3"}), "AK3": frozenset()}, frozenset({"AK9"})),
}


def separators(partner: Partner) -> X12Separators:
    given = partner.options.get("separators") or {}
    seps = X12Separators(element=given.get("element", "*"), component=given.get("component", ">"),
                         segment=given.get("segment", "~"), repetition=given.get("repetition", "^"))
    seps.check()
    return seps


class X12Standard:
    name = "x12"
    ack_document = "997"
    content_type = "application/edi-x12"
    extension = "x12"
    loops: Mapping[str, LoopSpec] = LOOPS
    documents: tuple[str, ...] = ("850", "855", "856", "860", "865", "997")
    wrong_recipient_code = "008"

    def parse(self, data: bytes, extra_segments: Sequence[str]) -> Interchange:
        return parse_x12(data, extra_segments=extra_segments)

    def _interchange(self, partner: Partner, when: datetime, control: int, body: list[RawSegment],
                     groups: int, ack_requested: bool) -> bytes:
        for what, value in (("our_id", partner.our_id), ("id", partner.id)):
            if not 0 < len(value) <= 15:
                raise PermanentError(f"partner {partner.name}: {what} {value!r} does not fit ISA's 15 characters")
        seps = separators(partner)
        version = str(partner.options.get("version", "00401"))
        isa: RawSegment = ("ISA", isa_fields(
            sender_qualifier=partner.our_qualifier, sender=partner.our_id, receiver_qualifier=partner.qualifier,
            receiver=partner.id, when=when, control=control, version=version, usage="T" if partner.test else "P",
            ack_requested=ack_requested, seps=seps))
        iea: RawSegment = ("IEA", [str(groups), f"{control:09d}"])
        return serialize_x12([isa, *body, iea], seps)

    def _group(self, partner: Partner, functional_id: str, when: datetime, control: int,
               sets: list[list[RawSegment]]) -> list[RawSegment]:
        gs: RawSegment = ("GS", [functional_id, str(partner.options.get("application_id", partner.our_id)),
                                 str(partner.options.get("partner_application_id", partner.id)),
                                 when.strftime("%Y%m%d"), when.strftime("%H%M"), str(control), "X",
                                 str(partner.options.get("group_version", "004010"))])
        out = [gs]
        for one in sets:
            out += one
        return [*out, ("GE", [str(len(sets)), str(control)])]

    @staticmethod
    def _set(code: str, control: str, segments: Sequence[RawSegment]) -> list[RawSegment]:
        for tag, _ in segments:
            if tag in ("ISA", "IEA", "GS", "GE", "ST", "SE"):
                raise PermanentError(f"segment {tag} is an envelope segment; the adapter writes the envelope")
        return [("ST", [code, control]), *segments, ("SE", [str(len(segments) + 2), control])]

    def envelope(self, partner: Partner, document: str, version: str | None, segments: Sequence[RawSegment],
                 numbers: Numbers, when: datetime) -> bytes:
        st = self._set(document, f"{numbers.message:04d}", segments)
        group = self._group(partner, FUNCTIONAL_IDS[document], when, numbers.group, [st])
        return self._interchange(partner, when, numbers.interchange, group, 1,
                                 ack_requested=bool(partner.options.get("request_ta1", False)))

    def acknowledgement(self, ic: Interchange, partner: Partner, take: TakeNumber, when: datetime,
                        duplicate: bool = False) -> bytes | None:
        control = take("interchange")
        if duplicate or ic.problems:
            # Envelope errors are answered at the interchange level (TA1), as X12 prescribes.
            code = "025" if duplicate else ic.problems[0].code
            ta1: RawSegment = ("TA1", [ic.control, _yymmdd(ic.prepared), _hhmm(ic.prepared), "R", code])
            return self._interchange(partner, when, control, [ta1], 0, ack_requested=False)
        sets = []
        for group in ic.groups:
            body: list[RawSegment] = [("AK1", [_echo(group.functional_id), _echo(group.control)])]
            accepted = 0
            for message in group.messages:
                body.append(("AK2", [_echo(message.code), _echo(message.control)]))
                for p in message.problems:
                    if p.tag:
                        body.append(("AK3", [_echo(p.tag), str(p.position), "", p.code]))
                if message.ok:
                    accepted += 1
                    body.append(("AK5", ["A"]))
                else:
                    codes = [p.code for p in message.problems if not p.tag] or ["5"]
                    body.append(("AK5", ["R", codes[0]]))
            n = len(group.messages)
            status = "R" if group.problems or not accepted else ("A" if accepted == n else "P")
            ak9: list[Element] = [status, str(n), str(n), str(accepted)]
            if group.problems:
                ak9.append(group.problems[0].code)
            body.append(("AK9", ak9))
            sets.append(self._set("997", f"{take('message'):04d}", body))
        return self._interchange(partner, when, control, self._group(partner, "FA", when, take("group"), sets), 1,
                                 ack_requested=False)

    def reconcile(self, ic: Interchange) -> list[AckResult]:
        out = [AckResult(interchange=element(seg, 1), group=None, accepted=element(seg, 4) in ("A", "E"),
                         detail=f"TA1 {element(seg, 4)} code {element(seg, 5)}") for seg in ic.receipts]
        for group in ic.groups:
            for message in group.messages:
                if message.code != "997" or not message.ok:
                    continue
                ak1 = next((s for s in message.segments if s[0] == "AK1"), None)
                ak9 = next((s for s in message.segments if s[0] == "AK9"), None)
                if ak1 is None or ak9 is None:
                    continue
                status = element(ak9, 1)
                rejected = [f"{element(s, 1)} {element(s, 2)}" for s in message.segments
                            if s[0] == "AK5" and element(s, 1) == "R"]
                out.append(AckResult(interchange=None, group=element(ak1, 2), accepted=status in ("A", "E"),
                                     detail=f"997 AK9 {status}" + (f"; rejected: {', '.join(rejected)}"
                                                                    if rejected else "")))
        return out


def _yymmdd(iso: str) -> str:
    return iso[2:10].replace("-", "") if len(iso) >= 10 else ""


def _hhmm(iso: str) -> str:
    return iso[11:16].replace(":", "") if len(iso) >= 16 else ""


X12 = X12Standard()


def _echo(value: object) -> str:
    """A value of the partner's document echoed in our acknowledgement: identifiers only (letters, digits), so a
    broken document whose tag or control number holds one of our separators still gets its 997."""
    return re.sub(r"[^0-9A-Za-z]", "", str(value))
