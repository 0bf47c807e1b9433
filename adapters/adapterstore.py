"""Small durable state an adapter keeps per system: the :class:`AdapterStore` protocol the journal's store
implements (:mod:`bus.journal.adapterstate`), and :class:`MemoryAdapterStore`, the in-memory one an adapter
holds until the bus binds the journal's.
"""

from __future__ import annotations

import threading
from typing import Protocol

__all__ = ["AdapterStore", "MemoryAdapterStore"]


class AdapterStore(Protocol):
    """Small durable state an adapter keeps per system: EDI control numbers per trading partner, interchanges
    awaiting their acknowledgement, a session it must resume. The bus gives each system one bound to the
    journal (:meth:`Adapter.bind_store`), so it survives restarts and is shared by every process of one bus.
    Names are the adapter's own (``"isa:ACME"``); values are short strings (JSON when structured)."""

    def next_number(self, name: str, *, start: int = 1, wrap: int | None = None) -> int:
        """Atomically take the next number of counter ``name`` (``start`` first; back to ``start`` after
        ``wrap``), so two processes never issue the same one."""
        ...

    def get(self, name: str) -> str | None:
        """The value stored under ``name``, or None."""
        ...

    def put(self, name: str, value: str | None) -> None:
        """Store ``value`` under ``name``; None removes it."""
        ...

    def items(self, prefix: str = "") -> list[tuple[str, str]]:
        """Every ``(name, value)`` whose name starts with ``prefix``, by name."""
        ...


class MemoryAdapterStore:
    """An :class:`AdapterStore` in memory: the default before the bus binds the journal's, and for tests."""

    def __init__(self) -> None:
        self._values: dict[str, str] = {}
        self._lock = threading.Lock()

    def next_number(self, name: str, *, start: int = 1, wrap: int | None = None) -> int:
        with self._lock:
            current = self._values.get(name)
            number = start if current is None else int(current) + 1
            if wrap is not None and number > wrap:
                number = start
            self._values[name] = str(number)
            return number

    def get(self, name: str) -> str | None:
        return self._values.get(name)

    def put(self, name: str, value: str | None) -> None:
        with self._lock:
            if value is None:
                self._values.pop(name, None)
            else:
                self._values[name] = value

    def items(self, prefix: str = "") -> list[tuple[str, str]]:
        return sorted((k, v) for k, v in self._values.items() if k.startswith(prefix))
