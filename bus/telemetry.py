"""OpenTelemetry tracing for the bus, behind one switch: :data:`enabled`.

One trace per business change. Every event of a transaction shares a correlation id; the trace id is taken
from the W3C ``traceparent`` a webhook brought in, else derived from the correlation id (so a poll-triggered
change, or a follow-up re-driven from a dead letter days later, still lands in its transaction's trace, even
from another process). Spans:

* ``ingest <type>`` — an event accepted (webhook, poll, send, follow-up), until it is durable;
* ``route <name>`` — one route's steps (filter, map, validate) for one event;
* ``deliver <route> → <target>`` — one delivery attempt; the http adapter's transport sends its
  ``traceparent``, and a follow-up event the delivery caused is ingested as its child.

The span context travels with the event as the CloudEvents distributed-tracing extension ``traceparent``.

Off unless configured by the standard variables: ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``
turn it off; ``OTEL_TRACES_EXPORTER=otlp|console`` or an ``OTEL_EXPORTER_OTLP_ENDPOINT`` /
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` turn it on (the OTLP/HTTP exporter reads the other
``OTEL_EXPORTER_OTLP_*`` variables itself). When off, nothing of OpenTelemetry is imported and every hook
site pays one module-attribute test (``if telemetry.enabled``).
"""

from __future__ import annotations

import contextvars
import hashlib
import os
import re
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from typing import Any

from bus.envelope import Event

__all__ = [
    "TRACEPARENT",
    "attempt",
    "attempt_ids",
    "begin_grouped",
    "begin_ingest",
    "delivered",
    "end_grouped",
    "configure",
    "configure_from_env",
    "enabled",
    "end_ingest",
    "inject",
    "log_ids",
    "route_steps",
    "shutdown",
    "trace_id_for",
    "traceparent_for",
    "traceparent_of",
    "with_inbound",
]

#: The event extension (CloudEvents distributed tracing) and HTTP header carrying the span context.
TRACEPARENT = "traceparent"

#: True once :func:`configure` installed a tracer; hook sites test it before calling anything here.
enabled = False

_TRACEPARENT_RE = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_tracer: Any = None
_provider: Any = None
# The trace id a root span must take (derived from the correlation id); read by the id generator.
_forced_trace_id: contextvars.ContextVar[int | None] = contextvars.ContextVar("ironbus_trace_id", default=None)


def trace_id_for(event: Event) -> str:
    """The trace id (32 hex digits) of ``event``'s business change: its ``traceparent``'s, else derived from
    its correlation id. Pure: the console computes it for any journaled event, tracing on or off."""
    found = traceparent_of(event)
    if found is not None:
        return found[0]
    return _derived(event.correlationid)


def traceparent_of(event: Event) -> tuple[str, str] | None:
    """``(trace_id, span_id)`` from the event's ``traceparent`` extension, when it has a valid one."""
    value = event.extensions.get(TRACEPARENT) if event.extensions else None
    return _parse(value) if isinstance(value, str) else None


def _parse(value: str) -> tuple[str, str] | None:
    match = _TRACEPARENT_RE.match(value.strip().lower())
    if match is None or set(match.group(1)) == {"0"} or set(match.group(2)) == {"0"}:
        return None
    return match.group(1), match.group(2)


def _derived(correlationid: str) -> str:
    digest = hashlib.sha256(correlationid.encode()).hexdigest()[:32]
    return digest if set(digest) != {"0"} else "1" * 32


