"""Poll and schedule triggers: ask adapters for new records and turn them into events, losing none.

For every poll or schedule trigger a route listens to (``from: system.trigger``), :class:`TriggerRunner`
calls ``adapter.poll(trigger, watermark)`` on the trigger's interval or cron schedule, drops the records
whose dedup key was already seen (the overlap window a careful adapter re-reads), emits one
:class:`~bus.envelope.Event` per new record, and only AFTER ``emit`` returned (the events are journaled and
queued) stores the new watermark and the keys it saw. A crash before that point re-reads the same records
on restart; their event ids are derived from ``(system, trigger, dedup key)``, so the journal recognises a
record that was emitted twice. A crash can therefore repeat an emit, but never lose a record.

Where the timing comes from, first match wins:

1. the route's ``timing: {schedule: "*/15 * * * *"}`` (cron, 5 fields; several routes on one trigger: the
   earliest next fire of any; cron times are UTC);
2. the system's settings ``triggers: {<trigger>: {schedule: "...", interval: "30s"}}``;
3. the ``interval`` the adapter declared on the trigger;
4. :data:`DEFAULT_INTERVAL`.

Transient errors (and unexpected ones) back off exponentially, honouring ``retry_after``; a permanent error
is logged and the trigger waits for its next regular time.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import structlog
from croniter import croniter

from adapters.base import Adapter
from bus.backoff import Backoff
from bus.config import Config, parse_duration
from bus.envelope import Event
from bus.errors import ConfigError, PermanentError, TransientError, UnknownNameError

__all__ = [
    "DEFAULT_INTERVAL",
    "Batcher",
    "MemoryWatermarkStore",
    "TriggerPlan",
    "TriggerRunner",
    "WatermarkStore",
    "plan_triggers",
    "record_event_id",
]

log = structlog.get_logger(__name__)

DEFAULT_INTERVAL = 60.0
#: Namespace of the deterministic event ids of polled records (see :func:`record_event_id`).
RECORD_NAMESPACE = uuid.UUID("5b0c3f4e-8a1d-4d5e-9a57-2f1f6e0c1b11")
T = TypeVar("T")


class WatermarkStore(Protocol):
    """Where a poll trigger's progress survives restarts (the journal implements it).

    ``set_watermark`` stores the watermark and remembers ``seen_keys`` in one transaction. The runner writes
    ``""`` for "no watermark yet" (so a NOT NULL column will do) and hands adapters None for it.
    """

    def get_watermark(self, system: str, trigger: str) -> str | None: ...

    def set_watermark(self, system: str, trigger: str, value: str, seen_keys: Sequence[str]) -> None: ...

    def filter_unseen(self, system: str, trigger: str, keys: Sequence[str]) -> list[str]: ...


class MemoryWatermarkStore:
    """An in-process :class:`WatermarkStore` (tests, ``ironbus test``). Keeps the keys of the last ``keep`` polls."""

    def __init__(self, keep: int = 3) -> None:
        self.keep = keep
        self._lock = threading.Lock()
        self._marks: dict[tuple[str, str], str] = {}
        self._seen: dict[tuple[str, str], list[set[str]]] = {}

    def get_watermark(self, system: str, trigger: str) -> str | None:
        with self._lock:
            return self._marks.get((system, trigger))

    def set_watermark(self, system: str, trigger: str, value: str, seen_keys: Sequence[str]) -> None:
        with self._lock:
            self._marks[(system, trigger)] = value
            generations = self._seen.setdefault((system, trigger), [])
            generations.append(set(seen_keys))
            del generations[:-self.keep]

    def filter_unseen(self, system: str, trigger: str, keys: Sequence[str]) -> list[str]:
        with self._lock:
            seen = set().union(*self._seen.get((system, trigger), []))
        return [k for k in keys if k not in seen]


def record_event_id(system: str, trigger: str, dedup_key: str) -> str:
    """The event id of a polled record: the same record polled twice gets the same id."""
    return str(uuid.uuid5(RECORD_NAMESPACE, f"{system}.{trigger}\x00{dedup_key}"))


@dataclass(frozen=True)
class TriggerPlan:
    """One trigger to run: which system and trigger, and when (interval seconds or cron expressions)."""

    system: str
    trigger: str
    interval: float = DEFAULT_INTERVAL
    schedules: tuple[str, ...] = ()
    routes: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.system}.{self.trigger}"

    def next_due(self, after: float) -> float:
        """The next time (epoch seconds) this trigger should run after ``after``."""
        if self.schedules:
            return min(float(croniter(expr, after).get_next(float)) for expr in self.schedules)
        return after + self.interval


def _check_cron(expr: str, where: str) -> str:
    if not croniter.is_valid(expr):
        raise ConfigError(f"{where}: {expr!r} is not a valid cron expression (expected 5 fields, e.g. '*/15 * * * *')")
    return expr


def plan_triggers(config: Config, adapters: Mapping[str, Adapter]) -> list[TriggerPlan]:
    """The poll/schedule triggers the routes of ``config`` listen to, with their timing.

    Routes from a canonical event type, or from a webhook trigger, need no runner and are skipped. Raises
    :class:`UnknownNameError` for a route naming a trigger its system's adapter does not have.
    """
    found: dict[tuple[str, str], list[Any]] = {}
    for route in config.routes:
        system, _, trigger = route.source.partition(".")
        if not trigger or system not in config.systems:
            continue
        adapter = adapters.get(system)
        if adapter is None:
            raise ConfigError(f"route {route.name!r}: system {system!r} has no adapter instance", route.location)
        offered = type(adapter).declared_triggers(adapter.settings)
        spec = offered.get(trigger)
        if spec is None:
            raise UnknownNameError(f"trigger of system {system!r}", trigger, offered,
                                   route.locations.get("from", route.location))
        if spec.kind == "webhook":
            continue
        found.setdefault((system, trigger), []).append(route)

    plans: list[TriggerPlan] = []
    for (system, trigger), routes in found.items():
        adapter = adapters[system]
        spec = type(adapter).declared_triggers(adapter.settings)[trigger]
        own = (adapter.settings.get("triggers") or {}).get(trigger) or {}
        schedules = tuple(_check_cron(r.schedule, f"route {r.name!r} timing") for r in routes if r.schedule)
        if not schedules and own.get("schedule"):
            schedules = (_check_cron(str(own["schedule"]), f"systems.{system}.settings.triggers.{trigger}"),)
        interval = parse_duration(own["interval"]) if own.get("interval") is not None else spec.interval
        plans.append(TriggerPlan(system, trigger, interval or DEFAULT_INTERVAL, schedules,
                                 tuple(r.name for r in routes)))
    return plans


@dataclass
class _Progress:
    polls: int = 0
    emitted: int = 0
    duplicates: int = 0
    failures: int = 0  # consecutive
    last_success: float | None = None
    last_error: str | None = None
    next_due: float | None = None


class TriggerRunner:
    """Runs poll/schedule triggers, each in its own thread, until :meth:`stop`.

    ``emit`` receives the events of one poll at once and must return only once they are durable (journaled
    and queued); if it raises, the watermark is not advanced and the poll is retried with backoff.
    """

    def __init__(self, adapters: Mapping[str, Adapter], plans: Sequence[TriggerPlan], store: WatermarkStore,
                 emit: Callable[[list[Event]], None], clock: Callable[[], float] = time.time, *,
                 max_backoff: float = 300.0, elect: Callable[[TriggerPlan], bool] | None = None) -> None:
        #: ``elect(plan)`` is True when this process may poll the trigger now (one runner per trigger across
        #: processes and hosts, see bus/election.py); one that may not stands by until the next due time.
        self.elect = elect
        self.adapters = adapters
        self.plans = list(plans)
        self.store = store
        self.emit = emit
        self.clock = clock
        self.max_backoff = max_backoff
        self._delays = Backoff(1.0, max_backoff)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._locks = {plan.name: threading.Lock() for plan in self.plans}
        self._progress = {plan.name: _Progress() for plan in self.plans}

    @classmethod
    def from_config(cls, config: Config, adapters: Mapping[str, Adapter], store: WatermarkStore,
                    emit: Callable[[list[Event]], None], clock: Callable[[], float] = time.time) -> TriggerRunner:
        return cls(adapters, plan_triggers(config, adapters), store, emit, clock)

    def run_once(self, plan: TriggerPlan) -> int:
        """Poll once, emit the new records, then store the watermark. Returns how many events were emitted.

        Raises whatever the adapter or ``emit`` raised; the watermark is then left as it was.
        """
        with self._locks.setdefault(plan.name, threading.Lock()):
            adapter = self.adapters[plan.system]
            watermark = self.store.get_watermark(plan.system, plan.trigger) or None
            result = adapter.poll(plan.trigger, watermark)
            keys = [key for key, _ in result.records]
            unseen = set(self.store.filter_unseen(plan.system, plan.trigger, keys)) if keys else set()
            events: list[Event] = []
            taken: set[str] = set()
            for key, payload in result.records:
                if key in unseen and key not in taken:
                    taken.add(key)
                    events.append(Event(type=plan.name, source=f"ironbus/{plan.system}", data=payload,
                                        id=record_event_id(plan.system, plan.trigger, key),
                                        correlationid=result.correlations.get(key, ""),
                                        causationid=result.causations.get(key),
                                        extensions={"dedupkey": key}))
            if events:
                self.emit(events)
            # An adapter that returns no watermark (nothing new) keeps the one it had.
            new_mark = result.watermark if result.watermark is not None else watermark
            self.store.set_watermark(plan.system, plan.trigger, new_mark or "", keys)
            progress = self._progress.setdefault(plan.name, _Progress())
            progress.polls += 1
            progress.emitted += len(events)
            progress.duplicates += len(keys) - len(events)
            log.info("trigger polled", trigger=plan.name, records=len(keys), emitted=len(events),
                     watermark=new_mark, event_ids=[e.id for e in events][:20])
            return len(events)

    def _backoff(self, failures: int, retry_after: float | None) -> float:
        return max(self._delays.delay(failures), retry_after or 0.0)

    def _step(self, plan: TriggerPlan) -> float:
        """Run one poll and return when the next one is due."""
        progress = self._progress[plan.name]
        if self.elect is not None and not self.elect(plan):
            return plan.next_due(self.clock())  # another process runs this trigger; stand by on its schedule
        try:
            self.run_once(plan)
        except TransientError as exc:
            progress.failures += 1
            progress.last_error = str(exc)
            delay = self._backoff(progress.failures, exc.retry_after)
            log.warning("trigger poll failed, backing off", trigger=plan.name, error=str(exc), retry_in=delay)
            return self.clock() + delay
        except PermanentError as exc:
            progress.failures += 1
            progress.last_error = str(exc)
            log.error("trigger poll failed permanently; waiting for the next regular poll", trigger=plan.name,
                      error=str(exc))
            return plan.next_due(self.clock())
        except Exception as exc:  # a bug in an adapter or a down journal must not kill the trigger thread
            progress.failures += 1
            progress.last_error = f"{type(exc).__name__}: {exc}"
            delay = self._backoff(progress.failures, None)
            log.exception("trigger poll crashed, backing off", trigger=plan.name, retry_in=delay)
            return self.clock() + delay
        progress.failures = 0
        progress.last_error = None
        progress.last_success = self.clock()
        return plan.next_due(self.clock())

    def _loop(self, plan: TriggerPlan) -> None:
        # Interval polls catch up at start; cron triggers wait for their next fire time.
        due = plan.next_due(self.clock()) if plan.schedules else self.clock()
        while not self._stop.is_set():
            self._progress[plan.name].next_due = due
            wait = due - self.clock()
            if wait > 0 and self._stop.wait(wait):
                break
            due = self._step(plan)

    def start(self) -> None:
        """Start one daemon thread per trigger."""
        self._stop.clear()
        for plan in self.plans:
            thread = threading.Thread(target=self._loop, args=(plan,), name=f"trigger-{plan.name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every trigger thread, waiting up to ``timeout`` seconds for a poll in progress to finish."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads = [t for t in self._threads if t.is_alive()]

    def status(self) -> dict[str, dict[str, Any]]:
        """Per trigger: polls, emitted, duplicates dropped, consecutive failures, last error, next due time."""
        return {name: dict(vars(p)) for name, p in sorted(self._progress.items())}


class Batcher(Generic[T]):
    """Collect items and hand them to ``flush`` in lists of up to ``size``, at the latest ``window`` seconds
    after the first item of a batch arrived. Thread-safe.

    A full batch is flushed in the thread that added its last item (so a producer feels back-pressure); a
    batch whose window expired is flushed by a background thread. Batches are flushed one at a time, in
    arrival order. When ``flush`` raises, the items go back to the front of the queue: from ``add`` the error
    reaches the caller, from the timer it is logged and the batch is retried one window later.
    """

    def __init__(self, size: int, window: float, flush: Callable[[list[T]], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        if size < 1:
            raise ValueError(f"batch size must be >= 1, got {size}")
        self.size = size
        self.window = window
        self._flush = flush
        self._clock = clock
        self._items: list[T] = []
        self._first_at = 0.0
        self._cond = threading.Condition()
        self._flush_lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._timer, name="batcher", daemon=True)
        self._thread.start()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def add(self, item: T) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError("batcher is closed")
            if not self._items:
                self._first_at = self._clock()
                self._cond.notify_all()
            self._items.append(item)
            full = len(self._items) >= self.size
        if full:
            self._flush_some(only_if_full=True)

    def flush(self) -> None:
        """Flush everything now (in batches of ``size``)."""
        while len(self) and self._flush_some(only_if_full=False):
            pass

    def _flush_some(self, only_if_full: bool) -> bool:
        with self._flush_lock:
            with self._cond:
                if not self._items or (only_if_full and len(self._items) < self.size):
                    return False
                batch, self._items = self._items[:self.size], self._items[self.size:]
                if self._items:
                    self._first_at = self._clock()
            try:
                self._flush(batch)
            except BaseException:
                with self._cond:
                    self._items[:0] = batch
                    self._first_at = self._clock()
                raise
            return True

    def _timer(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                if not self._items:
                    self._cond.wait()
                    continue
                remaining = self._first_at + self.window - self._clock()
                if remaining > 0:
                    self._cond.wait(remaining)
                    continue
            try:
                self._flush_some(only_if_full=False)
            except Exception:
                log.exception("batch flush failed; retrying after the window", items=len(self))

    def close(self) -> None:
        """Flush what is left (errors reach the caller) and stop the timer thread."""
        try:
            self.flush()
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()
            self._thread.join(5)
