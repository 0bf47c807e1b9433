"""The ``http`` adapter's settings: JSON Schema (for lint and docs) and the compiled form the adapter runs.

Integrator mistakes found here raise :class:`~bus.errors.ConfigError` naming the system and the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema

from adapters.http.errors import ErrorPolicy
from adapters.http.poll import POLL_SCHEMA
from adapters.http.pooled import PooledTransport
from adapters.http.template import Template, url_template
from adapters.http.transport import HttpxTransport, PoolLimits, Timeouts, Transport
from bus.config import parse_duration
from bus.errors import ConfigError
from bus.expr import Expression, compile_expression

__all__ = ["AUTH_SCHEMA", "SETTINGS_SCHEMA", "ClientSettings", "OperationConfig", "compile_jmespath",
           "make_transport", "parse_client_settings", "parse_operations", "validate_settings"]

_DURATION: dict[str, Any] = {"oneOf": [{"type": "number", "exclusiveMinimum": 0},
                                       {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?(ms|s|m|h|d)$"}]}
_CODES: dict[str, Any] = {"type": "array", "items": {"type": "integer", "minimum": 100, "maximum": 599}}

AUTH_SCHEMA: dict[str, Any] = {
    "description": "Credentials added to every request.",
    "oneOf": [
        {"type": "object", "additionalProperties": False, "required": ["type", "token"],
         "properties": {"type": {"const": "bearer"}, "token": {"type": "string", "minLength": 1}}},
        {"type": "object", "additionalProperties": False, "required": ["type", "username", "password"],
         "properties": {"type": {"const": "basic"}, "username": {"type": "string"}, "password": {"type": "string"}}},
        {"type": "object", "additionalProperties": False, "required": ["type", "name", "value"],
         "properties": {"type": {"const": "api_key"}, "name": {"type": "string", "minLength": 1},
                        "value": {"type": "string", "minLength": 1},
                        "in": {"enum": ["header", "query"], "default": "header"}}},
        {"type": "object", "additionalProperties": False,
         "required": ["type", "token_url", "client_id", "client_secret"],
         "properties": {"type": {"const": "oauth2_client_credentials"},
                        "token_url": {"type": "string", "pattern": "^https?://"},
                        "client_id": {"type": "string", "minLength": 1},
                        "client_secret": {"type": "string", "minLength": 1},
                        "scope": {"type": "string"}, "audience": {"type": "string"},
                        "client_auth": {"enum": ["body", "basic"], "default": "body",
                                        "description": "Send the client id/secret in the form body or as HTTP Basic."},
                        "extra_params": {"type": "object", "additionalProperties": {"type": "string"}}}},
    ],
}

_OPERATION: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["method", "path"],
    "properties": {
        "method": {"enum": ["GET", "POST", "PUT", "PATCH", "DELETE"]},
        "path": {"type": "string",
                 "description": "URL path under base_url; {{ jmespath }} placeholders read the payload."},
        "query": {"type": "object", "additionalProperties": {"type": "string"},
                  "description": "Query parameters; values are templates like the path."},
        "headers": {"type": "object", "additionalProperties": {"type": "string"},
                    "description": "Extra headers; values are templates like the path."},
        "body": {"type": "string",
                 "description": "'payload' (the whole payload, default for POST/PUT/PATCH), 'none' (default for "
                                "GET/DELETE), or a JMESPath expression on the payload."},
        "success": {**_CODES, "minItems": 1, "description": "Statuses that mean success (default: any 2xx)."},
        "result": {"type": "string", "description": "JMESPath on the JSON response giving the outcome's result."},
        "reference": {"type": "string",
                      "description": "JMESPath on the JSON response giving the record id (default: Location header)."},
    },
}

SETTINGS_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["base_url"],
    # a system delivers (operations), polls (polls), or both
    "anyOf": [{"required": ["operations"]}, {"required": ["polls"]}],
    "properties": {
        "base_url": {"type": "string", "pattern": "^https?://", "description": "e.g. https://api.example.com/v2"},
        "operations": {"type": "object", "minProperties": 1,
                       "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                       "additionalProperties": _OPERATION},
        "polls": {"type": "object", "minProperties": 1, "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                  "additionalProperties": POLL_SCHEMA,
                  "description": "Poll triggers: endpoints asked for changes since a watermark "
                                 "(docs/adapters/polling.md)."},
        "triggers": {"type": "object", "description": "Poll timing per trigger: {name: {interval: '1m'}} or "
                                                      "{name: {schedule: '*/5 * * * *'}}."},
        "auth": AUTH_SCHEMA,
        "headers": {"type": "object", "additionalProperties": {"type": "string"},
                    "description": "Headers sent with every request."},
        "timeout": {"description": "Seconds, or {connect, read, pool}.",
                    "oneOf": [_DURATION, {"type": "object", "additionalProperties": False,
                                          "properties": {"connect": _DURATION, "read": _DURATION, "pool": _DURATION}}]},
        "pool": {"type": "object", "additionalProperties": False,
                 "properties": {"max_connections": {"type": "integer", "minimum": 1, "maximum": 1000},
                                "keepalive": {**_DURATION, "description": "Close idle connections after this long."}}},
        "errors": {"type": "object", "additionalProperties": False,
                   "description": "Move status codes between transient (retry) and permanent (dead-letter).",
                   "properties": {"transient": _CODES, "permanent": _CODES}},
        "verify_tls": {"description": "false to skip certificate checks, or a CA bundle path.",
                       "type": ["boolean", "string"]},
        "transport": {"enum": ["pooled", "httpx"], "default": "pooled",
                      "description": "'pooled' (fast, default) or 'httpx' (honours HTTP(S)_PROXY)."},
        "health": {"type": "string", "description": "Path GET by health checks (default: only a TCP connect)."},
    },
}


def validate_settings(system: str, settings: Mapping[str, Any], schema: Mapping[str, Any]) -> None:
    """Raise ConfigError naming ``system`` and the offending field when ``settings`` break ``schema``."""
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(dict(settings)), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        best = jsonschema.exceptions.best_match(errors)
        path = "/".join(str(p) for p in best.absolute_path)
        raise ConfigError(f"system {system!r}: settings{'/' + path if path else ''}: {best.message}")


def compile_jmespath(system: str, field: str, source: str) -> Expression:
    """A body/result/reference expression, compiled once with the bus's compiler."""
    try:
        return compile_expression(source)  # the location is added once, below
    except ConfigError as exc:
        raise ConfigError(f"system {system!r}: settings/{field}: bad JMESPath {source!r}: {exc.message}") from None


