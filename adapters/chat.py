"""Chat notifications through incoming webhooks: the ``post`` operation (registry name ``chat_webhook``).

``style`` picks the body the webhook expects:

* ``slack`` — ``{"text": ...}`` (Slack incoming webhooks, and Mattermost / Rocket.Chat, which accept it too);
* ``teams`` — a message with one Adaptive Card (Teams Workflows "post to a channel when a webhook request is
  received");
* ``teams_legacy`` — a MessageCard (the retired Office 365 connector webhooks, still run by some tenants).

The text and optional title come from the payload (``{text, title?}``) or from ``{{ jmespath }}`` templates in
the route target's ``args`` or the system settings (see :class:`adapters.templates.Template`).

Errors: connection failures, timeouts, 408/425/429/5xx are transient (``Retry-After`` honoured); other
statuses are permanent (a revoked webhook answers 403/404/410: retrying will not bring it back).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, ClassVar

import httpx
import orjson
import structlog

from adapters.base import Adapter, Call, Health, Outcome, operation
from adapters.http.errors import DEFAULT_TRANSIENT, parse_retry_after
from adapters.templates import Template, cached_template
from bus.errors import ConfigError, PermanentError, TransientError

__all__ = ["ChatWebhookAdapter", "chat_body"]

log = structlog.get_logger(__name__)

_EXCERPT = 200


def chat_body(style: str, text: str, title: str | None) -> dict[str, Any]:
    """The JSON body a webhook of ``style`` expects for one message."""
    if style == "slack":
        return {"text": f"*{title}*\n{text}" if title else text}
    if style == "teams_legacy":
        card: dict[str, Any] = {"@type": "MessageCard", "@context": "https://schema.org/extensions",
                                "summary": (title or text)[:80], "text": text}
        if title:
            card["title"] = title
        return card
    blocks: list[dict[str, Any]] = []
    if title:
        blocks.append({"type": "TextBlock", "text": title, "weight": "Bolder", "size": "Medium", "wrap": True})
    blocks.append({"type": "TextBlock", "text": text, "wrap": True})
    return {"type": "message", "attachments": [{
        "contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None,
        "content": {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json", "type": "AdaptiveCard",
                    "version": "1.4", "body": blocks},
    }]}


class ChatWebhookAdapter(Adapter):
    """Posts messages to a Slack- or Teams-style incoming webhook."""

    name: ClassVar[str] = "chat_webhook"
    summary: ClassVar[str] = "Post a message to a Slack or Microsoft Teams incoming webhook"
    settings_schema: ClassVar[Mapping[str, Any]] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "required": ["url"],
        "properties": {
            "url": {"type": "string", "pattern": "^https?://",
                    "description": "The webhook URL. It is a secret: use ${CHAT_WEBHOOK_URL}."},
            "style": {"enum": ["slack", "teams", "teams_legacy"], "default": "slack"},
            "text": {"type": "string", "description": "Default text template, e.g. 'Order {{ order_id }} moved'."},
            "title": {"type": "string", "description": "Default title template."},
            "timeout": {"type": "number", "exclusiveMinimum": 0, "default": 10},
        },
    }

    def __init__(self, system: str, settings: Mapping[str, Any]) -> None:
        super().__init__(system, settings)
        self.url: str = self.settings["url"]
        self.style: str = self.settings.get("style", "slack")
        self.timeout = float(self.settings.get("timeout", 10))
        where = f"systems.{system}.settings"
        self.text = Template(self.settings["text"], f"{where}.text") if "text" in self.settings else None
        self.title = Template(self.settings["title"], f"{where}.title") if "title" in self.settings else None
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    def open(self) -> None:
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(timeout=self.timeout, follow_redirects=False)

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
        super().close()

    def _render(self, field: str, call: Call, default: Template | None) -> str | None:
        source = call.args.get(field)
        if isinstance(source, str):
            try:
                default = cached_template(source, f"route {call.route!r} args.{field}")
            except ConfigError as exc:
                raise PermanentError(str(exc)) from None
        if default is not None:
            return default.render(call.payload)
        value = call.payload.get(field) if isinstance(call.payload, dict) else None
        if value is not None and not isinstance(value, str):
            raise PermanentError(f"chat message {field!r} must be a string, got {type(value).__name__}")
        return value

    @operation("post", description="Post one message (text, optional title) to the webhook")
    def post(self, call: Call) -> Outcome:
        text = self._render("text", call, self.text)
        if not text:
            raise PermanentError("chat message: no 'text' in the payload, the route args or the settings")
        title = self._render("title", call, self.title)
        body = orjson.dumps(chat_body(self.style, text, title))
        headers = {"content-type": "application/json", "idempotency-key": call.idempotency_key}
        self.open()
        assert self._client is not None
        try:
            response = self._client.post(self.url, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise TransientError(f"{self.system}: webhook timed out after {self.timeout}s ({type(exc).__name__})") \
                from None
        except httpx.TransportError as exc:
            raise TransientError(f"{self.system}: webhook unreachable: {type(exc).__name__}: {exc}") from None
        excerpt = " ".join(response.text[: _EXCERPT * 2].split())[:_EXCERPT]
        if response.status_code in DEFAULT_TRANSIENT:
            raise TransientError(f"{self.system}: webhook answered {response.status_code}: {excerpt}",
                                 retry_after=parse_retry_after(response.headers.get("retry-after")))
        if not response.is_success:
            raise PermanentError(f"{self.system}: webhook answered {response.status_code}: {excerpt}")
        log.info("chat message posted", system=self.system, status=response.status_code, event_id=call.event.id,
                 correlation_id=call.event.correlationid)
        return Outcome(result={"status": response.status_code, "response": excerpt}, detail=excerpt)

    def health(self) -> Health:
        # Posting would put a message in the channel, so health only says whether the host answers at all.
        try:
            self.open()
            assert self._client is not None
            response = self._client.head(self.url)
        except httpx.HTTPError as exc:
            return Health(False, f"webhook host unreachable: {type(exc).__name__}")
        return Health(True, f"webhook host answered {response.status_code}")
