"""Prometheus metrics of one ironbus process.

Every metric lives in a private :class:`~prometheus_client.CollectorRegistry` owned by a :class:`Metrics`
object, so two buses in one process (tests, embedding) never see each other's counts and nothing leaks into
``prometheus_client``'s global registry. The module-level functions (:func:`received`, :func:`delivery`,
:func:`rejected` …) act on the process-wide instance returned by :func:`default`; that is what the worker and
the webhook server call, and what ``GET /metrics`` renders.

Metric names and labels (kept bounded on purpose: no event ids, no paths, no free text):

===========================================  =========  ==============================
name                                         type       labels
===========================================  =========  ==============================
``ironbus_events_received_total``            counter    system, trigger
``ironbus_webhook_rejected_total``           counter    system, trigger, reason
``ironbus_deliveries_total``                 counter    route, target, status
``ironbus_delivery_seconds``                 histogram  route, target
``ironbus_accept_to_delivered_seconds``      histogram  route
``ironbus_queue_depth``                      gauge      state
``ironbus_circuit_open``                     gauge      system
``ironbus_rate_limited_total``               counter    system
``ironbus_rate_limit_tokens``                gauge      system
``ironbus_circuit_trips``                    gauge      system
``ironbus_parked_deliveries``                gauge      route
``ironbus_dead_letters``                     gauge      route
``ironbus_queue_oldest_seconds``             gauge      —
``ironbus_queue_partition_depth``            gauge      partition
``ironbus_trigger_lag_seconds``              gauge      system, trigger
===========================================  =========  ==============================

The gauges below ``ironbus_rate_limited_total`` are what the console's Routes, Systems and Queue views show;
the running bus refreshes them from the journal (see :mod:`bus.journal.gauges`).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = [
    "CONTENT_TYPE",
    "DELIVERY_STATUSES",
    "Metrics",
    "circuit_open",
    "default",
    "operational",
    "protection",
    "delivery",
    "latency",
    "rate_limited",
    "received",
    "rejected",
    "render",
    "set_queue_depth",
    "submitted",
]

#: The Content-Type of :meth:`Metrics.render`'s output (Prometheus text exposition format).
CONTENT_TYPE = CONTENT_TYPE_LATEST

#: The values ``status`` may take in :meth:`Metrics.delivery`.
DELIVERY_STATUSES = frozenset({"delivered", "retried", "parked", "dead", "stale", "shadow", "filtered", "unchanged"})

# A single delivery to a SaaS API takes from a few ms to tens of seconds (timeouts); accept-to-delivered
# additionally includes queueing, retries and parking, so its buckets reach into hours.
_DELIVERY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0)


class Metrics:
    """The metrics of one bus, in their own registry.

    Label children are cached in plain dicts: ``Counter.labels()`` validates and locks on every call, and
    the worker counts every event, so the cache keeps a count at roughly one dict lookup plus one add.
    Every method is thread-safe.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._received = Counter("ironbus_events_received", "Events accepted from a trigger (webhook, poll, "
                                 "schedule, send).", ["system", "trigger"], registry=r)
        self._submitted = Counter("ironbus_events_submitted", "Events put on the bus through its front door, by "
                                  "origin (webhook, poll, schedule, send, followup, replay, redrive, parked).",
                                  ["origin"], registry=r)
        self._rejected = Counter("ironbus_webhook_rejected", "Inbound webhook requests refused, by reason.",
                                 ["system", "trigger", "reason"], registry=r)
        self._deliveries = Counter("ironbus_deliveries", "Delivery outcomes per route and target.",
                                   ["route", "target", "status"], registry=r)
        self._delivery_seconds = Histogram("ironbus_delivery_seconds", "Duration of one delivery attempt.",
                                           ["route", "target"], buckets=_DELIVERY_BUCKETS, registry=r)
        self._latency = Histogram("ironbus_accept_to_delivered_seconds", "From accepting an event to its "
                                  "successful delivery.", ["route"], buckets=_LATENCY_BUCKETS, registry=r)
        self._queue_depth = Gauge("ironbus_queue_depth", "Messages in the work queue, by state.", ["state"],
                                  registry=r)
        self._circuit = Gauge("ironbus_circuit_open", "1 while the circuit breaker of a system is open.",
                              ["system"], registry=r)
        self._rate_limited = Counter("ironbus_rate_limited", "Calls a system's rate limit made wait, or the "
                                     "system answered with a rate-limit response.", ["system"], registry=r)
        self._tokens = Gauge("ironbus_rate_limit_tokens", "Rate-limit budget left: calls a system may take now.",
                             ["system"], registry=r)
        self._trips = Gauge("ironbus_circuit_trips", "How often a system's circuit breaker opened in this process.",
                            ["system"], registry=r)
        self._parked = Gauge("ironbus_parked_deliveries", "Deliveries parked, waiting for their next attempt.",
                             ["route"], registry=r)
        self._dead = Gauge("ironbus_dead_letters", "Dead letters waiting for an operator.", ["route"], registry=r)
        self._oldest = Gauge("ironbus_queue_oldest_seconds", "Age of the oldest message in the embedded queue.",
                             registry=r)
        self._partitions = Gauge("ironbus_queue_partition_depth", "Messages waiting per queue partition (embedded: "
                                 "per lane, route -> target; RabbitMQ: per partition queue).", ["partition"],
                                 registry=r)
        self._lag = Gauge("ironbus_trigger_lag_seconds", "Seconds since a polled trigger last moved its watermark.",
                          ["system", "trigger"], registry=r)
        self._children: dict[tuple[Any, ...], Any] = {}
        self._lock = threading.Lock()

    def _child(self, metric: Any, *labels: str) -> Any:
        cache_key = (id(metric), *labels)
        child = self._children.get(cache_key)
        if child is None:
            with self._lock:
                child = self._children.get(cache_key)
                if child is None:
                    child = metric.labels(*labels)
                    self._children[cache_key] = child
        return child

    def received(self, system: str, trigger: str, n: int = 1) -> None:
        """``n`` events entered the bus from ``system.trigger``."""
        self._child(self._received, system, trigger).inc(n)

    def submitted(self, origin: str, n: int = 1) -> None:
        """``n`` events were put on the bus from ``origin`` (see :mod:`bus.frontdoor`)."""
        self._child(self._submitted, origin).inc(n)

    def rejected(self, system: str, trigger: str, reason: str) -> None:
        """An inbound webhook request was refused; ``reason`` is a short code (``mismatch``, ``too_large`` …)."""
        self._child(self._rejected, system, trigger, reason).inc()

    def delivery(self, route: str, target: str, status: str, seconds: float | None = None) -> None:
        """One delivery outcome; ``seconds`` (the attempt's duration) feeds ``ironbus_delivery_seconds``.

        Raises :class:`ValueError` for a status outside :data:`DELIVERY_STATUSES`, so a typo in the worker
        cannot silently create a new time series.
        """
        if status not in DELIVERY_STATUSES:
            raise ValueError(f"unknown delivery status {status!r}; expected one of {sorted(DELIVERY_STATUSES)}")
        self._child(self._deliveries, route, target, status).inc()
        if seconds is not None:
            self._child(self._delivery_seconds, route, target).observe(seconds)

    def latency(self, route: str, seconds: float) -> None:
        """Time from accepting an event to its successful delivery on ``route``."""
        self._child(self._latency, route).observe(seconds)

    def set_queue_depth(self, depth: Mapping[str, int]) -> None:
        """Set the queue gauges from :meth:`bus.queue.base.Queue.depth` (``{"ready": 3, "leased": 1}``).

        Negative values mean "unknown" in the queue contract and are not exported.
        """
        for state, count in depth.items():
            if count >= 0:
                self._child(self._queue_depth, state).set(count)

    def circuit_open(self, system: str, is_open: bool) -> None:
        """Record whether ``system``'s circuit breaker is open."""
        self._child(self._circuit, system).set(1 if is_open else 0)

    def rate_limited(self, system: str, n: int = 1) -> None:
        """``system``'s rate limit held back ``n`` calls (or the vendor answered 429)."""
        self._child(self._rate_limited, system).inc(n)

    def protection(self, system: str, tokens: float | None, trips: int | None) -> None:
        """A system's rate-limit budget left and its circuit breaker's trips (None: not configured)."""
        if tokens is not None:
            self._child(self._tokens, system).set(tokens)
        if trips is not None:
            self._child(self._trips, system).set(trips)

    def operational(self, *, parked: Mapping[str, int], dead: Mapping[str, int], oldest: float | None,
                    partitions: Mapping[str, int], lag: Mapping[tuple[str, str], float]) -> None:
        """The journal-derived gauges; a route, partition or trigger no longer reported drops to 0."""
        for gauge, values in ((self._parked, parked), (self._dead, dead), (self._partitions, partitions)):
            _replace(gauge, {(k,): float(v) for k, v in values.items()})
        _replace(self._lag, {k: float(v) for k, v in lag.items()})
        self._oldest.set(oldest or 0.0)

    def render(self) -> bytes:
        """Every metric in the Prometheus text exposition format (serve with :data:`CONTENT_TYPE`)."""
        data: bytes = generate_latest(self.registry)
        return data


