"""A recording stub adapter: accepts any operation and remembers every call.

Integrators use it in their own route tests (``ironbus test`` replaces every target with one), and the
bus's own tests use it as a sink. Settings can make it fail, to exercise retries and dead letters.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, ClassVar

from adapters.base import Adapter, Call, Outcome
from bus.errors import PermanentError, TransientError

__all__ = ["StubAdapter"]


class StubAdapter(Adapter):
    """Records calls; ``settings.fail`` = ``transient`` | ``permanent`` makes every call fail that way."""

    name: ClassVar[str] = "stub"
    summary: ClassVar[str] = "Records what it is sent; for tests and dry runs (accepts any operation)"
    settings_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "operations": {"type": "array", "items": {"type": "string"},
                           "description": "Operations to accept; any operation when left out."},
            "fail": {"enum": ["none", "transient", "permanent"], "default": "none"},
            "result": {"description": "Returned as the outcome's result (becomes a follow-up event's data)."},
        },
    }
    accepts_any_operation: ClassVar[bool] = True
    #: Routes may consume any ``system.trigger`` of a stub system: events arrive by ``ironbus send``.
    accepts_any_trigger: ClassVar[bool] = True

    def __init__(self, system: str, settings: Mapping[str, Any]) -> None:
        super().__init__(system, settings)
        self.calls: list[tuple[str, Call]] = []
        self._lock = threading.Lock()

    def accepts(self, operation_name: str) -> bool:
        allowed = self.settings.get("operations")
        return allowed is None or operation_name in allowed

    def call(self, operation_name: str, call: Call) -> Outcome:
        fail = self.settings.get("fail", "none")
        if fail == "transient":
            raise TransientError(f"{self.system}.{operation_name}: stub set to fail transiently")
        if fail == "permanent":
            raise PermanentError(f"{self.system}.{operation_name}: stub set to fail permanently")
        with self._lock:
            self.calls.append((operation_name, call))
        return Outcome(result=self.settings.get("result", call.payload), reference=f"stub-{len(self.calls)}")
