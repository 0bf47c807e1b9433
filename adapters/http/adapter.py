"""The generic ``http`` adapter: deliver to any REST endpoint and poll any JSON API, both declared in settings.

Example system::

    orders_api:
      adapter: http
      settings:
        base_url: https://api.example.com/v2
        auth: {type: bearer, token: "${ORDERS_TOKEN}"}
        operations:
          update_order: {method: PATCH, path: "/orders/{{ order_id }}", result: "@", reference: id}

Every request carries ``Idempotency-Key`` (stable across retries and replays) and ``X-Correlation-Id``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import orjson
import structlog

from adapters.base import Adapter, Call, Health, Outcome, PollResult, SettingsWarning, TriggerSpec
from adapters.http.auth import auth_from_settings
from adapters.http.client import HttpClient, Pending, join_url
from adapters.http.poll import PollConfig, parse_polls, trigger_specs
from adapters.http.poll import poll as run_poll
from adapters.http.settings import (
    SETTINGS_SCHEMA,
    OperationConfig,
    make_transport,
    parse_client_settings,
    parse_operations,
    validate_settings,
)
from adapters.http.template import legacy_template_warnings
from adapters.http.transport import Response, probe
from bus import telemetry
from bus.errors import ConfigError, DeliveryError, MappingError, PermanentError, UnknownNameError
from bus.secrets import strip_credentials

__all__ = ["HttpAdapter", "outcome_from_response"]

log = structlog.get_logger(__name__)


def outcome_from_response(response: Response, result: Any | None = None, reference: Any | None = None) -> Outcome:
    """An Outcome from a successful response: JSON body (through the ``result`` JMESPath when given), and the
    ``reference`` JMESPath's value or else the ``Location`` header."""
    doc: Any = None
    is_json = False
    if response.body:
        try:
            doc, is_json = response.json(), True
        except ValueError:
            doc = response.body.decode("utf-8", errors="replace")
    try:
        value = result.search(doc) if (result is not None and is_json) else doc
        found = reference.search(doc) if (reference is not None and is_json) else None
    except MappingError as exc:
        # The target has acted; dead-lettering makes the broken expression visible, and a replay after the
        # fix is safe because it carries the same idempotency key.
        raise PermanentError(f"HTTP {response.status} received, but the result/reference expression failed on "
                             f"the answer: {exc}") from None
    ref = None if found is None else str(found)
    if ref is None:
        ref = response.header("location")
    # The answer is stored (journal, follow-up events, trace): credentials a target echoes back never are.
    return Outcome(result=strip_credentials(value), reference=ref, detail=f"HTTP {response.status}")


