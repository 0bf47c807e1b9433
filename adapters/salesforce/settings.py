"""The ``salesforce`` adapter's settings schema (checked by ``ironbus lint`` before anything connects)."""

from __future__ import annotations

from typing import Any

from adapters.http.settings import SETTINGS_SCHEMA as HTTP_SCHEMA

__all__ = ["SETTINGS_SCHEMA"]

_DURATION: dict[str, Any] = HTTP_SCHEMA["properties"]["timeout"]["oneOf"][0]
_NAME: dict[str, Any] = {"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9_]*$"}
_TIMING: dict[str, Any] = {
    "interval": {**_DURATION, "description": "How often the bus polls this trigger."},
    "schedule": {"type": "string", "description": "Cron expression (UTC) instead of an interval."},
}

SETTINGS_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["login_url", "auth"],
    "properties": {
        "login_url": {"type": "string", "pattern": "^https?://",
                      "description": "The org's My Domain URL (https://acme.my.salesforce.com): the token endpoint. "
                                     "API calls go to the instance_url the token answer names."},
        "auth": {"description": "How the bus logs in: a connected app / External Client App.", "oneOf": [
            {"type": "object", "additionalProperties": False, "required": ["type", "client_id", "username"],
             "oneOf": [{"required": ["private_key"]}, {"required": ["private_key_file"]}],
             "properties": {
                 "type": {"const": "jwt_bearer"},
                 "client_id": {"type": "string", "minLength": 1, "description": "Consumer key of the app."},
                 "username": {"type": "string", "minLength": 1, "description": "The integration user (JWT sub)."},
                 "private_key": {"type": "string", "minLength": 1,
                                 "description": "RSA private key (PEM) whose certificate is on the app; use ${VAR}."},
                 "private_key_file": {"type": "string", "minLength": 1, "description": "Path of that PEM file."},
                 "audience": {"type": "string", "pattern": "^https://",
                              "description": "JWT aud: https://login.salesforce.com, https://test.salesforce.com "
                                             "or the My Domain URL (default: login_url)."}}},
            {"type": "object", "additionalProperties": False, "required": ["type", "client_id", "client_secret"],
             "properties": {
                 "type": {"const": "client_credentials"},
                 "client_id": {"type": "string", "minLength": 1},
                 "client_secret": {"type": "string", "minLength": 1, "description": "Use ${SALESFORCE_SECRET}."}}},
        ]},
        "api_version": {"type": "string", "pattern": "^[0-9]{2}\\.0$", "default": "66.0"},
        "session_lifetime": {**_DURATION, "default": "2h",
                             "description": "The session timeout of the app/org: the token is renewed before it ends."},
        "organization_id": {"type": "string", "pattern": "^[A-Za-z0-9]{15}([A-Za-z0-9]{3})?$",
                            "description": "The org id (00D…): outbound messages from any other org are refused; "
                                           "default for Pub/Sub is the id the token answer names."},
        "all_or_none": {"type": "boolean", "default": False,
                        "description": "Composite requests roll back entirely when one write fails."},
        "composite_size": {"type": "integer", "minimum": 1, "maximum": 25, "default": 25,
                           "description": "Writes per /composite request (Salesforce allows 25)."},
        "idempotency_field": {**_NAME, "description": "External-id field (text, unique) that receives the "
                                                      "delivery's idempotency key: creates become upserts on it."},
        "api_reserve": {"type": "number", "minimum": 0, "maximum": 0.9, "default": 0.05,
                        "description": "Share of the daily API allocation left to others: past it, writes wait."},
        "call_options_client": {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$", "default": "ironbus",
                                "description": "Sent as Sforce-Call-Options client=…: change events caused by the "
                                               "bus carry it in changeOrigin (see ignore_own_changes)."},
        "pubsub_url": {"type": "string", "pattern": "^grpcs?://", "default": "grpcs://api.pubsub.salesforce.com:7443"},
        "outbound_messages": {"type": "object", "additionalProperties": False, "properties": {
            "action_ids": {"type": "array", "items": {"type": "string", "minLength": 15},
                           "description": "Accept only these outbound message ids (default: any of the org)."}}},
        "triggers": {"type": "object", "additionalProperties": False, "properties": {
            "change_events": {"type": "object", "additionalProperties": False, "properties": {
                **_TIMING,
                "topic": {"type": "string", "pattern": "^/data/[A-Za-z0-9_]+$",
                          "description": "/data/OrderChangeEvent, /data/ChangeEvents or a custom channel "
                                         "/data/Orders__chn."},
                "batch": {"type": "integer", "minimum": 1, "maximum": 100, "default": 100,
                          "description": "Events asked for per poll (FetchRequest.num_requested)."},
                "wait": {**_DURATION, "default": "2s", "description": "How long a poll waits for events."},
                "start": {"enum": ["latest", "earliest"], "default": "latest",
                          "description": "Where the very first subscription starts (no replay id stored yet)."},
                "replay_expired": {"enum": ["fail", "earliest"], "default": "fail",
                                   "description": "The stored replay id is past the 72 h retention: stop with an "
                                                  "error, or resume at the oldest retained event."},
                "split_records": {"type": "boolean", "default": True,
                                  "description": "One payload per record id of a change event."},
                "ignore_own_changes": {"type": "boolean", "default": True,
                                       "description": "Skip changes whose changeOrigin carries our client tag."},
                "read_record": {"oneOf": [{"type": "boolean"},
                                          {"type": "array", "items": {"type": "string", "minLength": 1}}],
                                "default": False,
                                "description": "Read the full record (or these fields; a child subquery such as "
                                               "'(SELECT Id, Quantity FROM OrderItems)' reads by SOQL) and merge "
                                               "it in: an UPDATE event carries only the changed fields."}}},
            "modified_records": {"type": "object", "additionalProperties": False, "properties": {
                **_TIMING,
                "sobject": {**_NAME, "default": "Order"},
                "fields": {"type": "array", "items": {"type": "string", "minLength": 1},
                           "description": "SOQL select items; a child subquery such as "
                                          "'(SELECT Id, Quantity FROM OrderItems)' is allowed."},
                "where": {"type": "string", "description": "Extra SOQL condition, ANDed."},
                "start": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}T",
                          "description": "First watermark (SystemModstamp), ISO 8601 UTC."},
                "overlap": {**_DURATION, "default": "5s", "description": "Re-read window for late commits."},
                "max_records": {"type": "integer", "minimum": 1, "maximum": 50000, "default": 2000}}},
            "outbound_messages": {"type": "object", "additionalProperties": False, "properties": {}},
        }},
        **{k: HTTP_SCHEMA["properties"][k] for k in ("timeout", "pool", "verify_tls", "transport")},
    },
}
