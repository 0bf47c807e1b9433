"""The ``sap`` adapter's settings schema (checked by ``ironbus lint`` before anything connects)."""

from __future__ import annotations

from typing import Any

__all__ = ["SETTINGS_SCHEMA"]

_DURATION: dict[str, Any] = {"oneOf": [{"type": "number", "exclusiveMinimum": 0},
                                       {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?(ms|s|m|h|d)$"}]}
_FIELDS: dict[str, Any] = {"type": "object", "description": "Fields (SAP names) every create of this document gets "
                                                            "unless the payload sets them."}
_FILTER: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": {
    "filter": {"type": "string", "description": "An OData $filter narrowing the list."},
    "code": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$",
             "description": "The property holding the code the other systems use (e.g. SearchTerm1, ProductOldID)."}}}

SETTINGS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["url", "auth"],
    "properties": {
        "url": {"type": "string", "pattern": "^https?://",
                "description": "The system's API host, e.g. https://my300000-api.s4hana.cloud.sap (no path)."},
        "service_root": {"type": "string", "default": "/sap/opu/odata/sap",
                         "description": "Path under which the OData V2 services live."},
        "sap_client": {"type": "string", "pattern": "^[0-9]{3}$",
                       "description": "The client (Mandant), sent as sap-client on every request (on-premise)."},
        "language": {"type": "string", "minLength": 2, "maxLength": 5,
                     "description": "Accept-Language for texts and messages, e.g. EN."},
        "auth": {
            "description": "The communication user (Basic) or OAuth 2.0 client credentials.",
            "oneOf": [
                {"type": "object", "additionalProperties": False, "required": ["type", "username", "password"],
                 "properties": {"type": {"const": "basic"}, "username": {"type": "string", "minLength": 1},
                                "password": {"type": "string", "minLength": 1}}},
                {"type": "object", "additionalProperties": False,
                 "required": ["type", "token_url", "client_id", "client_secret"],
                 "properties": {"type": {"const": "oauth2_client_credentials"},
                                "token_url": {"type": "string", "pattern": "^https?://"},
                                "client_id": {"type": "string", "minLength": 1},
                                "client_secret": {"type": "string", "minLength": 1},
                                "scope": {"type": "string"},
                                "client_auth": {"enum": ["basic", "body"], "default": "basic"}}},
            ],
        },
        "timeout": {**_DURATION, "description": "Seconds to wait for an answer (default 60)."},
        "verify_tls": {"type": ["boolean", "string"], "description": "false, or a CA bundle path."},
        "lock_messages": {"type": "array", "items": {"type": "string", "pattern": "^\\S+/\\S+$"},
                          "description": "More message class/number codes (e.g. ZSD/001) that mean 'locked, retry'."},
        "update_method": {"enum": ["PATCH", "MERGE"], "default": "PATCH",
                          "description": "MERGE for older Gateway releases that do not take PATCH."},
        "defaults": {"type": "object", "additionalProperties": False,
                     "properties": {name: _FIELDS for name in ("sales_order", "purchase_order",
                                                               "purchase_requisition")}},
        "poll": {"type": "object", "additionalProperties": False, "properties": {
            "overlap": {**_DURATION, "description": "How far each poll looks back before the watermark (default 5s)."},
            "page_size": {"type": "integer", "minimum": 1, "maximum": 5000, "default": 200},
            "max_records": {"type": "integer", "minimum": 1, "default": 5000,
                            "description": "Records one poll takes at most; the next poll goes on from there."},
            "start": {"type": "string", "format": "date-time",
                      "description": "ISO timestamp the first poll starts from (default: every document)."}}},
        "events": {"type": "object", "additionalProperties": False, "required": ["username", "password"],
                   "description": "The Basic credentials the Event Mesh webhook subscription sends.",
                   "properties": {"username": {"type": "string", "minLength": 1},
                                  "password": {"type": "string", "minLength": 8},
                                  "types": {"type": "array", "items": {"type": "string", "minLength": 1},
                                            "description": "Accepted event type prefixes (default sap.s4.beh.)."}}},
        "master_data": {"type": "object", "additionalProperties": False,
                        "description": "Narrow the lists `ironbus xref check` reads.",
                        "properties": {"customer": _FILTER, "material": _FILTER, "supplier": _FILTER}},
        "triggers": {"type": "object", "description": "Poll timing per trigger: {sales_orders_changed: {interval: "
                                                      "'30s'}} or {schedule: '*/5 * * * *'}."},
    },
}
