"""``ironbus run``: the assembled bus — journal, queue, workers, parker, triggers and the webhook server.

Stopping is graceful: the webhook server stops accepting, triggers stop polling, each worker finishes the
batch it holds (its deliveries are settled and acked), and anything not yet taken stays in the queue for the
next run. A process killed without warning loses nothing either: its leases expire and are handed out again.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any

import structlog

from adapters.base import Adapter
from bus import metrics
from bus.aggregate import Aggregator
from bus.bulk import BulkLanes
from bus.config import Config, load_config
from bus.envelope import Event
from bus.errors import ConfigError
from bus.frontdoor import FrontDoor
from bus.journal import Journal, gauges
from bus.journal.aggregates import AggregateStore
from bus.masterdatajob import MasterDataCheck
from bus.outbox import OutboxRelay
from bus.parking import Parker
from bus.pipeline import Pipeline
from bus.plugins import load_adapter_class
from bus.progress import Progress
from bus.protection import Protections
from bus.queue.base import Queue
from bus.queue.open import broker_url, open_queue
from bus.refusals import JournalRefusals
from bus.sharedstate import shared_factories
from bus.systemstate import publish_state
from bus.worker import Worker, WorkerStats

__all__ = ["DEFAULT_JOURNAL", "Runtime", "RuntimeOptions", "journal_url", "broker_url"]

log = structlog.get_logger(__name__)

DEFAULT_JOURNAL = "sqlite:///var/ironbus.sqlite"


def journal_url(explicit: str | None) -> str:
    """The journal URL: the flag, else ``$IRONBUS_JOURNAL``, else the embedded SQLite file."""
    return explicit or os.environ.get("IRONBUS_JOURNAL") or DEFAULT_JOURNAL


@dataclass(frozen=True)
class RuntimeOptions:
    workers: int = 4
    host: str = "127.0.0.1"
    port: int | None = 8080  # None: no HTTP server
    triggers: bool = True
    batch_size: int = 32
    #: How long a worker's claim on an embedded-queue message lasts; a killed worker's messages come back
    #: after this. Must exceed the longest batch (quick retries included).
    lease_seconds: float = 30.0
    #: This process's (index, count) under ``ironbus run --processes`` (spreads RabbitMQ partitions).
    process_slot: tuple[int, int] | None = None
    #: The interpreter's GIL switch interval while the bus runs (seconds).
    switch_interval: float = float(os.environ.get("IRONBUS_SWITCH_INTERVAL", "0.001"))
    #: The operator console's credentials (a :class:`bus.webconsole.Auth`): serve it under /console; None: off.
    console: Any = None


def open_adapters(config: Config, only: set[str] | None = None) -> dict[str, Adapter]:
    """One adapter instance per configured system (or per system in ``only``)."""
    from bus.lint import check_settings

    out: dict[str, Adapter] = {}
    for name, system in config.systems.items():
        if only is not None and name not in only:
            continue
        cls = load_adapter_class(system.adapter, system.location)
        # the adapter's schema, as lint applies it: an adapter may ignore a key it does not know, the bus must not
        problems = check_settings(name, cls, system.settings, system.locations.get("settings", system.location))
        if problems:
            raise ConfigError(str(problems[0]).replace(": error: ", ": ", 1) if len(problems) == 1 else
                              f"system {name!r}: {len(problems)} settings errors:\n"
                              + "\n".join(f"  {p}" for p in problems))
        out[name] = cls(name, system.settings)
    return out


class Runtime:
    """Everything ``ironbus run`` starts, in one object (also used by tests and the benchmark)."""

    def __init__(self, config: Config | str | Path, *, journal: str | Journal | None = None,
                 broker: str | None = None, options: RuntimeOptions | None = None,
                 adapters: dict[str, Adapter] | None = None) -> None:
        self.config = config if isinstance(config, Config) else load_config(config)
        self.options = options or RuntimeOptions()
        self.journal = journal if isinstance(journal, Journal) else Journal(journal_url(journal))
        self.refusals = JournalRefusals(self.journal)
        self.queue: Queue = open_queue(broker_url(broker), self.journal, lease_seconds=self.options.lease_seconds,
                                       home=self.options.process_slot)
        self.pipeline = Pipeline(self.config, xref=self.journal.xref)
        self.adapters = adapters if adapters is not None else open_adapters(self.config)
        # shared through the journal: N processes (or hosts) keep a vendor's limit once, not N times
        self.protections = Protections.from_config(self.config.systems,
                                                   shared=shared_factories(self.journal))
        #: the one way onto the bus (webhooks, triggers, follow-ups, the parker)
        self.door = FrontDoor(self.journal, self.queue, self.pipeline)
        self.stop_event = threading.Event()
        self.lanes = BulkLanes(self.config, self.adapters, self.queue, self.options.lease_seconds,
                               stop=self.stop_event)
        self.lane_recorder: Worker | None = None
        self.workers: list[Worker] = []
        self._threads: list[threading.Thread] = []
        self.parker = Parker(self.journal, self.door, stop=self.stop_event)
        aggregator = Aggregator(self.config, AggregateStore(self.journal.engine), self.ingest, self.pipeline.functions,
                                stop=self.stop_event)
        self.aggregator: Aggregator | None = aggregator if aggregator else None
        self.triggers: Any = None
        self.server: Any = None
        self._ready = False

    # -- ingress ------------------------------------------------------------------------------------------
    def ingest(self, events: Sequence[tuple[Event, str]]) -> None:
        """Put ``(event, origin)`` pairs on the bus through the front door (returns once they are durable)."""
        for origin, group in groupby(events, key=lambda pair: pair[1]):
            self.door.submit([event for event, _ in group], origin)

    async def ingest_webhook(self, events: list[Event]) -> None:
        await self.door.submit_async(events, "webhook")

    def ready(self) -> tuple[bool, str]:
        if not self._ready:
            return False, "starting"
        try:
            self.queue.depth()
            self.journal.ping()  # cheap: a readiness probe runs every few seconds
        except Exception as exc:  # readiness reports any failure as a reason; it must not raise
            return False, f"journal or broker unreachable: {type(exc).__name__}"
        return True, "ready"

    # -- lifecycle ----------------------------------------------------------------------------------------
    def start(self) -> None:
        # Worker threads are CPU-busy between I/O calls; with the default 5 ms GIL switch interval the webhook
        # server's event loop waits behind them and inbound latency suffers. 1 ms shares the GIL more finely.
        sys.setswitchinterval(self.options.switch_interval)
        if self.lanes:
            # Lanes record from their own threads: a worker that never runs its loop records for them, so no
            # running worker's counters are touched from two threads.
            self.lane_recorder = self._worker("bulk-lanes")
            self.lanes.recorder = self.lane_recorder
        for name, adapter in self.adapters.items():
            adapter.bind_store(self.journal.adapter_store(name))
            adapter.bind_refusals(self.refusals)  # refused inbound documents become dead letters
            try:
                adapter.open()
            except Exception as exc:  # noqa: BLE001 - any failure to connect at start is survivable
                # A system that is down at start is not fatal: deliveries to it retry and park until it is back.
                log.warning("system not reachable at start; deliveries will wait", system=name, error=str(exc))
        for i in range(self.options.workers):
            worker = self._worker(f"worker-{i}")
            self.workers.append(worker)
            self._spawn(worker.run, f"ironbus-worker-{i}")
        self._spawn(self.parker.run, "ironbus-parker")
        # events a dead process journaled but never published (see bus/outbox.py)
        self._spawn(OutboxRelay(self.journal, self.queue, stop=self.stop_event).run, "ironbus-outbox")
        if self.aggregator is not None:
            self._spawn(self.aggregator.run, "ironbus-aggregate")
        self._spawn(self._gauges, "ironbus-gauges")
        if self.options.triggers:
            self._start_triggers()
            self._start_master_data_check()
        if self.options.port is not None:
            self._start_http()
        self._ready = True
        log.info("ironbus running", workers=self.options.workers, journal=self.journal.url,
                 routes=len(self.config.routes), port=self.port)

    def _start_master_data_check(self) -> None:
        """The scheduled ``xref check`` (routes.yaml ``master_data_check:``), run where the triggers run."""
        if self.config.master_data_check is None:
            return
        schedule, entities = self.config.master_data_check
        job = MasterDataCheck(schedule, self.adapters, self.journal.xref_rows, self.config.master_data,
                              lambda events: self.ingest([(e, "schedule") for e in events]), self.stop_event,
                              entities=entities or tuple(self.config.master_data) or None)
        self._spawn(job.run, "ironbus-masterdata-check")

    def _worker(self, name: str) -> Worker:
        from bus.schedulehold import Scheduled, scheduled_routes
        from bus.steps import default_steps

        scheduled = scheduled_routes(self.config, self.adapters)  # event routes with timing: {schedule}
        steps = (Scheduled(scheduled), *default_steps(self.lanes or None)) if scheduled else None
        return Worker(pipeline=self.pipeline, adapters=self.adapters, journal=self.journal, queue=self.queue,
                      door=self.door, protections=self.protections, batch_size=self.options.batch_size,
                      stop=self.stop_event, name=name, lanes=self.lanes or None, aggregator=self.aggregator,
                      steps=steps)

    def stats(self) -> list[WorkerStats]:
        """The counters of this run: each worker's, then the bulk lanes' (if any route has them)."""
        workers = self.workers if self.lane_recorder is None else [*self.workers, self.lane_recorder]
        return [w.stats for w in workers]

    def _spawn(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _start_triggers(self) -> None:
        from dataclasses import replace

        from bus.triggers import TriggerRunner

        # Only routes whose source is a trigger the adapter declares need a runner; a stub system's events
        # arrive by `ironbus send` (lint has already reported any unknown trigger).
        def polled(source: str) -> bool:
            system, _, trigger = source.partition(".")
            adapter = self.adapters.get(system)
            return adapter is not None and trigger in type(adapter).declared_triggers(adapter.settings)

        config = replace(self.config, routes=tuple(r for r in self.config.routes if polled(r.source)))
        from bus.election import Leases
        from bus.triggers import plan_triggers

        def emit(events: list[Event]) -> None:
            self.door.submit(events, "poll")

        # one runner per trigger however many processes and hosts run the bus (bus/election.py)
        self.leases = Leases(self.journal.leases)
        leases = self.leases

        def elect(plan: Any) -> bool:
            # The runner renews at every poll: its lease outlives two intervals, so a live runner keeps it and a
            # dead one's passes to a standby at the standby's next due time.
            ttl = leases.ttl if plan.schedules else max(leases.ttl, 2 * plan.interval + 5)
            return leases.hold(plan.name, ttl=ttl)

        runner = TriggerRunner(self.adapters, plan_triggers(config, self.adapters), self.journal,
                               emit=emit, elect=elect)
        runner.start()
        self.triggers = runner

    def _start_http(self) -> None:
        from bus.webhooks import WebhookApp, WebhookServer, endpoints_for

        used = {r.source for r in self.config.routes}
        endpoints = {}
        for name, adapter in self.adapters.items():
            for ident, endpoint in endpoints_for(name, adapter).items():
                if endpoint.event_type in used:
                    endpoints[ident] = endpoint
        app: Any = WebhookApp(endpoints, self.ingest_webhook, self.ready)
        if self.options.console is not None:  # the operator console beside the webhooks (bus.webconsole)
            from bus.webconsole import for_runtime

            app = for_runtime(app, self, self.options.console, adapters=open_adapters)
        self.server = WebhookServer(app, self.options.host, self.options.port or 0)
        self.server.start()

    @property
    def port(self) -> int | None:
        return self.server.port if self.server is not None else None

    def _gauges(self) -> None:
        progress = Progress()
        while not self.stop_event.wait(2.0):
            try:
                depth = self.queue.depth()
                held = getattr(self.queue, "held", None)
                # for `ironbus status`: is this process still finishing batches while work waits?
                progress.publish(self.journal, sum(s.batches for s in self.stats()), depth,
                                 held() if callable(held) else 0)
                metrics.set_queue_depth(depth)
                snapshot = self.protections.snapshot()
                for system, snap in snapshot.items():
                    circuit = snap.get("circuit") or {}
                    metrics.circuit_open(system, circuit.get("state") == "open")
                publish_state(self.journal, snapshot)  # for `ironbus status` in other processes
                gauges.refresh(self.journal, self.queue, snapshot)  # the console's figures, for Prometheus
            except Exception as exc:  # gauges are best effort
                log.debug("gauge update failed", error=str(exc))

    def idle(self) -> bool:
        """No message ready, leased or delayed, and no delivery parked (a parked one will come back)."""
        depth = self.queue.depth()
        busy = sum(max(depth.get(k, 0), 0) for k in ("ready", "leased", "delayed"))
        return busy == 0 and self.parker.parked() == 0 and (self.aggregator is None or self.aggregator.pending() == 0)

    def wait_idle(self, timeout: float, settle: float = 0.3) -> bool:
        """Block until the bus has been idle for ``settle`` seconds, or ``timeout`` passed."""
        deadline = time.monotonic() + timeout
        idle_since: float | None = None
        while time.monotonic() < deadline:
            if self.idle():
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since >= settle:
                    return True
            else:
                idle_since = None
            time.sleep(0.05)
        return False

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful stop: inbound first, then workers finish their batch, then connections close."""
        self._ready = False
        if self.server is not None:
            self.server.stop()
        if self.triggers is not None:
            self.triggers.stop()
            try:
                self.leases.release_all()  # hand the triggers over at once rather than after the lease runs out
            except Exception as exc:  # noqa: BLE001 - then they pass over when the leases run out
                log.warning("trigger leases not released", error=str(exc))
        self.stop_event.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.lanes.close()
        self.protections.close()
        for adapter in self.adapters.values():
            try:
                adapter.close()
            except Exception as exc:  # closing is best effort; the process is ending
                log.warning("adapter close failed", system=adapter.system, error=str(exc))
        self.door.close()
        self.queue.close()
        self.journal.close()
        log.info("ironbus stopped")


def check_routes_file(path: Path) -> None:
    if not path.is_file():
        raise ConfigError(f"routes file {path} not found; pass --routes or run from the folder that has routes.yaml")