# -- configuration -------------------------------------------------------------------------------------------
def configure_from_env(environ: Mapping[str, str] | None = None) -> bool:
    """Turn tracing on when the standard ``OTEL_*`` variables ask for it; returns :data:`enabled`."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return enabled
    exporters = [e.strip().lower() for e in env.get("OTEL_TRACES_EXPORTER", "").split(",") if e.strip()]
    if "none" in exporters:
        return enabled
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not exporters and endpoint:
        exporters = ["otlp"]
    if not exporters:
        return enabled  # off by default: the spec's default exporter is otlp, ours is none
    configure(exporters)
    return enabled


def configure(exporters: Sequence[str] = ("otlp",), *, processor: Any = None) -> None:
    """Install a tracer provider exporting to ``exporters`` (``otlp``, ``console``), or through ``processor``
    (a span processor, for tests). Resource attributes come from ``OTEL_SERVICE_NAME`` (default
    ``ironbus``) and ``OTEL_RESOURCE_ATTRIBUTES``."""
    global enabled, _tracer, _provider
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class _Ids(RandomIdGenerator):
        """Random ids, except a root span's trace id when the transaction's one is known."""

        def generate_trace_id(self) -> int:
            forced = _forced_trace_id.get()
            return forced if forced is not None else super().generate_trace_id()

    service = os.environ.get("OTEL_SERVICE_NAME") or "ironbus"
    provider = TracerProvider(resource=Resource.create({"service.name": service}), id_generator=_Ids())
    if processor is not None:
        provider.add_span_processor(processor)
    for name in exporters:
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        elif name == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    _provider = provider
    _tracer = provider.get_tracer("ironbus")
    enabled = True


def shutdown() -> None:
    """Flush the spans still buffered and turn tracing off (end of ``ironbus run``, tests)."""
    global enabled, _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    enabled, _tracer, _provider = False, None, None


def force_flush(timeout_ms: int = 5000) -> None:
    if _provider is not None:
        _provider.force_flush(timeout_ms)


# -- context helpers -----------------------------------------------------------------------------------------
def _context_of(event: Event) -> Any:
    """The OpenTelemetry context to start an event's spans in: its traceparent's span, else a root context
    whose trace id the id generator derives from the correlation id."""
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    found = traceparent_of(event)
    if found is None:
        return None
    parent = SpanContext(int(found[0], 16), int(found[1], 16), is_remote=True,
                         trace_flags=TraceFlags(TraceFlags.SAMPLED))
    return trace.set_span_in_context(NonRecordingSpan(parent))


@contextmanager
def _rooted(event: Event) -> Iterator[Any]:
    """The parent context for a span of ``event`` (see :func:`_context_of`), with the derived trace id armed
    for a root span."""
    context = _context_of(event)
    token = _forced_trace_id.set(None if context is not None else int(_derived(event.correlationid), 16))
    try:
        yield context
    finally:
        _forced_trace_id.reset(token)


def _traceparent(span: Any) -> str:
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def _attributes(event: Event) -> dict[str, Any]:
    attrs: dict[str, Any] = {"ironbus.event_id": event.id, "ironbus.event_type": event.type,
                             "ironbus.correlation_id": event.correlationid, "ironbus.source": event.source}
    if event.key is not None:
        attrs["ironbus.key"] = event.key
    if event.causationid:
        attrs["ironbus.causation_id"] = event.causationid
    return attrs


# -- ingest --------------------------------------------------------------------------------------------------
def with_inbound(events: list[Event], headers: Mapping[str, str]) -> list[Event]:
    """Events from a webhook request, carrying the request's W3C ``traceparent`` (when it has a valid one)."""
    value = headers.get(TRACEPARENT)
    if not value or _parse(value) is None:
        return events
    return [e.with_(extensions={**e.extensions, TRACEPARENT: value.strip().lower()}) for e in events]


def begin_ingest(events: Sequence[tuple[Event, str]]) -> tuple[list[tuple[Event, str]], list[Any]]:
    """Start an ``ingest`` span per event (child of its traceparent, or a root in its transaction's trace);
    returns the events carrying their span as ``traceparent``, and the spans for :func:`end_ingest`."""
    from opentelemetry.trace import SpanKind

    out: list[tuple[Event, str]] = []
    spans: list[Any] = []
    for event, origin in events:
        with _rooted(event) as context:
            kind = SpanKind.SERVER if origin == "webhook" else SpanKind.CONSUMER if origin == "followup" \
                else SpanKind.INTERNAL
            span = _tracer.start_span(f"ingest {event.type}", context=context, kind=kind,
                                      attributes={**_attributes(event), "ironbus.origin": origin})
        spans.append(span)
        out.append((event.with_(extensions={**event.extensions, TRACEPARENT: _traceparent(span)}), origin))
    return out, spans


def end_ingest(spans: Sequence[Any], error: BaseException | None = None) -> None:
    from opentelemetry.trace import Status, StatusCode

    for span in spans:
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"not stored: {type(error).__name__}"))
        span.end()


# -- worker --------------------------------------------------------------------------------------------------
def route_steps(event: Event, results: Sequence[Any], started_ns: int, ended_ns: int) -> None:
    """One span per route an event went through (filter, map, validate), timed by the caller."""
    from opentelemetry.trace import Status, StatusCode

    with _rooted(event) as context:
        for result in results:
            span = _tracer.start_span(f"route {result.route.name}", context=context, start_time=started_ns,
                                      attributes={**_attributes(event), "ironbus.route": result.route.name,
                                                  "ironbus.route.status": result.status,
                                                  "ironbus.dispatches": len(result.dispatches)})
            if result.status == "invalid":
                span.set_status(Status(StatusCode.ERROR, str(result.error)[:200]))
            span.end(end_time=ended_ns)


