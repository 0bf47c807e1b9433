"""UN/EDIFACT adapter (registry name ``edifact``): ORDERS, ORDCHG, ORDRSP, DESADV and CONTRL with trading
partners over any B2B transport. Shared machinery: :mod:`adapters.edi`; syntax: pydifact."""

from __future__ import annotations

from typing import Any, ClassVar

from adapters.edi.adapter import EdiAdapter
from adapters.edi.settings import settings_schema
from adapters.edi.standard import Standard
from adapters.edifact.standard import EDIFACT

__all__ = ["EdifactAdapter"]


class EdifactAdapter(EdiAdapter):
    """UN/EDIFACT purchasing messages with trading partners; see docs/adapters/edifact.md."""

    name = "edifact"
    summary = "UN/EDIFACT (ORDERS/ORDCHG/ORDRSP/DESADV, CONTRL) with trading partners over AS2, SFTP or folders"
    standard: ClassVar[Standard] = EDIFACT
    default_qualifier = ""
    settings_schema: ClassVar[dict[str, Any]] = settings_schema(
        "UN/EDIFACT interchanges with trading partners", {
            "syntax": {"type": "string", "pattern": "^UNO[A-Z]:[1-4]$", "default": "UNOC:3",
                       "description": "Syntax identifier and version (UNB S001), e.g. UNOC:3."},
            "message_versions": {"type": "object", "additionalProperties": {"type": "string",
                                                                              "pattern": "^[A-Z]:[0-9A-Z]+:[A-Z]+"},
                                 "description": "Message identifier after the type per message, e.g. "
                                                "{ORDERS: 'D:96A:UN:EAN008'}; default D:96A:UN."},
            "application_reference": {"type": "string", "description": "UNB 0026, when the partner asks for one."},
            "una": {"type": "boolean", "default": True, "description": "Write the UNA service string advice."},
            "always_contrl": {"type": "boolean", "default": False,
                              "description": "Send CONTRL even when the partner's UNB does not ask for one."},
        })
