"""``ironbus xref match``: propose cross references between records that already exist in several systems.

For the first load of an integration, the systems already hold the same customers, materials and suppliers under
their own ids. Each record of a system that is not yet linked is matched against the owner's records (the owner
of the entity in routes.yaml ``master_data:``; without one, the first system that holds it):

1. by business keys, strongest first (``code``, ``vat_id``, ``gtin``, ``email``; or the declaration's ``match``),
   compared after normalising case and white space (and punctuation for tax ids and GTINs);
2. then by normalised names — case, accents, punctuation and legal-form words (Inc, Ltd, GmbH, SA …) removed —
   exactly, or by similarity.

Each proposal has its reason and a confidence. A unique business-key match is *sure* (1.0); an exact normalised
name is 0.85; a similar name its similarity times 0.8. Only sure proposals are applied by ``--apply``; the rest
are listed for a person to decide (``ironbus xref set``). The canonical id of a new link is the owner's record
code, else its existing link, else ``<system>:<id>`` of the owner's record.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from adapters.base import MasterRecord
from bus.journal.records import XrefRow
from bus.masterdata import attribute
from bus.ownership import EntityOwnership

__all__ = ["SURE", "Proposal", "match_records", "normalise_name"]

#: Proposals at or above this confidence are applied by ``--apply``.
SURE = 0.95
_SIMILAR = 0.88  # below this name similarity no proposal is made at all
_LEGAL_FORMS = frozenset({"inc", "incorporated", "ltd", "limited", "llc", "llp", "plc", "gmbh", "ag", "kg", "sa",
                          "sas", "sarl", "srl", "spa", "bv", "nv", "co", "corp", "corporation", "company", "oy",
                          "ab", "as", "aps", "sl", "kk", "pty", "the"})


@dataclass(frozen=True)
class Proposal:
    """Link ``system``'s record ``system_id`` to ``canonical_id`` (the owner's record ``owner_id``)."""

    entity: str
    canonical_id: str
    owner: str
    owner_id: str
    system: str
    system_id: str
    reason: str
    confidence: float
    label: str = ""

    @property
    def sure(self) -> bool:
        return self.confidence >= SURE

    def rows(self) -> list[XrefRow]:
        """The links applying this proposal writes: the owner's record and the matched one."""
        return [XrefRow(self.entity, self.owner, self.owner_id, self.canonical_id),
                XrefRow(self.entity, self.system, self.system_id, self.canonical_id)]


def normalise_name(name: str | None) -> str:
    """A name reduced to what identifies it: no accents, case, punctuation or legal-form words."""
    if not name:
        return ""
    plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().casefold()
    # dots join abbreviations ("S.A." is "sa") before the rest of the punctuation splits words
    plain = plain.replace(".", "").replace("&", " and ")
    words = [w for w in re.split(r"[^a-z0-9]+", plain) if w and w not in _LEGAL_FORMS]
    return " ".join(words)


def _normalise_key(name: str, value: Any) -> str:
    text = str(value).strip().casefold()
    if name in ("vat_id", "gtin", "duns"):
        return re.sub(r"[^0-9a-z]", "", text)
    return re.sub(r"\s+", " ", text)


def _key_value(record: MasterRecord, name: str) -> str:
    value = attribute(record, name)
    return "" if value in (None, "") else _normalise_key(name, value)


def match_records(entity: str, held: Mapping[str, Sequence[MasterRecord]], links: Sequence[XrefRow],
                  ownership: EntityOwnership | None = None,
                  progress: Callable[[int], None] | None = None) -> list[Proposal]:
    """Proposals for every unlinked record of ``held`` (system -> records) outside the owner, best first."""
    systems = [s for s in (ownership.systems if ownership else held) if s in held]
    if not systems:
        return []
    owner = ownership.owner if ownership is not None and ownership.owner in held else systems[0]
    keys = ownership.match_keys() if ownership is not None else ("code", "vat_id", "gtin", "email")
    linked = {(r.system, r.system_id): r.canonical_id for r in links if r.entity == entity}
    owner_records = list(held[owner])
    index: dict[str, dict[str, list[MasterRecord]]] = {k: {} for k in keys}
    by_name: dict[str, list[MasterRecord]] = {}
    for record in owner_records:
        for key in keys:
            value = _key_value(record, key)
            if value:
                index[key].setdefault(value, []).append(record)
        by_name.setdefault(normalise_name(record.name), []).append(record)
    names = [n for n in by_name if n]

    def canonical(record: MasterRecord) -> str:
        return linked.get((owner, record.id)) or record.code or f"{owner}:{record.id}"

    proposals: list[Proposal] = []
    for system in systems:
        if system == owner:
            continue
        for record in held[system]:
            if progress is not None:
                progress(1)
            if (system, record.id) in linked:
                continue
            found = _by_keys(record, keys, index) or _by_name(record, by_name, names)
            if found is None:
                continue
            target, reason, confidence = found
            proposals.append(Proposal(entity, canonical(target), owner, target.id, system, record.id, reason,
                                      round(confidence, 3), f"{record.code or ''} {record.name or ''}".strip()))
    return sorted(proposals, key=lambda p: (-p.confidence, p.system, p.system_id))


def _by_keys(record: MasterRecord, keys: Sequence[str],
             index: Mapping[str, Mapping[str, list[MasterRecord]]]) -> tuple[MasterRecord, str, float] | None:
    for key in keys:
        value = _key_value(record, key)
        candidates = index[key].get(value, []) if value else []
        if len(candidates) == 1:
            return candidates[0], f"same {key} {value!r}", 1.0
        if len(candidates) > 1:  # the owner itself holds duplicates: a person must choose
            return candidates[0], f"same {key} {value!r} as {len(candidates)} records in the owner", 0.5
    return None


def _by_name(record: MasterRecord, by_name: Mapping[str, list[MasterRecord]],
             names: Sequence[str]) -> tuple[MasterRecord, str, float] | None:
    name = normalise_name(record.name)
    if not name:
        return None
    exact = by_name.get(name, [])
    if len(exact) == 1:
        return exact[0], f"same normalised name {name!r}", 0.85
    if len(exact) > 1:
        return exact[0], f"normalised name {name!r} shared by {len(exact)} records in the owner", 0.4
    close = difflib.get_close_matches(name, names, n=2, cutoff=_SIMILAR)
    if not close:
        return None
    ratio = difflib.SequenceMatcher(None, name, close[0]).ratio()
    if len(close) > 1:
        ratio *= 0.75  # two owner records look alike: less sure which one
    return by_name[close[0]][0], f"similar name {close[0]!r} ({ratio:.0%})", ratio * 0.8
