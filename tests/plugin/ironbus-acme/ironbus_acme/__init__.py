"""ironbus adapter for the (fictional) ACME widget service: what a third-party plug-in looks like."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from adapters.base import Adapter, Call, Outcome, operation
from bus.errors import PermanentError

__all__ = ["AcmeAdapter"]


class AcmeAdapter(Adapter):
    """Creates widgets; this test double appends each one to a JSON Lines file (``settings.sink``)."""

    name: ClassVar[str] = "acme"
    summary: ClassVar[str] = "ACME widgets"
    settings_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["sink"],
        "properties": {"sink": {"type": "string", "description": "File the widgets are appended to."}},
    }

    def __init__(self, system: str, settings: Mapping[str, Any]) -> None:
        super().__init__(system, settings)
        self._lock = threading.Lock()

    @operation("create_widget", description="Create one widget")
    def create_widget(self, call: Call) -> Outcome:
        if not isinstance(call.payload, dict) or "name" not in call.payload:
            raise PermanentError("acme: a widget needs a 'name'")
        with self._lock, Path(self.settings["sink"]).open("a") as sink:
            sink.write(json.dumps({"name": call.payload["name"], "key": call.idempotency_key}) + "\n")
        return Outcome(result={"widget": call.payload["name"]}, reference=f"W-{call.payload['name']}")