def _replace(gauge: Any, values: Mapping[tuple[str, ...], float]) -> None:
    """Set a labelled gauge to exactly ``values``: label sets not among them are removed."""
    for labels, value in values.items():
        gauge.labels(*labels).set(value)
    for sample in list(gauge.collect()[0].samples):
        labels = tuple(sample.labels.values())
        if labels not in values:
            try:
                gauge.remove(*labels)
            except KeyError:
                pass


_default: Metrics | None = None
_default_lock = threading.Lock()


def default() -> Metrics:
    """The process-wide metrics (created on first use)."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = Metrics()
    return _default


def received(system: str, trigger: str, n: int = 1) -> None:
    """See :meth:`Metrics.received` (process-wide instance)."""
    default().received(system, trigger, n)


def submitted(origin: str, n: int = 1) -> None:
    """See :meth:`Metrics.submitted` (process-wide instance)."""
    default().submitted(origin, n)


def rejected(system: str, trigger: str, reason: str) -> None:
    """See :meth:`Metrics.rejected` (process-wide instance)."""
    default().rejected(system, trigger, reason)


def delivery(route: str, target: str, status: str, seconds: float | None = None) -> None:
    """See :meth:`Metrics.delivery` (process-wide instance)."""
    default().delivery(route, target, status, seconds)


def latency(route: str, seconds: float) -> None:
    """See :meth:`Metrics.latency` (process-wide instance)."""
    default().latency(route, seconds)


def set_queue_depth(depth: Mapping[str, int]) -> None:
    """See :meth:`Metrics.set_queue_depth` (process-wide instance)."""
    default().set_queue_depth(depth)


def circuit_open(system: str, is_open: bool) -> None:
    """See :meth:`Metrics.circuit_open` (process-wide instance)."""
    default().circuit_open(system, is_open)


def rate_limited(system: str, n: int = 1) -> None:
    """See :meth:`Metrics.rate_limited` (process-wide instance)."""
    default().rate_limited(system, n)


def operational(**values: Any) -> None:
    """See :meth:`Metrics.operational` (process-wide instance)."""
    default().operational(**values)


def protection(system: str, tokens: float | None, trips: int | None) -> None:
    """See :meth:`Metrics.protection` (process-wide instance)."""
    default().protection(system, tokens, trips)


def render() -> bytes:
    """See :meth:`Metrics.render` (process-wide instance)."""
    return default().render()
