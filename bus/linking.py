"""Master-data links the bus writes itself: a sync route with ``link: <entity>`` links, after each delivery,

* the record the target holds — the outcome's ``reference`` (the id the target gave or found) — and
* every id the mapped canonical document lists in ``system_ids`` (e.g. the owner's own record id)

to the route's key, the entity's canonical id. So a customer created in the CRM is linked in the CRM and in
the SCM as soon as the SCM has it, before an order of that customer needs the link.
"""

from __future__ import annotations

from typing import Any

from adapters.base import Outcome
from bus.journal.records import XrefRow
from bus.pipeline import Dispatch

__all__ = ["WHOLE_ROUTE", "links_for"]

#: The target name of a delivery that stands for a whole route: an event parked before any target was mapped
#: because a cross reference it needs was not linked yet (see Worker._wait_for_master_data).
WHOLE_ROUTE = "*"


def links_for(dispatch: Dispatch, outcome: Outcome) -> list[XrefRow]:
    """The xref rows one successful delivery makes, when its route says ``link:``; none otherwise."""
    entity = dispatch.route.config.link
    canonical = dispatch.event.key
    if entity is None or canonical is None:
        return []
    rows: list[XrefRow] = []
    ids: Any = dispatch.event.data.get("system_ids") if isinstance(dispatch.event.data, dict) else None
    if isinstance(ids, dict):
        rows.extend(XrefRow(entity, str(system), str(sid), canonical) for system, sid in ids.items()
                    if sid not in (None, "") and not isinstance(sid, dict | list))
    if outcome.reference:
        rows.append(XrefRow(entity, dispatch.target.config.system, str(outcome.reference), canonical))
    return rows
