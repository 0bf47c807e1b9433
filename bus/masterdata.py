"""Master-data consistency: compare what every system holds with the cross reference.

For each entity (customer, material, supplier) and each system whose adapter can list it, a record is

* **unlinked** when the xref has no canonical id for it;
* **missing** when a canonical id is linked in some systems but the system holds no linked record for it;
* **dangling** when the xref points at a system id the system no longer has;
* **inconsistent** when records linked to one canonical id disagree on their code or name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from adapters.base import Adapter, MasterRecord
from bus.journal.records import XrefRow

__all__ = ["ENTITIES", "check_master_data"]

ENTITIES = ("customer", "material", "supplier")


def check_master_data(adapters: Mapping[str, Adapter], links: Sequence[XrefRow],
                      entities: Sequence[str] | None = None) -> dict[str, Any]:
    """A report ``{"summary": {entity: counts}, "problems": [...]}``; no problems means consistent."""
    problems: list[dict[str, Any]] = []
    summary: dict[str, dict[str, int]] = {}
    for entity in entities or ENTITIES:
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
                    problems.append({"entity": entity, "kind": "unlinked", "system": system, "system_id": rid,
                                     "canonical_id": None, "detail": f"{rec.code or ''} {rec.name or ''}".strip()})
        for cid, per_system in canon.items():
            for system in held:
                if system not in per_system:
                    problems.append({"entity": entity, "kind": "missing", "canonical_id": cid, "system": system,
                                     "system_id": None, "detail": f"linked in {', '.join(sorted(per_system))} only"})
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
