"""EDI ANSI X12 adapter (registry name ``x12``): 850, 860, 855, 865, 856 and 997 with trading partners over
any B2B transport. The shared machinery is :mod:`adapters.edi`; X12 specifics are :mod:`adapters.x12.standard`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from adapters.edi.adapter import EdiAdapter
from adapters.edi.settings import settings_schema
from adapters.edi.standard import Standard
from adapters.x12.standard import X12

__all__ = ["X12Adapter"]

_SEPARATOR = {"type": "string", "minLength": 1, "maxLength": 1}


class X12Adapter(EdiAdapter):
    """ANSI X12 purchasing documents with trading partners; see docs/adapters/x12.md."""

    name = "x12"
    summary = "EDI ANSI X12 (850/860/855/865/856, 997) with trading partners over AS2, SFTP or folders"
    standard: ClassVar[Standard] = X12
    default_qualifier = "ZZ"
    settings_schema: ClassVar[dict[str, Any]] = settings_schema(
        "ANSI X12 interchanges with trading partners", {
            "version": {"type": "string", "pattern": "^[0-9]{5}$", "default": "00401",
                        "description": "Interchange control version (ISA12)."},
            "group_version": {"type": "string", "default": "004010",
                              "description": "Version/release of the functional group (GS08), e.g. 004010VICS."},
            "application_id": {"type": "string", "description": "Our application code (GS02); default our_id."},
            "partner_application_id": {"type": "string",
                                       "description": "The partner's application code (GS03); default its id."},
            "request_ta1": {"type": "boolean", "default": False,
                            "description": "Ask for an interchange acknowledgement (ISA14 = 1)."},
            "separators": {"type": "object", "additionalProperties": False,
                           "description": "Separators we write (received interchanges declare their own).",
                           "properties": {"element": _SEPARATOR, "component": _SEPARATOR, "segment": _SEPARATOR,
                                          "repetition": _SEPARATOR}},
        })
