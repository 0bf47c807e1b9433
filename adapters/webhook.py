"""A generic inbound webhook system: any vendor that POSTs JSON, XML or a form to a URL.

One trigger, ``received``, served at ``POST /hooks/{system}/received`` (plus ``/{token}`` for the token
scheme). The request is verified with the configured signature scheme *before* the body is parsed (the
signature covers the raw bytes), then parsed by ``content_type``, optionally split into one payload per
element by a JMESPath ``split`` expression; ``key`` (JMESPath) gives each payload's business key::

    systems:
      erp:
        adapter: webhook
        settings:
          signature: {scheme: frappe, secret: "${ERP_WEBHOOK_SECRET}"}
          content_type: json
          key: name
      crm:
        adapter: webhook
        settings:
          signature: {scheme: hubspot-v3, secret: "${HUBSPOT_CLIENT_SECRET}"}
          split: "[*]"              # HubSpot POSTs a JSON array of events
          key: "to_string(objectId)"
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar
from urllib.parse import parse_qs

import orjson

from adapters.base import Adapter, WebhookRequest, trigger
from adapters.signatures import SCHEMES, Verifier
from bus.errors import DecodeError, MappingError, WebhookRejected
from bus.expr import Expression, compile_expression
from bus.mediatypes import MEDIA_TYPES, media_type_allowed
from bus.xmldict import xml_to_dict

__all__ = ["WebhookAdapter"]

_DURATION = {"oneOf": [{"type": "number", "minimum": 0},
                       {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?(ms|s|m|h|d)$"}]}


class WebhookAdapter(Adapter):
    """Receives webhooks from any vendor; verifies, parses and splits them into payloads."""

    name: ClassVar[str] = "webhook"
    #: verifying and parsing is quick CPU work: the server runs it on its event loop, no thread hop
    webhook_blocking: ClassVar[bool] = False
    summary: ClassVar[str] = "Generic inbound webhook (JSON/XML/form; HMAC, HubSpot v3, Frappe or URL-token signatures)"
    settings_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "signature": {
                "type": "object",
                "additionalProperties": False,
                "description": "How requests are authenticated. 'none' accepts any caller: use it only behind "
                               "a gateway that authenticates.",
                "properties": {
                    "scheme": {"enum": list(SCHEMES), "default": "none"},
                    "secret": {"type": "string", "description": "Shared secret or token; use ${ENV}."},
                    "header": {"type": "string", "description": "Signature header (hmac-sha256), or token "
                               "header (token; default: token as the last URL path segment)."},
                    "encoding": {"enum": ["hex", "base64"], "default": "hex"},
                    "prefix": {"type": "string", "description": "Text before the digest, e.g. 'sha256='."},
                    "timestamp_header": {"type": "string", "description": "Header with the signed epoch "
                                         "timestamp (hmac-sha256 signs timestamp + '.' + body)."},
                    "tolerance": {**_DURATION, "default": 300,
                                  "description": "Largest allowed clock difference, either direction."},
                    "allow_legacy": {"type": "boolean", "default": False,
                                     "description": "hubspot-v3: also accept v1/v2 signatures (no replay "
                                                    "protection)."},
                },
                "required": ["scheme"],
            },
            "content_type": {"enum": ["json", "xml", "form"], "default": "json"},
            "split": {"type": "string", "description": "JMESPath giving a list: one event per element."},
            "key": {"type": "string", "description": "JMESPath giving each payload's business key."},
        },
    }

    def __init__(self, system: str, settings: Mapping[str, Any]) -> None:
        super().__init__(system, settings)
        where = f"systems.{system}.settings"
        self.verifier = Verifier.from_settings(self.settings.get("signature"), where=f"{where}.signature")
        self.content_type: str = self.settings.get("content_type", "json")
        self.content_types = MEDIA_TYPES[self.content_type]
        split = self.settings.get("split")
        key = self.settings.get("key")
        self.split: Expression | None = compile_expression(split, f"{where}.split") if split else None
        self.key: Expression | None = compile_expression(key, f"{where}.key") if key else None

    # -- what the webhook server asks (see bus.webhooks.endpoints_for) ---------------------------------
    def webhook_key(self, trigger_name: str) -> Callable[[Any], str | None] | None:
        """The business-key function for payloads of ``trigger_name`` (None without a ``key`` setting)."""
        return self.key_of if self.key is not None else None

    def webhook_content_types(self, trigger_name: str) -> tuple[str, ...]:
        """Media types accepted in ``Content-Type`` (a request without the header is accepted)."""
        return self.content_types

    def key_of(self, payload: Any) -> str | None:
        """The business key of one payload; raises :class:`~bus.errors.MappingError` when it cannot be read."""
        if self.key is None:
            return None
        value = self.key.search(payload)
        return None if value is None else str(value)

    # -- the trigger -----------------------------------------------------------------------------------
    @trigger("received", kind="webhook", description="A verified inbound webhook request")
    def received(self, request: WebhookRequest) -> list[Any]:
        """Verify, parse and split one request; raises ``SignatureError`` (401) or ``WebhookRejected``."""
        self.verifier.verify(request)
        if not media_type_allowed(request.headers.get("content-type"), self.content_types):
            raise WebhookRejected(f"Content-Type {request.headers.get('content-type', '')[:100]!r} not accepted; "
                                  f"this endpoint expects {self.content_type}", status=415,
                                  reason="unsupported_media_type")
        document = self._parse(request.body)
        if self.split is None:
            return [document]
        try:
            parts = self.split.search(document)
        except MappingError as exc:
            raise WebhookRejected(f"split: {exc}", reason="malformed_body") from None
        if parts is None:
            raise WebhookRejected(f"split expression {self.split.text!r} found nothing in the body",
                                  reason="malformed_body")
        return list(parts) if isinstance(parts, list) else [parts]

    def _parse(self, body: bytes) -> Any:
        try:
            if self.content_type == "json":
                return orjson.loads(body)
            if self.content_type == "xml":
                return xml_to_dict(body, source=f"webhook {self.system}", forbid_dtd=True)
            return _form(body)
        except orjson.JSONDecodeError as exc:
            raise WebhookRejected(f"body is not valid JSON: {exc}", reason="malformed_body") from None
        except (DecodeError, UnicodeDecodeError) as exc:
            raise WebhookRejected(f"body is not valid {self.content_type}: {exc}", reason="malformed_body") from None


def _form(body: bytes) -> dict[str, Any]:
    # A field sent once is a string, a repeated one a list, as web frameworks present forms.
    fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False, errors="strict")
    return {name: values[0] if len(values) == 1 else values for name, values in fields.items()}