class HttpAdapter(Adapter):
    """Calls REST endpoints described in settings; one pooled client per system, shared by worker threads."""

    name: ClassVar[str] = "http"
    summary: ClassVar[str] = ("Generic REST: operations (method, path template, body) and poll triggers (watermark, "
                              "paging, JMESPath records; OData) declared in settings")
    settings_schema: ClassVar[Mapping[str, Any]] = SETTINGS_SCHEMA
    accepts_any_operation: ClassVar[bool] = True

    def __init__(self, system: str, settings: Mapping[str, Any]) -> None:
        super().__init__(system, settings)
        validate_settings(system, self.settings, SETTINGS_SCHEMA)
        self._operations: dict[str, OperationConfig] = parse_operations(system, self.settings.get("operations") or {})
        self._polls: dict[str, PollConfig] = parse_polls(system, self.settings.get("polls"))
        self._client_settings = parse_client_settings(self.settings)
        transport = make_transport(self._client_settings)
        auth = auth_from_settings(self.settings.get("auth"), transport)
        try:
            self.client = HttpClient(self.settings["base_url"], transport, auth, self._client_settings.policy,
                                     self.settings.get("headers"))
        except ValueError as exc:  # a static header that would break every request: refuse it now
            transport.close()
            raise ConfigError(f"system {system!r}: settings/headers: {exc}") from None

    @classmethod
    def declared_operations(cls, settings: Mapping[str, Any]) -> list[str]:
        """Operation names a system's settings declare (lint checks ``to:`` targets against these)."""
        operations = settings.get("operations")
        return sorted(operations) if isinstance(operations, Mapping) else []

    @classmethod
    def settings_warnings(cls, settings: Mapping[str, Any]) -> list[SettingsWarning]:
        """One warning per template still written in the old single-brace syntax (read until
        :data:`~adapters.http.template.LEGACY_REMOVED_IN`), with its ``{{ }}`` form."""
        return legacy_template_warnings(settings)

    @classmethod
    def declared_triggers(cls, settings: Mapping[str, Any]) -> dict[str, TriggerSpec]:
        """The poll triggers ``settings.polls`` declares (see docs/adapters/polling.md)."""
        return {**cls.triggers, **trigger_specs(settings.get("polls") if isinstance(settings, Mapping) else None)}

    def poll(self, trigger_name: str, watermark: str | None) -> PollResult:
        cfg = self._polls.get(trigger_name)
        if cfg is None:
            raise UnknownNameError(f"poll trigger of system {self.system!r}", trigger_name, self._polls)
        return run_poll(self.system, self.client, cfg, watermark)

    def accepts(self, operation_name: str) -> bool:
        return operation_name in self._operations

    def health(self) -> Health:
        path = self.settings.get("health")
        if not path:
            reason = probe(self.settings["base_url"], self._client_settings.timeouts.connect)
            return Health(reason is None, reason or "reachable")
        try:
            response = self.client.request("GET", path)
        except Exception as exc:  # health() must never raise, whatever went wrong
            return Health(False, str(exc) if isinstance(exc, DeliveryError) else f"{type(exc).__name__}: {exc}")
        return Health(True, f"GET {path}: HTTP {response.status}")

    def close(self) -> None:
        if not self.closed:
            self.client.close()
        super().close()

    def call(self, operation_name: str, call: Call) -> Outcome:
        op = self._operation(operation_name)
        try:
            response = self.client.send(self._pending(operation_name, op, call))
        except DeliveryError as exc:
            self._failed(operation_name, call, exc)
            raise
        # no per-delivery log line here: the worker logs every delivery with its ids (a bound logger per call
        # cost more than the request's own bookkeeping)
        return outcome_from_response(response, op.result, op.reference)

    def call_many(self, operation_name: str, calls: Sequence[Call]) -> list[Outcome | Exception]:
        """Send the calls' requests at once on the pooled transport (see :meth:`HttpClient.request_many`)."""
        op = self._operation(operation_name)
        built: list[Pending | DeliveryError] = []
        for one in calls:
            try:
                built.append(self._pending(operation_name, op, one))
            except DeliveryError as exc:
                built.append(exc)
        answers = iter(self.client.request_many([p for p in built if isinstance(p, Pending)]))
        return [p if isinstance(p, DeliveryError) else self._outcome(operation_name, op, one, next(answers))
                for p, one in zip(built, calls, strict=True)]

    def _outcome(self, operation_name: str, op: OperationConfig, call: Call,
                 answer: Response | DeliveryError | ValueError) -> Outcome | Exception:
        if isinstance(answer, DeliveryError):
            self._failed(operation_name, call, answer)
        if isinstance(answer, Exception):
            return answer
        try:
            return outcome_from_response(answer, op.result, op.reference)
        except Exception as exc:  # a result or reference expression that fails on this response
            return exc

    def _operation(self, operation_name: str) -> OperationConfig:
        op = self._operations.get(operation_name)
        if op is None:
            raise UnknownNameError(f"operation of system {self.system!r}", operation_name, self._operations)
        return op

    def _pending(self, operation_name: str, op: OperationConfig, call: Call) -> Pending:
        """The request ``call`` becomes: rendered path, query, headers and body (PermanentError if it cannot)."""
        payload = call.payload
        headers = {k: t.render(payload) for k, t in op.headers.items()}
        headers["Idempotency-Key"] = call.idempotency_key
        headers["X-Correlation-Id"] = call.event.correlationid
        if telemetry.enabled:  # the W3C trace context of this attempt (bus.telemetry)
            parent = telemetry.traceparent_for(call.idempotency_key)
            if parent is not None:
                headers["traceparent"] = parent
        params = {k: t.render(payload) for k, t in op.query.items()}
        body: bytes | None = None
        try:
            if op.body == "payload":
                body = orjson.dumps(payload)
            elif not isinstance(op.body, str):
                body = orjson.dumps(op.body.search(payload))
        except (TypeError, MappingError) as exc:  # orjson.JSONEncodeError is a TypeError
            raise PermanentError(f"{self.system}.{operation_name}: cannot build the request body: {exc}") from None
        if body is not None:
            headers.setdefault("Content-Type", "application/json")
        path = op.path.render_path(payload)
        what = f"{self.system}.{operation_name}: {op.method} {join_url(self.client.base_url, path)}"
        return Pending(op.method, path, params, headers, body, op.success, what)

    def _failed(self, operation_name: str, call: Call, exc: DeliveryError) -> None:
        log.warning("http_delivery_failed", system=self.system, operation=operation_name, event_id=call.event.id,
                    correlation_id=call.event.correlationid, attempt=call.attempt, error=str(exc),
                    kind=type(exc).__name__)