@dataclass(frozen=True)
class ClientSettings:
    timeouts: Timeouts
    limits: PoolLimits
    policy: ErrorPolicy
    verify: bool | str
    transport: str


def parse_client_settings(settings: Mapping[str, Any]) -> ClientSettings:
    """Timeouts, pool, error overrides and TLS from validated settings (shared by vendor adapters)."""
    timeout = settings.get("timeout", 30)
    if isinstance(timeout, Mapping):
        timeouts = Timeouts(connect=parse_duration(timeout.get("connect", 5)),
                            read=parse_duration(timeout.get("read", 30)), pool=parse_duration(timeout.get("pool", 30)))
    else:
        seconds = parse_duration(timeout)
        timeouts = Timeouts(connect=min(seconds, 5.0), read=seconds, pool=seconds)
    pool = settings.get("pool") or {}
    limits = PoolLimits(max_connections=int(pool.get("max_connections", 20)),
                        keepalive=parse_duration(pool.get("keepalive", 30)))
    errors = settings.get("errors") or {}
    policy = ErrorPolicy.with_overrides(errors.get("transient", ()), errors.get("permanent", ()))
    return ClientSettings(timeouts, limits, policy, settings.get("verify_tls", True),
                          settings.get("transport", "pooled"))


def make_transport(cs: ClientSettings) -> Transport:
    """The transport the settings ask for: the pooled standard-library one unless 'httpx' is named."""
    if cs.transport == "httpx":
        return HttpxTransport(cs.timeouts, cs.limits, cs.verify)
    return PooledTransport(cs.timeouts, cs.limits, cs.verify)


@dataclass(frozen=True)
class OperationConfig:
    name: str
    method: str
    path: Template
    query: dict[str, Template]
    headers: dict[str, Template]
    body: str | Any  # "payload", "none", or a compiled JMESPath expression
    success: frozenset[int] | None
    result: Any | None
    reference: Any | None


def parse_operations(system: str, doc: Mapping[str, Any]) -> dict[str, OperationConfig]:
    """Compile the ``operations:`` block; template and JMESPath errors name the operation and field."""
    out: dict[str, OperationConfig] = {}
    for name, op in doc.items():
        where = f"operations/{name}"

        def template(field: str, text: str, where: str = where) -> Template:
            return url_template(text, f"system {system!r}: settings/{where}/{field}")

        method = op["method"]
        body = op.get("body", "payload" if method in ("POST", "PUT", "PATCH") else "none")
        out[name] = OperationConfig(
            name=name, method=method, path=template("path", op["path"]),
            query={k: template(f"query/{k}", v) for k, v in (op.get("query") or {}).items()},
            headers={k: template(f"headers/{k}", v) for k, v in (op.get("headers") or {}).items()},
            body=body if body in ("payload", "none") else compile_jmespath(system, f"{where}/body", body),
            success=frozenset(op["success"]) if "success" in op else None,
            result=compile_jmespath(system, f"{where}/result", op["result"]) if "result" in op else None,
            reference=compile_jmespath(system, f"{where}/reference", op["reference"]) if "reference" in op else None,
        )
    return out
