"""The master-data cross-reference: the same customer, material or supplier under each system's own id.

Every entity has one *canonical* id on the bus; each system knows it under its own id. Mappings translate
with ``xref('customer', 'crm', party)`` (system id -> canonical) and ``xref_to('customer', 'scm', id)``
(canonical -> that system's id). :class:`XrefStore` is the contract; :class:`MemoryXref` keeps it in memory
(tests, ``ironbus map``, small deployments); a durable store implements the same three methods.

Ids are always strings: an integer id from a JSON payload is converted with ``str()`` so ``42`` and ``"42"``
name the same record.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

__all__ = ["MemoryXref", "XrefStore", "normalise_id"]


def normalise_id(value: Any) -> str:
    """The string form of an id: ``42`` and ``42.0`` become ``'42'``; strings are kept as they are."""
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@runtime_checkable
class XrefStore(Protocol):
    """Where canonical ids and system ids are linked."""

    def lookup(self, entity: str, system: str, system_id: str) -> str | None:
        """The canonical id of ``system``'s record ``system_id``, or None when it is not linked."""
        ...

    def reverse(self, entity: str, system: str, canonical_id: str) -> str | None:
        """``system``'s own id for the canonical record ``canonical_id``, or None when it is not linked."""
        ...

    def link(self, entity: str, canonical_id: str, system: str, system_id: str) -> None:
        """Record that ``system`` knows the canonical record ``canonical_id`` as ``system_id``."""
        ...


class MemoryXref:
    """An in-memory :class:`XrefStore`, safe to share between threads.

    Several system ids may point at one canonical id (duplicates merged in a CRM); the reverse direction
    answers the id linked most recently.
    """

    def __init__(self) -> None:
        # Readers do single dict.get() calls, which are atomic, so only writers take the lock; lookups
        # sit on the mapping hot path and must not contend.
        self._lock = threading.Lock()
        self._forward: dict[tuple[str, str], dict[str, str]] = {}
        self._backward: dict[tuple[str, str], dict[str, str]] = {}

    def lookup(self, entity: str, system: str, system_id: str) -> str | None:
        table = self._forward.get((entity, system))
        if table is None:
            return None
        return table.get(system_id if type(system_id) is str else normalise_id(system_id))

    def reverse(self, entity: str, system: str, canonical_id: str) -> str | None:
        table = self._backward.get((entity, system))
        if table is None:
            return None
        return table.get(canonical_id if type(canonical_id) is str else normalise_id(canonical_id))

    def link(self, entity: str, canonical_id: str, system: str, system_id: str) -> None:
        canonical_id, system_id = normalise_id(canonical_id), normalise_id(system_id)
        with self._lock:
            forward = self._forward.setdefault((entity, system), {})
            backward = self._backward.setdefault((entity, system), {})
            previous = forward.get(system_id)
            if previous is not None and previous != canonical_id and backward.get(previous) == system_id:
                # The system id moved to another canonical record: the old record no longer has it.
                del backward[previous]
            forward[system_id] = canonical_id
            backward[canonical_id] = system_id

    @classmethod
    def from_dict(cls, doc: Mapping[str, Mapping[str, Mapping[Any, Any]]]) -> MemoryXref:
        """Build a store from ``{entity: {system: {system_id: canonical_id}}}``."""
        store = cls()
        for entity, systems in doc.items():
            for system, ids in systems.items():
                for system_id, canonical_id in ids.items():
                    store.link(entity, normalise_id(canonical_id), system, normalise_id(system_id))
        return store

    def to_dict(self) -> dict[str, dict[str, dict[str, str]]]:
        """Every link as ``{entity: {system: {system_id: canonical_id}}}`` (the form :meth:`from_dict` reads)."""
        out: dict[str, dict[str, dict[str, str]]] = {}
        with self._lock:
            for (entity, system), table in self._forward.items():
                out.setdefault(entity, {})[system] = dict(table)
        return out
