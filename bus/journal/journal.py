"""The journal: the durable record of every event and every delivery attempt.

It is the source of truth for dead letters, replay, trace and idempotency. One :class:`Journal` per process
is shared by all its threads; any number of processes may share one database (SQLite on one host,
PostgreSQL across hosts). Batch methods exist because the hot path must be lean: the worker settles a whole
batch of deliveries in one transaction.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Connection

from bus.envelope import Event
from bus.errors import TransientError
from bus.journal import tables
from bus.journal.adapterstate import JournalAdapterStore, pending_items
from bus.journal.deadletters import DeadLetterStore
from bus.journal.engine import create_engine, read, reading, write, writing
from bus.journal.leaders import LeaderLeases
from bus.journal.limiterstate import CircuitStates, RateBuckets
from bus.journal.marks import KeyMarks
from bus.journal.migrations import migrate
from bus.journal.outboxrows import OutboxRows
from bus.journal.parked import ParkedDeliveries
from bus.journal.processes import ProcessStates
from bus.journal.prune import prune
from bus.journal.queuerows import QueueRows
from bus.journal.records import (
    ORIGINS,
    AttemptRow,
    DeadLetter,
    DeadLetterRow,
    DeliveryRow,
    DeliveryUpdate,
    XrefRow,
    with_delivering_attempts,
)
from bus.journal.settling import DeliverySettling
from bus.journal.sql import ListSelect, ManyRows, chunks, insert_for, loads
from bus.journal.unit import UnitOfWork, unit_of_work
from bus.journal.watermarks import Watermarks
from bus.journal.xref import DurableXref

__all__ = ["DEFAULT_URL", "BatchFacts", "Journal", "ParkedAhead"]

log = structlog.get_logger(__name__)

DEFAULT_URL = "sqlite:///var/ironbus.sqlite"

_E, _D, _A = tables.events, tables.deliveries, tables.attempts


def _delivery(r: Any) -> DeliveryRow:
    return DeliveryRow(idempotency_key=r.idempotency_key, event_id=r.event_id, route=r.route, target=r.target,
                       status=r.status, attempts=r.attempts, parks=r.parks, next_attempt_at=r.next_attempt_at,
                       last_error=r.last_error, reference=r.reference, payload=loads(r.payload),
                       updated_at=r.updated_at, delivered_at=r.delivered_at, started_at=r.started_at,
                       duration_ms=r.duration_ms, trace_id=r.trace_id, span_ids=r.span_ids)


class ParkedAhead(NamedTuple):
    """A parked delivery that later events of its key wait behind (see :meth:`Journal.parked_ahead`)."""

    idempotency_key: str
    received_at: float  # when its event arrived
    next_attempt_at: float | None


@dataclass
class BatchFacts:
    """What a worker batch needs to know before it delivers, read in one snapshot (:meth:`Journal.batch_facts`)."""

    delivered: set[str] = field(default_factory=set)  # idempotency keys already delivered
    last_applied: dict[tuple[str, str], int] = field(default_factory=dict)  # (scope, key) -> sequence
    parked_ahead: dict[tuple[str, str, str], ParkedAhead] = field(default_factory=dict)  # (route, target, key)
    received_at: dict[str, float] = field(default_factory=dict)  # of the batch's events, when some key waits
    last_digests: dict[tuple[str, str], str] = field(default_factory=dict)  # (scope, key) -> payload digest


class Journal(DeadLetterStore, Watermarks):
    """The journal on SQLite (default) or PostgreSQL; migrates the schema when opened. Thread-safe."""

    def __init__(self, url: str = DEFAULT_URL) -> None:
        self.engine = create_engine(url)
        self.url = self.engine.url.render_as_string(hide_password=True)
        self.dialect: str = self.engine.dialect.name
        try:
            self.version = migrate(self.engine)
        except sa.exc.OperationalError as exc:
            # the database is not there (server down, wrong host, unreadable file): say so in one line
            self.engine.dispose()
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
            raise TransientError(f"journal {self.url} is unreachable: {reason}; check that the database is running "
                                 "and the URL (--journal or $IRONBUS_JOURNAL) is right") from None
        self.xref = DurableXref(self.engine)
        #: per-key marks: last applied sequence and last delivered payload digest
        self.marks = KeyMarks(self.engine)
        #: each running process's protection snapshot
        self.processes = ProcessStates(self.engine)
        #: parked deliveries, for the parker (bus/parking.py)
        self.parked = ParkedDeliveries(self.engine)
        #: inbound events journaled and not yet published (bus/outbox.py)
        self.outbox = OutboxRows(self.engine)
        #: who runs each poll/schedule trigger (bus/election.py)
        self.leases = LeaderLeases(self.engine)
        #: rate-limit buckets and circuits shared by every process (bus/sharedstate.py)
        self.rate_buckets = RateBuckets(self.engine)
        self.circuits = CircuitStates(self.engine)
        DeadLetterStore.__init__(self, self.engine)
        Watermarks.__init__(self, self.engine)
        self._statements()

    def _statements(self) -> None:
        """Build the hot-path statements once: constructing them per call costs more than running them."""
        insert_events = insert_for(self.dialect, _E).on_conflict_do_nothing(index_elements=[_E.c.id])
        self._insert_events_many = ManyRows(insert_events, as_arrays=[])
        self._settling = DeliverySettling(self.dialect)
        # By primary key alone, the status is checked here: with a status condition in the query, PostgreSQL
        # (statistics not yet gathered on a filling table) led with the (route, target, status) index and read
        # every delivered row of the table on each batch.
        self._delivery_states = ListSelect(lambda in_: sa.select(_D.c.idempotency_key, _D.c.status).where(
            in_("keys", _D.c.idempotency_key)))
        # Led by the (route, target, status) index: with nothing parked on these routes, as is usual, the
        # query ends there without touching the events.
        self._parked = ListSelect(lambda in_: sa.select(
            _D.c.idempotency_key, _D.c.route, _D.c.target, _E.c.key, _E.c.received_at, _D.c.next_attempt_at)
            .join(_E, _E.c.id == _D.c.event_id)
            .where(in_("routes", _D.c.route), in_("targets", _D.c.target), _D.c.status == "parked",
                   in_("keys", _E.c.key)))

    # -- events --------------------------------------------------------------------------------------------
    def unit(self) -> AbstractContextManager[UnitOfWork]:
        """A unit of work: the writes made with it (``unit=``) commit together when the block ends."""
        return unit_of_work(self.engine)

    def ping(self) -> None:
        """One cheap round trip (readiness probes); raises when the database cannot be reached."""
        with read(self.engine) as conn:
            conn.execute(sa.text("SELECT 1"))

    def record_events(self, events: Sequence[tuple[Event, str]], *, unit: UnitOfWork | None = None,
                      conn: Connection | None = None, bodies: Sequence[bytes] | None = None) -> None:
        """Journal inbound events with their origin, in one transaction (``unit``'s, or the caller's ``conn``,
        when given). Idempotent on the event id: a re-sent event keeps its first record. ``bodies``: the events'
        :meth:`Event.encode` when the caller has them already (ingest sends the same bytes to the queue)."""
        if not events:
            return
        if bodies is None:
            bodies = [event.encode() for event, _ in events]
        elif len(bodies) != len(events):
            raise ValueError(f"{len(bodies)} bodies for {len(events)} events")
        now = time.time()
        rows = []
        for (event, origin), body in zip(events, bodies, strict=True):
            if origin not in ORIGINS:
                raise ValueError(f"event origin {origin!r} is not one of {sorted(ORIGINS)}")
            rows.append({"id": event.id, "type": event.type, "source": event.source, "subject": event.subject,
                         "key": event.key, "sequence": event.sequence, "correlationid": event.correlationid,
                         "causationid": event.causationid, "time": event.time, "received_at": now,
                         "origin": origin, "body": body})
        with writing(self.engine, unit.conn if unit is not None else conn) as conn:
            self._insert_events_many.execute(conn, rows)

    def get_event(self, event_id: str) -> Event | None:
        with read(self.engine) as conn:
            body = conn.execute(sa.select(_E.c.body).where(_E.c.id == event_id)).scalar()
        return None if body is None else Event.decode(bytes(body))

    def events_for(self, *, event_ids: Sequence[str] | None = None, correlationid: str | None = None,
                   key: str | None = None, route: str | None = None, since: float | None = None,
                   until: float | None = None, limit: int | None = None) -> list[Event]:
        """Journaled events matching every given filter, in the order they were received (replay, trace).
        ``route`` selects events that have a delivery on that route; ``since``/``until`` bound received_at."""
        query = sa.select(_E.c.body).order_by(_E.c.received_at, _E.c.id)
        if event_ids is not None:
            query = query.where(_E.c.id.in_(list(event_ids)))
        if correlationid is not None:
            query = query.where(_E.c.correlationid == correlationid)
        if key is not None:
            query = query.where(_E.c.key == key)
        if route is not None:
            query = query.where(_E.c.id.in_(sa.select(_D.c.event_id).where(_D.c.route == route)))
        if since is not None:
            query = query.where(_E.c.received_at >= since)
        if until is not None:
            query = query.where(_E.c.received_at < until)
        if limit is not None:
            query = query.limit(limit)
        with read(self.engine) as conn:
            return [Event.decode(bytes(body)) for body in conn.execute(query).scalars()]

    # -- deliveries ----------------------------------------------------------------------------------------
    def settle(self, outcomes: Sequence[DeliveryUpdate], *, unit: UnitOfWork | None = None,
               spans: Mapping[str, tuple[str, str]] | None = None) -> None:
        """Record delivery outcomes in one transaction (``unit``'s when given): upsert each delivery's state, and
        log its attempt (the attempt that delivers is kept on the delivery row instead: see
        :mod:`bus.journal.settling`). A delivery already ``delivered`` is never downgraded. ``spans``: the
        attempts' ``(trace_id, span_ids)`` by idempotency key (tracing on)."""
        if not outcomes:
            return
        with writing(self.engine, unit.conn if unit is not None else None) as conn:
            self._settling.write(conn, outcomes, spans or {})

    def delivery(self, idempotency_key: str) -> DeliveryRow | None:
        with read(self.engine) as conn:
            row = conn.execute(sa.select(_D).where(_D.c.idempotency_key == idempotency_key)).first()
        return None if row is None else _delivery(row)

    def delivered_keys(self, keys: Sequence[str], *, conn: Connection | None = None) -> set[str]:
        """The idempotency keys among ``keys`` whose delivery already succeeded (skip them on redelivery).
        ``conn``: read within the caller's read transaction (see :func:`bus.journal.engine.reading`)."""
        found: set[str] = set()
        with reading(self.engine, conn) as conn:
            for part in chunks(list(keys)):
                found.update(row.idempotency_key for row in self._delivery_states.execute(conn, keys=part)
                             if row.status == "delivered")
        return found

    def parked_ahead(self, scopes: Iterable[tuple[str, str, str]], event_ids: Sequence[str], *,
                     conn: Connection | None = None,
                     ) -> tuple[dict[tuple[str, str, str], ParkedAhead], dict[str, float]]:
        """The oldest parked delivery per ``(route, target, key)`` scope, and when the given events arrived.

        A delivery parked for a key holds back later events of that key on the same route and target (see
        the worker), so that they are not applied before it. The second result (``received_at`` of
        ``event_ids``) tells which events are later; it is only read when some scope has a parked delivery.
        """
        wanted = set(scopes)
        keys = sorted({key for _, _, key in wanted})
        found: dict[tuple[str, str, str], ParkedAhead] = {}
        if not keys:
            return found, {}
        routes, targets = sorted({r for r, _, _ in wanted}), sorted({t for _, t, _ in wanted})
        with reading(self.engine, conn) as conn:
            for part in chunks(keys):
                for row in self._parked.execute(conn, routes=routes, targets=targets, keys=part):
                    scope = (row.route, row.target, row.key)
                    if scope not in wanted:
                        continue
                    current = found.get(scope)
                    if current is None or (row.received_at, row.idempotency_key) < (current.received_at,
                                                                                      current.idempotency_key):
                        found[scope] = ParkedAhead(row.idempotency_key, row.received_at, row.next_attempt_at)
            received: dict[str, float] = {}
            if found:
                for part in chunks(list(event_ids)):
                    received.update((r.id, r.received_at) for r in conn.execute(
                        sa.select(_E.c.id, _E.c.received_at).where(_E.c.id.in_(list(part)))))
        return found, received

    def deliveries_for_events(self, event_ids: Sequence[str]) -> list[DeliveryRow]:
        rows: list[DeliveryRow] = []
        with read(self.engine) as conn:
            for part in chunks(list(event_ids)):
                rows.extend(_delivery(r) for r in conn.execute(
                    sa.select(_D).where(_D.c.event_id.in_(part)).order_by(_D.c.updated_at, _D.c.idempotency_key)))
        return rows

    def attempts_for(self, idempotency_key: str) -> list[AttemptRow]:
        """Every attempt of one delivery in the order they started: the attempt log's rows and the delivering
        attempt kept on the delivery row (see :meth:`settle`)."""
        with read(self.engine) as conn:
            logged = [AttemptRow(**r._mapping) for r in conn.execute(
                sa.select(_A).where(_A.c.idempotency_key == idempotency_key).order_by(_A.c.id))]
            row = conn.execute(sa.select(_D).where(_D.c.idempotency_key == idempotency_key)).first()
        return with_delivering_attempts(logged, [] if row is None else [_delivery(row)])

    # -- dead letters (storage in DeadLetterStore) ---------------------------------------------------------
    def dead_letter(self, letters: Sequence[DeadLetter], *, unit: UnitOfWork | None = None) -> None:
        self.add(letters, conn=unit.conn if unit is not None else None)

    # -- per-key marks (the rules in bus.ordering) ---------------------------------------------------------
    def mark_applied(self, marks: Sequence[tuple[str, str, int]], *, unit: UnitOfWork | None = None) -> None:
        """Record applied sequences ``(scope, key, sequence)``; a mark never moves back."""
        self.marks.mark_applied(marks, conn=unit.conn if unit is not None else None)

    def remember_digests(self, digests: dict[tuple[str, str], str], *, unit: UnitOfWork | None = None) -> None:
        """Store the digests of payloads just delivered (``skip_unchanged``)."""
        self.marks.remember_digests(digests, conn=unit.conn if unit is not None else None)

    def batch_facts(self, delivery_keys: Sequence[str], *, sequences: Sequence[tuple[str, str]] = (),
                    scopes: Iterable[tuple[str, str, str]] = (), event_ids: Sequence[str] = (),
                    digests: Sequence[tuple[str, str]] = ()) -> BatchFacts:
        """Everything a worker batch asks before delivering, in one read transaction (one snapshot): which
        deliveries already succeeded, the last applied sequences and payload digests of ``(scope, key)``
        pairs, and the parked deliveries later events of ``(route, target, key)`` scopes wait behind."""
        with read(self.engine) as conn:
            facts = BatchFacts(delivered=self.delivered_keys(delivery_keys, conn=conn),
                               last_applied=self.marks.last_sequences(sequences, conn=conn))
            facts.parked_ahead, facts.received_at = self.parked_ahead(scopes, event_ids, conn=conn)
            facts.last_digests = self.marks.last_digests(digests, conn=conn)
        return facts

    # -- parking (re-driven by bus.parking.Parker) ---------------------------------------------------------
    def dead_letters(self, *, route: str | None = None, target: str | None = None, error: str | None = None,
                     since: float | None = None, state: str | None = "dead", limit: int | None = 100,
                     ) -> list[DeadLetterRow]:
        return self.find(route=route, target=target, error=error, since=since, state=state, limit=limit)

    def dead_letter_by_id(self, id: int) -> DeadLetterRow | None:
        return self.by_id(id)

    def mark_dead_letters(self, ids: Sequence[int], state: str) -> int:
        return self.mark(ids, state)

    # -- operations ----------------------------------------------------------------------------------------
    def status_counts(self) -> dict[str, Any]:
        """``{"deliveries": {route: {target: {status: n}}}, "dead_letters": n, "events": n}``."""
        out: dict[str, Any] = {"deliveries": {}}
        with read(self.engine) as conn:
            for route, target, status, n in conn.execute(
                    sa.select(_D.c.route, _D.c.target, _D.c.status, sa.func.count())
                    .group_by(_D.c.route, _D.c.target, _D.c.status)):
                out["deliveries"].setdefault(route, {}).setdefault(target, {})[status] = int(n)
            out["events"] = int(conn.execute(sa.select(sa.func.count()).select_from(_E)).scalar() or 0)
        out["dead_letters"] = self.count("dead")
        return out

    def prune(self, older_than_days: float) -> dict[str, int]:
        """Delete what is older than ``older_than_days`` and needs no more work (see :func:`prune.prune`)."""
        return prune(self.engine, older_than_days)

    def xref_rows(self, entity: str | None = None) -> list[XrefRow]:
        """Every cross reference (of one entity), for ``ironbus xref export`` and checks."""
        return self.xref.rows(entity)

    def set_event_key(self, event_id: str, key: str) -> None:
        """Give a journaled event that had no business key its key (never replaces one it has)."""
        with write(self.engine) as conn:
            conn.execute(sa.update(_E).where(_E.c.id == event_id, _E.c.key.is_(None)).values(key=key))

    def oldest_ready_age(self) -> float | None:
        """How long the oldest ready message of the embedded queue has waited (``ironbus status``)."""
        return QueueRows(self.engine).oldest_ready_age(time.time())

    def pending_adapter_items(self, prefix: str = "awaiting:") -> list[dict[str, Any]]:
        """Work adapters sent and still wait on (``ironbus status``; see :func:`adapterstate.pending_items`)."""
        return pending_items(self.engine, prefix)

    def adapter_store(self, system: str) -> JournalAdapterStore:
        """The durable :class:`~adapters.base.AdapterStore` of ``system`` (bound before the adapter opens)."""
        return JournalAdapterStore(self.engine, system)

    def close(self) -> None:
        self.engine.dispose()
