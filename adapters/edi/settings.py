"""Settings schema of the EDI adapters: the system's own settings and one entry per trading partner, with
the settings a standard adds (X12 separators and versions, EDIFACT syntax and message versions)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.b2b import transport_schema

__all__ = ["partner_schema", "settings_schema"]


def partner_schema(extra: Mapping[str, Any]) -> dict[str, Any]:
    """JSON Schema of one partner entry: the shared settings plus a standard's own."""
    return {
        "type": "object", "additionalProperties": False, "required": ["id", "transport"],
        "properties": {
            "id": {"type": "string", "minLength": 1, "description": "The partner's interchange id (ISA08 / UNB "
                                                                     "recipient) as agreed with it."},
            "qualifier": {"type": "string", "description": "Qualifier of the partner's id (ISA07 / UNB 0007)."},
            "our_id": {"type": "string", "minLength": 1, "description": "Our id towards this partner, when it "
                                                                        "differs from the system's 'our_id'."},
            "our_qualifier": {"type": "string", "description": "Qualifier of our id towards this partner."},
            "transport": transport_schema(),
            "acknowledge": {"type": "boolean", "default": True,
                            "description": "Send a 997 / CONTRL for every interchange received from it."},
            "expect_ack": {"type": "boolean", "default": True,
                           "description": "Wait for its 997 / CONTRL and resend interchanges it leaves unanswered."},
            "ack_timeout": {"type": "number", "exclusiveMinimum": 0, "default": 86400,
                            "description": "Seconds to wait for an acknowledgement before resending."},
            "ack_retries": {"type": "integer", "minimum": 0, "default": 2,
                            "description": "Resends before the interchange is reported overdue."},
            "test": {"type": "boolean", "default": False, "description": "Mark interchanges as test data."},
            "extra_segments": {"type": "array", "items": {"type": "string", "pattern": "^[A-Z][A-Z0-9]{1,2}$"},
                               "description": "Segments this partner uses beyond the standard tables."},
            **extra,
        },
    }


def settings_schema(summary: str, partner_extra: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "type": "object", "additionalProperties": False, "required": ["our_id", "partners"],
        "description": summary,
        "properties": {
            "our_id": {"type": "string", "minLength": 1, "description": "Our interchange sender id."},
            "our_qualifier": {"type": "string", "description": "Qualifier of our id (X12 ISA05, EDIFACT 0007)."},
            "partners": {"type": "object", "minProperties": 1, "description": "Trading partners by name (the "
                         "name a mapping's 'partner' gives, e.g. from xref_to).",
                         "additionalProperties": partner_schema(partner_extra)},
            "triggers": {"type": "object", "additionalProperties": False,
                         "description": "Timing of the poll trigger, e.g. {received: {interval: 30s}} (default 60 s).",
                         "properties": {"received": {
                             "type": "object", "additionalProperties": False,
                             "properties": {"interval": {"type": ["string", "number"]},
                                            "schedule": {"type": "string"}}}}},
        },
    }
