"""UN/EDIFACT for the shared EDI adapter: envelopes (UNA/UNB/UNH … UNT/UNZ), CONTRL, loops (segment groups)
of ORDERS, ORDCHG, ORDRSP and DESADV."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from adapters.edi.edifactsyntax import parse_edifact, serialize_edifact
from adapters.edi.model import Interchange
from adapters.edi.segments import Element, LoopSpec, RawSegment
from adapters.edi.standard import AckResult, Numbers, Partner, TakeNumber
from bus.errors import PermanentError

__all__ = ["EDIFACT"]

_ORDER_LOOPS = {"RFF": frozenset(), "NAD": frozenset({"RFF", "CTA"}), "CTA": frozenset(), "TDT": frozenset(),
                "LIN": frozenset({"RFF", "SCC", "NAD"}), "SCC": frozenset()}
LOOPS = {
    "ORDERS": LoopSpec(_ORDER_LOOPS, frozenset({"UNS"})),
    "ORDCHG": LoopSpec(_ORDER_LOOPS, frozenset({"UNS"})),
    "ORDRSP": LoopSpec(_ORDER_LOOPS, frozenset({"UNS"})),
    "DESADV": LoopSpec({"RFF": frozenset(), "NAD": frozenset(), "TDT": frozenset(),
                        "CPS": frozenset({"PAC", "LIN"}), "PAC": frozenset(), "LIN": frozenset({"RFF"})},
                       frozenset({"CNT"})),
    "CONTRL": LoopSpec({"UCM": frozenset({"UCS"}), "UCS": frozenset()}, frozenset()),
}
DEFAULT_VERSION = "D:96A:UN"


def _trim(elements: list[Element]) -> list[Element]:
    while elements and elements[-1] in ("", []):
        elements.pop()
    return elements


class EdifactStandard:
    name = "edifact"
    ack_document = "CONTRL"
    content_type = "application/edifact"
    extension = "edi"
    loops: Mapping[str, LoopSpec] = LOOPS
    documents: tuple[str, ...] = ("ORDERS", "ORDCHG", "ORDRSP", "DESADV", "CONTRL")
    wrong_recipient_code = "7"

    def parse(self, data: bytes, extra_segments: Sequence[str]) -> Interchange:
        return parse_edifact(data, extra_segments=extra_segments)

    def _interchange(self, partner: Partner, when: datetime, control: int, messages: list[list[RawSegment]],
                     ack_requested: bool) -> bytes:
        syntax = str(partner.options.get("syntax", "UNOC:3"))
        unb: RawSegment = ("UNB", _trim([
            syntax.split(":"), [partner.our_id, partner.our_qualifier] if partner.our_qualifier else partner.our_id,
            [partner.id, partner.qualifier] if partner.qualifier else partner.id,
            [when.strftime("%y%m%d"), when.strftime("%H%M")], str(control), "",
            str(partner.options.get("application_reference", "")), "", "1" if ack_requested else "", "",
            "1" if partner.test else ""]))
        body: list[RawSegment] = [unb]
        for one in messages:
            body += one
        body.append(("UNZ", [str(len(messages)), str(control)]))
        return serialize_edifact(body, syntax=syntax.split(":")[0], una=bool(partner.options.get("una", True)))

    @staticmethod
    def _message(code: str, version: str, reference: str, segments: Sequence[RawSegment]) -> list[RawSegment]:
        for tag, _ in segments:
            if tag in ("UNA", "UNB", "UNZ", "UNH", "UNT", "UNG", "UNE"):
                raise PermanentError(f"segment {tag} is a service segment; the adapter writes the envelope")
        identifier: list[str] = [code, *version.split(":")]
        return [("UNH", [reference, identifier]), *segments, ("UNT", [str(len(segments) + 2), reference])]

    def envelope(self, partner: Partner, document: str, version: str | None, segments: Sequence[RawSegment],
                 numbers: Numbers, when: datetime) -> bytes:
        versions = partner.options.get("message_versions") or {}
        chosen = version or str(versions.get(document, DEFAULT_VERSION))
        message = self._message(document, chosen, str(numbers.message), segments)
        return self._interchange(partner, when, numbers.interchange, [message],
                                 ack_requested=partner.expect_ack and document != "CONTRL")

    def acknowledgement(self, ic: Interchange, partner: Partner, take: TakeNumber, when: datetime,
                        duplicate: bool = False) -> bytes | None:
        if not ic.ack_requested and not partner.options.get("always_contrl", False):
            return None  # UNB 0031 did not ask for one and the partner agreement does not either
        sender: Element = [ic.sender, ic.sender_qualifier] if ic.sender_qualifier else ic.sender
        receiver: Element = [ic.receiver, ic.receiver_qualifier] if ic.receiver_qualifier else ic.receiver
        uci: list[Element] = [ic.control, sender, receiver]
        if duplicate:
            uci += ["4", "26"]
        elif ic.problems:
            first = ic.problems[0]
            uci += ["4", first.code, first.tag]
        else:
            # 7: the interchange is acknowledged and so is every message not rejected by its own UCM below.
            uci.append("7")
        body: list[RawSegment] = [("UCI", _trim(uci))]
        if not duplicate and not ic.problems:
            for group in ic.groups:
                for message in group.messages:
                    if message.ok:
                        continue
                    untagged = [p.code for p in message.problems if not p.tag or p.tag in ("UNT", "UNH")]
                    ucm: list[Element] = [message.control, [message.code, *message.version.split(":")], "4"]
                    if untagged:
                        ucm.append(untagged[0])
                    body.append(("UCM", ucm))
                    body += [("UCS", [str(p.position), p.code]) for p in message.problems
                             if p.tag and p.tag not in ("UNT", "UNH")]
        contrl = self._message("CONTRL", "D:3:UN", str(take("message")), body)
        return self._interchange(partner, when, take("interchange"), [contrl], ack_requested=False)

    def reconcile(self, ic: Interchange) -> list[AckResult]:
        out = []
        for group in ic.groups:
            for message in group.messages:
                if message.code != "CONTRL" or not message.ok:
                    continue
                uci = next((s for s in message.segments if s[0] == "UCI"), None)
                if uci is None:
                    continue
                elements = uci[1]
                action = elements[3] if len(elements) > 3 and isinstance(elements[3], str) else ""
                rejected = [str(s[1][0]) for s in message.segments if s[0] == "UCM" and len(s[1]) > 2
                            and s[1][2] == "4"]
                detail = f"CONTRL action {action}" + (f"; rejected messages: {', '.join(rejected)}" if rejected else "")
                out.append(AckResult(interchange=str(elements[0]), group=None,
                                     accepted=action in ("7", "8") and not rejected, detail=detail))
        return out


EDIFACT = EdifactStandard()
