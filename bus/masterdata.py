"""Master-data consistency: compare what every system holds with the cross reference.

For each entity (customer, material, supplier) and each system whose adapter can list it, a record is

* **unlinked** when the xref has no canonical id for it;
* **missing** when a canonical id is linked in some systems but the system holds no linked record for it;
* **dangling** when the xref points at a system id the system no longer has;
* **inconsistent** when records linked to one canonical id disagree on their code or name (no ownership declared);
* **drift** when routes.yaml declares who owns the entity (``master_data:``) and a system's value of a compared
  attribute differs from the owner's (a name changed by hand in the SCM, a unit that differs, a supplier
  deactivated in its owner and still active elsewhere), reported by entity, system and field with both values;
* **outside_owner** when a record that no link explains sits in a system that does not own the entity: it was
  created in the wrong system (link it with ``ironbus xref match`` or create it in the owner).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from adapters.base import Adapter, MasterRecord
from bus.journal.records import XrefRow
from bus.ownership import EntityOwnership

__all__ = ["ENTITIES", "check_master_data"]

ENTITIES = ("customer", "material", "supplier")


def attribute(record: MasterRecord, name: str) -> Any:
    """A record's value of a canonical attribute (``code`` and ``name`` are fields of their own)."""
    if name == "code":
        return record.code
    if name in record.attributes:
        return record.attributes[name]
    return record.name if name == "name" else None


def check_master_data(adapters: Mapping[str, Adapter], links: Sequence[XrefRow],
                      entities: Sequence[str] | None = None,
                      ownership: Mapping[str, EntityOwnership] | None = None) -> dict[str, Any]:
    """A report ``{"summary": {entity: counts}, "problems": [...]}``; no problems means consistent.

    With ``ownership`` (routes.yaml ``master_data:``), records are compared attribute by attribute against the
    owner's, and unlinked records outside the owner are told apart from the owner's own new records.
    """
    problems: list[dict[str, Any]] = []
    summary: dict[str, dict[str, int]] = {}
    owners = ownership or {}
    for entity in entities or sorted(set(ENTITIES) | set(owners)):
        owned = owners.get(entity)
        held: dict[str, dict[str, MasterRecord]] = {}
        for system, adapter in adapters.items():
            listed = adapter.master_data(entity)
            if listed is not None:
                held[system] = {r.id: r for r in listed}
        linked = [r for r in links if r.entity == entity and r.system in held]
        by_system_id = {(r.system, r.system_id): r.canonical_id for r in linked}
        canon: dict[str, dict[str, MasterRecord | None]] = {}
        for r in linked:
            canon.setdefault(r.canonical_id, {})[r.system] = held[r.system].get(r.system_id)
            if r.system_id not in held[r.system]:
                problems.append({"entity": entity, "kind": "dangling", "canonical_id": r.canonical_id,
                                 "system": r.system, "system_id": r.system_id,
                                 "detail": "linked id not found in the system"})
        for system, records in held.items():
            for rid, rec in records.items():
                if (system, rid) not in by_system_id:
                    label = f"{rec.code or ''} {rec.name or ''}".strip()
                    if owned is not None and system != owned.owner and owned.owner in held:
                        problems.append({"entity": entity, "kind": "outside_owner", "system": system,
                                         "system_id": rid, "canonical_id": None,
                                         "detail": f"{label}: {entity} records are created in {owned.owner}, not "
                                                   f"{system}; link it with 'ironbus xref match' or create it in "
                                                   f"{owned.owner}"})
                    else:
                        problems.append({"entity": entity, "kind": "unlinked", "system": system, "system_id": rid,
                                         "canonical_id": None, "detail": label})
        for cid, per_system in canon.items():
            for system in held:
                if system not in per_system:
                    problems.append({"entity": entity, "kind": "missing", "canonical_id": cid, "system": system,
                                     "system_id": None, "detail": f"linked in {', '.join(sorted(per_system))} only"})
            if owned is not None:
                problems.extend(_drift(entity, cid, per_system, owned))
                continue
            present = [r for r in per_system.values() if r is not None]
            codes = {r.code for r in present if r.code}
            names = {r.name for r in present if r.name}
            if len(codes) > 1 or len(names) > 1:
                problems.append({"entity": entity, "kind": "inconsistent", "canonical_id": cid, "system": None,
                                 "system_id": None, "detail": f"codes {sorted(codes)} names {sorted(names)}"})
        summary[entity] = {"systems": len(held), "records": sum(len(v) for v in held.values()),
                           "canonical": len(canon),
                           "problems": sum(1 for p in problems if p["entity"] == entity)}
    return {"summary": summary, "problems": problems}


def _drift(entity: str, canonical_id: str, per_system: Mapping[str, MasterRecord | None],
           owned: EntityOwnership) -> list[dict[str, Any]]:
    """Where a system's compared attribute differs from the value of the system that owns that attribute."""
    out: list[dict[str, Any]] = []
    for name in owned.compare:
        source = per_system.get(owned.owner_of(name))
        if source is None:
            continue  # the owner holds no linked record: reported as missing/dangling already
        expected = attribute(source, name)
        if expected is None:
            continue  # the owner does not say: nothing to hold the others to
        for system, record in sorted(per_system.items()):
            if record is None or system == owned.owner_of(name):
                continue
            found = attribute(record, name)
            if found != expected:
                out.append({"entity": entity, "kind": "drift", "canonical_id": canonical_id, "system": system,
                            "system_id": record.id, "field": name, "expected": expected, "found": found,
                            "owner": owned.owner_of(name),
                            "detail": f"{name} is {found!r} in {system}, {expected!r} in its owner "
                                      f"{owned.owner_of(name)}"})
    return out