# Spans of attempts in flight and the last successful attempt, by idempotency key: the http adapter puts
# the first in its request's traceparent (also for calls sent together), a follow-up event takes the second
# as its parent. Plain dicts: one key is only ever touched by the worker thread delivering it.
_in_flight: dict[str, Any] = {}
_delivered: dict[str, str] = {}
# The span ids of a delivery's attempts since its journal row was last recorded (see attempt_ids).
_attempt_spans: dict[str, list[Any]] = {}


def _attempt_span(dispatch: Any, number: int) -> Any:
    from opentelemetry.trace import SpanKind

    source: Event = dispatch.source
    target = dispatch.target.config
    with _rooted(source) as context:
        span = _tracer.start_span(f"deliver {dispatch.route.name} → {target.name}", context=context,
                                  kind=SpanKind.CLIENT, attributes={
                                      **_attributes(source), "ironbus.route": dispatch.route.name,
                                      "ironbus.target": target.name, "ironbus.system": target.system,
                                      "ironbus.operation": target.operation, "ironbus.attempt": number,
                                      "ironbus.idempotency_key": dispatch.idempotency_key})
    _in_flight[dispatch.idempotency_key] = span
    return span


def _end_attempt(dispatch: Any, span: Any, error: BaseException | None) -> None:
    from opentelemetry.trace import Status, StatusCode

    _in_flight.pop(dispatch.idempotency_key, None)
    _attempt_spans.setdefault(dispatch.idempotency_key, []).append(span.get_span_context())
    if error is None:
        _delivered[dispatch.idempotency_key] = _traceparent(span)
    else:
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {str(error)[:200]}"))
        span.set_attribute("ironbus.error_kind", type(error).__name__)
    span.end()


@contextmanager
def attempt(dispatch: Any, number: int) -> Iterator[Any]:
    """The span of one delivery attempt, current while the adapter calls."""
    from opentelemetry import trace

    span = _attempt_span(dispatch, number)
    error: BaseException | None = None
    try:
        with trace.use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
            yield span
    except BaseException as exc:
        error = exc
        raise
    finally:
        _end_attempt(dispatch, span, error)


def begin_grouped(dispatches: Sequence[Any]) -> list[Any]:
    """Spans for first attempts sent together (``call_many``), started before the calls go out."""
    spans = [_attempt_span(d, 1) for d in dispatches]
    for span in spans:
        span.set_attribute("ironbus.grouped", True)
    return spans


def end_grouped(dispatches: Sequence[Any], spans: Sequence[Any], results: Sequence[Any]) -> None:
    for dispatch, span, result in zip(dispatches, spans, results, strict=True):
        _end_attempt(dispatch, span, result if isinstance(result, BaseException) else None)


def attempt_ids(idempotency_key: str) -> tuple[str, str] | None:
    """``(trace_id, span_ids)`` of the attempts a delivery made since the last call, for its attempt-log row:
    one row per worker pass, whose quick retries are several spans (ids space-separated, in call order, all in
    the transaction's trace). None when it made no attempt (skipped, shadow)."""
    spans = _attempt_spans.pop(idempotency_key, None)
    if not spans:
        return None
    return f"{spans[-1].trace_id:032x}", " ".join(f"{c.span_id:016x}" for c in spans)


def traceparent_for(idempotency_key: str) -> str | None:
    """The traceparent of the attempt in flight for a delivery, else of the current span (outbound HTTP)."""
    span = _in_flight.get(idempotency_key)
    return _traceparent(span) if span is not None else current_traceparent()


def current_traceparent() -> str | None:
    """The traceparent of the span current in this thread, if any."""
    from opentelemetry import trace

    span = trace.get_current_span()
    return _traceparent(span) if span.get_span_context().is_valid else None


def inject(headers: MutableMapping[str, str]) -> None:
    """Add the current span's ``traceparent`` to outbound HTTP headers unless they carry one."""
    if TRACEPARENT not in headers and "Traceparent" not in headers:
        value = current_traceparent()
        if value is not None:
            headers[TRACEPARENT] = value


def delivered(idempotency_key: str, follow: Event | None) -> Event | None:
    """Forget the delivery's attempt; a follow-up it caused gets that attempt's span as its parent."""
    value = _delivered.pop(idempotency_key, None)
    if follow is None or value is None:
        return follow
    return follow.with_(extensions={**follow.extensions, TRACEPARENT: value})


def log_ids(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: ``trace_id`` and ``span_id`` of the current span on every log line."""
    if enabled:
        from opentelemetry import trace

        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            event_dict.setdefault("trace_id", f"{ctx.trace_id:032x}")
            event_dict.setdefault("span_id", f"{ctx.span_id:016x}")
    return event_dict
