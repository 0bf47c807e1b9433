"""The ``dynamics`` adapter's settings schema."""

from __future__ import annotations

from typing import Any

from adapters.http.settings import SETTINGS_SCHEMA as HTTP_SCHEMA

__all__ = ["SETTINGS_SCHEMA"]

_DURATION: dict[str, Any] = HTTP_SCHEMA["properties"]["timeout"]["oneOf"][0]
_NAME: dict[str, Any] = {"type": "string", "pattern": "^[a-z_][a-z0-9_]*$"}

SETTINGS_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["url", "tenant_id", "client_id", "client_secret"],
    "properties": {
        "url": {"type": "string", "pattern": "^https?://",
                "description": "Environment URL, e.g. https://contoso.crm4.dynamics.com"},
        "tenant_id": {"type": "string", "minLength": 1, "description": "Entra ID tenant (directory) id or domain."},
        "client_id": {"type": "string", "minLength": 1, "description": "Application (client) id of the app "
                                                                      "registration behind the application user."},
        "client_secret": {"type": "string", "minLength": 1, "description": "Use ${DYNAMICS_SECRET}."},
        "token_url": {"type": "string", "pattern": "^https?://",
                      "description": "Default https://login.microsoftonline.com/<tenant_id>/oauth2/v2.0/token."},
        "scope": {"type": "string", "description": "Default <url>/.default."},
        "api_version": {"type": "string", "pattern": "^9\\.[0-9]$", "default": "9.2"},
        "return_representation": {"type": "boolean", "default": True,
                                  "description": "Send Prefer: return=representation: writes answer with the record."},
        "idempotency_key_field": {**_NAME, "description": "Column of an alternate key that receives the delivery's "
                                                          "idempotency key: creates become upserts on that key."},
        "atomic_batches": {"type": "boolean", "default": False,
                           "description": "A worker batch is one $batch change set (all or none) instead of "
                                          "independent requests."},
        "batch_size": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100,
                       "description": "Requests per $batch (Dataverse allows 1000)."},
        "triggers": {"type": "object", "additionalProperties": False, "properties": {
            "changes": {"type": "object", "additionalProperties": False, "properties": {
                "interval": {**_DURATION, "description": "How often the bus polls."},
                "schedule": {"type": "string", "description": "Cron expression (UTC) instead of an interval."},
                "entity_set": {**_NAME, "default": "salesorders",
                               "description": "Table with change tracking enabled, by entity set name."},
                "select": {"type": "array", "items": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                           "description": "Columns to read ($select); the key and versionnumber are added."},
                "id_field": {**_NAME, "description": "Primary key column (default: derived, salesorders -> "
                                                     "salesorderid)."},
                "page_size": {"type": "integer", "minimum": 1, "maximum": 5000, "default": 500},
                "max_pages": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 10,
                              "description": "Pages read per poll; the next page link is kept as the watermark."},
                "initial": {"enum": ["all", "skip"], "default": "all",
                            "description": "First poll: emit every existing row, or only changes from now on."}}},
        }},
        **{k: HTTP_SCHEMA["properties"][k] for k in ("timeout", "pool", "verify_tls", "transport")},
    },
}
