"""What the console's views read from the journal: searches, transactions, route and queue figures, audit.

Every query here is bounded (pages, ``LIMIT``) and led by an index made by the journal's migrations, so a
view stays fast on a journal of millions of events (figures in docs/console.md).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa

from bus import telemetry
from bus.envelope import Event
from bus.journal import Journal, tables
from bus.journal.engine import read, write
from bus.journal.records import AttemptRow, DeadLetterRow, with_delivering_attempts
from bus.journal.sql import chunks, loads
from bus.tracing import build_trace

__all__ = ["Page", "SearchQuery", "audit", "audit_rows", "route_figures", "search", "transaction"]

_E, _D, _A, _Q = tables.events, tables.deliveries, tables.attempts, tables.queue
PAGE = 50


@dataclass(frozen=True)
class SearchQuery:
    """The Search view's filters; empty strings mean "any". ``before`` is the paging cursor
    ``"<received_at>:<event id>"`` of the last row of the previous page (newest first)."""

    key: str = ""
    event_id: str = ""
    correlation: str = ""
    route: str = ""
    system: str = ""
    status: str = ""
    since: float | None = None
    until: float | None = None
    before: str = ""
    limit: int = PAGE


@dataclass
class Page:
    rows: list[dict[str, Any]] = field(default_factory=list)
    next_cursor: str | None = None
    seconds: float = 0.0


def search(journal: Journal, q: SearchQuery) -> Page:
    """One page of events, newest first, matching every filter; each row with its deliveries' statuses."""
    started = time.perf_counter()
    query = sa.select(_E.c.id, _E.c.type, _E.c.source, _E.c.key, _E.c.correlationid, _E.c.causationid,
                      _E.c.received_at, _E.c.origin)
    if q.event_id:
        query = query.where(_E.c.id == q.event_id.strip())
    if q.key:
        query = query.where(_E.c.key == q.key.strip())
    if q.correlation:
        query = query.where(_E.c.correlationid == q.correlation.strip())
    if q.since is not None:
        query = query.where(_E.c.received_at >= q.since)
    if q.until is not None:
        query = query.where(_E.c.received_at < q.until)
    if q.route or q.status or q.system:
        query = query.where(_delivery_filter(q, journal.dialect == "sqlite"))
    if q.before:
        at, _, last_id = q.before.partition(":")
        try:
            cursor = float(at)
        except ValueError:
            cursor = None
        if cursor is not None:
            query = query.where(sa.or_(_E.c.received_at < cursor,
                                       sa.and_(_E.c.received_at == cursor, _E.c.id < last_id)))
    query = query.order_by(_E.c.received_at.desc(), _E.c.id.desc()).limit(q.limit + 1)
    with read(journal.engine) as conn:
        found = conn.execute(query).all()
        more = len(found) > q.limit
        found = found[:q.limit]
        statuses: dict[str, dict[str, int]] = {}
        ids = [r.id for r in found]
        for part in chunks(ids):
            for event_id, status, n in conn.execute(
                    sa.select(_D.c.event_id, _D.c.status, sa.func.count()).where(_D.c.event_id.in_(part))
                    .group_by(_D.c.event_id, _D.c.status)):
                statuses.setdefault(event_id, {})[status] = int(n)
    rows = [{"id": r.id, "type": r.type, "source": r.source, "key": r.key, "correlationid": r.correlationid,
             "causationid": r.causationid, "received_at": r.received_at, "origin": r.origin,
             "statuses": statuses.get(r.id, {})} for r in found]
    cursor_text = f"{found[-1].received_at!r}:{found[-1].id}" if more and found else None
    return Page(rows, cursor_text, time.perf_counter() - started)


# Statuses few deliveries have: a search for them over all time starts from the deliveries' (status, route)
# index. Otherwise (other statuses, a route or system alone, or a time range that bounds the scan) the events
# are read newest first by their time index and each is checked for a matching delivery: either way a page
# needs few rows read.
_RARE = frozenset({"dead", "parked", "invalid", "stale", "pending"})


def _delivery_filter(q: SearchQuery, sqlite: bool) -> Any:
    if q.status in _RARE and q.since is None and q.until is None:
        conds = [_D.c.status == q.status]
        if q.route:
            conds.append(_D.c.route == q.route)
        if q.system:
            conds.append(sa.and_(_D.c.target >= f"{q.system}.", _D.c.target < f"{q.system}/"))
        return _E.c.id.in_(sa.select(_D.c.event_id).where(*conds))
    # Checked per event by its event_id index. On SQLite the columns are wrapped so that its planner cannot
    # prefer an index on them (it took the (route, delivered_at) index and read a whole route's deliveries for
    # every event); PostgreSQL plans a semi-join well with the plain columns and worse with wrapped ones.
    route: Any = _D.c.route
    status: Any = _D.c.status
    target: Any = _D.c.target
    if sqlite:
        route, status, target = (sa.func.coalesce(c, "") for c in (route, status, target))
    conds = []
    if q.route:
        conds.append(route == q.route)
    if q.status:
        conds.append(status == q.status)
    if q.system:
        conds.append(sa.and_(target >= f"{q.system}.", target < f"{q.system}/"))
    # a correlated "first matching delivery" (LIMIT 1) rather than EXISTS: PostgreSQL turns an EXISTS under OR
    # into a hashed subplan over every matching delivery, and may hash-join a plain one; this it cannot
    one = sa.select(sa.literal(1)).where(_D.c.event_id == _E.c.id, *conds).limit(1).scalar_subquery()
    if q.system and not (q.route or q.status):
        # a system alone: events it sent, or that had a delivery to it
        return sa.or_(_E.c.source == f"ironbus/{q.system}", one.is_not(None))
    return one.is_not(None)


def transaction(journal: Journal, event_id: str) -> dict[str, Any] | None:
    """The whole business change an event belongs to, for the Transaction view: ``ironbus trace``'s chain,
    with each delivery's mapped document and attempts, the events' trace context and a timeline."""
    chains = build_trace(journal, event_id=event_id)
    if not chains:
        return None
    chain = chains[0]
    ids = [e["id"] for e in chain["events"]]
    deliveries = journal.deliveries_for_events(ids)
    rows = {(d.event_id, d.route, d.target): d for d in deliveries}
    logged: list[AttemptRow] = []
    bodies: dict[str, Event] = {}
    received: dict[str, float] = {}
    with read(journal.engine) as conn:
        for part in chunks(ids):
            logged.extend(AttemptRow(**a._mapping) for a in conn.execute(
                sa.select(_A).where(_A.c.event_id.in_(part)).order_by(_A.c.id)))
            for r in conn.execute(sa.select(_E.c.id, _E.c.body, _E.c.received_at, _E.c.origin)
                                  .where(_E.c.id.in_(part))):
                bodies[r.id] = Event.decode(bytes(r.body))
                received[r.id] = r.received_at
    attempts: dict[str, list[dict[str, Any]]] = {}
    for a in with_delivering_attempts(logged, deliveries):
        attempts.setdefault(a.idempotency_key, []).append({
            "attempt": a.attempt, "status": a.status, "error": a.error, "started_at": a.started_at,
            "duration_ms": round(a.duration_ms, 1), "trace_id": a.trace_id,
            "span_ids": a.span_ids.split() if a.span_ids else []})
    start = min(received.values(), default=0.0)
    end = start
    for event in chain["events"]:
        body = bodies.get(event["id"])
        event["received_at"] = received.get(event["id"])
        event["data"] = body.data if body is not None else None
        event["trace_id"] = telemetry.trace_id_for(body) if body is not None else None
        parent = telemetry.traceparent_of(body) if body is not None else None
        event["span_id"] = parent[1] if parent else None
        for d in event["deliveries"]:
            row = rows.get((event["id"], d["route"], d["target"]))
            d["idempotency_key"] = row.idempotency_key if row else None
            d["payload"] = row.payload if row else None
            d["attempt_log"] = attempts.get(d["idempotency_key"] or "", [])
            system, _, operation = d["target"].partition(".")
            d["system"], d["operation"] = system, operation
            for a in d["attempt_log"]:
                end = max(end, a["started_at"] + a["duration_ms"] / 1000.0)
        end = max(end, event["received_at"] or start)
    span = max(end - start, 0.001)
    timeline = []
    for event in chain["events"]:
        at = event["received_at"] or start
        timeline.append({"label": f"{event['type']} received", "offset": (at - start) / span * 100, "width": 0.6,
                         "kind": "event", "ms": round((at - start) * 1000, 1)})
        for d in event["deliveries"]:
            for a in d["attempt_log"]:
                timeline.append({"label": f"{d['route']} → {d['target']} #{a['attempt']} {a['status']}",
                                 "offset": (a["started_at"] - start) / span * 100,
                                 "width": max(a["duration_ms"] / 1000.0 / span * 100, 0.6), "kind": a["status"],
                                 "ms": round((a["started_at"] - start) * 1000, 1)})
    chain["timeline"] = timeline
    chain["duration_ms"] = round((end - start) * 1000, 1)
    chain["systems"] = sorted({e["source"].removeprefix("ironbus/") for e in chain["events"]}
                              | {d["system"] for e in chain["events"] for d in e["deliveries"] if d["system"] != "*"})
    chain["trace_id"] = next((e["trace_id"] for e in chain["events"] if e["trace_id"]), None)
    return chain


_figures_cache: dict[int, tuple[float, dict[str, dict[str, Any]]]] = {}


def route_figures(journal: Journal, window: float = 300.0, sample: int = 1000,
                  max_age: float = 4.0) -> dict[str, dict[str, Any]]:
    """Per route: delivery counts by status (all time), deliveries per second over the last ``window``
    seconds, and the p99 accept-to-delivered latency of its last ``sample`` deliveries. The counts group the
    whole delivery table (a quarter second on a million), so one result serves every viewer for ``max_age``."""
    cached = _figures_cache.get(id(journal))
    if cached is not None and time.monotonic() - cached[0] < max_age:
        return cached[1]
    out = _route_figures(journal, window, sample)
    _figures_cache[id(journal)] = (time.monotonic(), out)
    return out


def _route_figures(journal: Journal, window: float, sample: int) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    now = time.time()
    with read(journal.engine) as conn:
        for route, status, n in conn.execute(sa.select(_D.c.route, _D.c.status, sa.func.count())
                                             .group_by(_D.c.route, _D.c.status)):
            out.setdefault(route, {"counts": {}})["counts"][status] = int(n)
        for route, figures in out.items():
            recent = conn.execute(sa.select(sa.func.count()).select_from(_D).where(
                _D.c.route == route, _D.c.delivered_at >= now - window)).scalar() or 0
            figures["rate"] = round(int(recent) / window, 2)
            last = sa.select(_D.c.event_id, _D.c.delivered_at).where(
                _D.c.route == route, _D.c.delivered_at.is_not(None)).order_by(_D.c.delivered_at.desc()) \
                .limit(sample).subquery()
            latencies = sorted(float(x) for x in conn.execute(
                sa.select(last.c.delivered_at - _E.c.received_at).join(_E, _E.c.id == last.c.event_id)).scalars())
            figures["p99_ms"] = round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, 1) \
                if latencies else None
    return out


def queue_figures(journal: Journal) -> dict[str, Any]:
    """The embedded queue by lane (route and target, the unit it orders and parks by): depth, leased,
    delayed and the age of the oldest message. Empty for a broker queue, which the broker reports itself."""
    now = time.time()
    lanes: list[dict[str, Any]] = []
    with read(journal.engine) as conn:
        inspector = sa.inspect(conn)
        if not inspector.has_table(_Q.name):
            return {"lanes": lanes, "oldest_age": None}
        leased = sa.case((_Q.c.lease_until > now, 1), else_=0)
        delayed = sa.case((sa.and_(_Q.c.available_at > now, sa.or_(_Q.c.lease_until.is_(None),
                                                                      _Q.c.lease_until <= now)), 1), else_=0)
        for r in conn.execute(sa.select(_Q.c.route, _Q.c.target, sa.func.count().label("n"),
                                        sa.func.sum(leased).label("leased"), sa.func.sum(delayed).label("delayed"),
                                        sa.func.min(_Q.c.enqueued_at).label("oldest"),
                                        sa.func.max(_Q.c.parks).label("parks"))
                              .group_by(_Q.c.route, _Q.c.target).order_by(_Q.c.route, _Q.c.target)):
            lanes.append({"lane": f"{r.route or '*'} → {r.target or '*'}", "depth": int(r.n),
                          "leased": int(r.leased or 0), "delayed": int(r.delayed or 0),
                          "oldest_age": round(now - r.oldest, 1) if r.oldest else None, "parks": int(r.parks or 0)})
    ages = [lane["oldest_age"] for lane in lanes if lane["oldest_age"] is not None]
    return {"lanes": lanes, "oldest_age": max(ages) if ages else None}


def parked_counts(journal: Journal) -> dict[str, int]:
    with read(journal.engine) as conn:
        return {route: int(n) for route, n in conn.execute(
            sa.select(_D.c.route, sa.func.count()).where(_D.c.status == "parked").group_by(_D.c.route))}


def watermarks(journal: Journal) -> list[dict[str, Any]]:
    now = time.time()
    with read(journal.engine) as conn:
        return [{"system": r.system, "trigger": r.trigger, "value": r.value, "updated_at": r.updated_at,
                 "lag": round(now - r.updated_at, 1)}
                for r in conn.execute(sa.select(tables.watermarks).order_by(tables.watermarks.c.system,
                                                                            tables.watermarks.c.trigger))]


def system_errors(journal: Journal, since: float) -> dict[str, dict[str, Any]]:
    """Per target system: dead letters still waiting, and the most recent failure since ``since`` among the
    last 50,000 attempts."""
    dl = tables.dead_letters
    out: dict[str, dict[str, Any]] = {}
    with read(journal.engine) as conn:
        for target, n in conn.execute(sa.select(dl.c.target, sa.func.count()).where(dl.c.state == "dead")
                                      .group_by(dl.c.target)):
            system = (target or "*").partition(".")[0]
            out.setdefault(system, {"dead": 0, "last_error": None, "last_error_at": None})["dead"] += int(n)
        # the last failures among the newest attempts (by primary key: no scan of an old, quiet attempt log)
        newest = int(conn.execute(sa.select(sa.func.max(_A.c.id))).scalar() or 0)
        for r in conn.execute(sa.select(_A.c.target, _A.c.error, _A.c.started_at)
                              .where(_A.c.id > newest - 50_000, _A.c.started_at >= since, _A.c.error.is_not(None))
                              .order_by(_A.c.id.desc()).limit(200)):
            system = r.target.partition(".")[0]
            entry = out.setdefault(system, {"dead": 0, "last_error": None, "last_error_at": None})
            if entry["last_error"] is None:
                entry["last_error"], entry["last_error_at"] = r.error, r.started_at
    return out


# -- dead letters --------------------------------------------------------------------------------------------
def dead_letter_rows(journal: Journal, *, route: str = "", system: str = "", reason: str = "",
                     limit: int = 200) -> list[DeadLetterRow]:
    """Dead letters waiting (oldest first), by route, target system (``system.*`` targets) and reason text."""
    dl = tables.dead_letters
    query = sa.select(dl).where(dl.c.state == "dead").order_by(dl.c.id).limit(limit)
    if route:
        query = query.where(dl.c.route == route)
    if system:
        query = query.where(dl.c.target >= f"{system}.", dl.c.target < f"{system}/")
    if reason:
        query = query.where(sa.func.lower(dl.c.reason).contains(reason.lower(), autoescape=True))
    with read(journal.engine) as conn:
        return [DeadLetterRow(id=r.id, event_id=r.event_id, route=r.route, target=r.target, reason=r.reason,
                              error_kind=r.error_kind, attempts=r.attempts, body=bytes(r.body),
                              created_at=r.created_at, state=r.state) for r in conn.execute(query)]


def edit_dead_letter(journal: Journal, letter_id: int, data: Any, actor: str, role: str) -> tuple[Any, Any]:
    """Replace the event data of a dead letter (still ``dead``) and journal the edit with before and after, in
    one transaction. Returns ``(before, after)``; ValueError when the letter is not a dead event."""
    dl = tables.dead_letters
    with write(journal.engine) as conn:
        row = conn.execute(sa.select(dl.c.body, dl.c.state).where(dl.c.id == letter_id)).first()
        if row is None or row.state != "dead":
            raise ValueError(f"dead letter #{letter_id} is not waiting (it was retried, purged or never existed)")
        event = Event.decode(bytes(row.body))
        edited = event.with_(data=data)
        conn.execute(dl.update().where(dl.c.id == letter_id).values(body=edited.encode()))
        audit(conn, actor, role, "dead_letter.edit", f"dead_letter:{letter_id}",
              {"event_id": event.id, "before": event.data, "after": data})
    return event.data, data


# -- audit ---------------------------------------------------------------------------------------------------
def audit(conn: sa.Connection, actor: str, role: str, action: str, subject: str, detail: Any = None) -> None:
    conn.execute(tables.audit.insert().values(at=time.time(), actor=actor, role=role, action=action,
                                              subject=subject, detail=None if detail is None else
                                              orjson.dumps(detail, default=str).decode()))


def record_audit(journal: Journal, actor: str, role: str, action: str, subject: str, detail: Any = None) -> None:
    with write(journal.engine) as conn:
        audit(conn, actor, role, action, subject, detail)


def audit_rows(journal: Journal, limit: int = 100, subject: str | None = None) -> list[dict[str, Any]]:
    a = tables.audit
    query = sa.select(a).order_by(a.c.id.desc()).limit(limit)
    if subject is not None:
        query = query.where(a.c.subject == subject)
    with read(journal.engine) as conn:
        return [{"id": r.id, "at": r.at, "actor": r.actor, "role": r.role, "action": r.action, "subject": r.subject,
                 "detail": loads(r.detail)} for r in conn.execute(query)]


def letters_for(journal: Journal, event_ids: Sequence[str]) -> list[dict[str, Any]]:
    """The dead letters of these events (any state), by the event-id index."""
    dl = tables.dead_letters
    out: list[dict[str, Any]] = []
    with read(journal.engine) as conn:
        for part in chunks(list(event_ids)):
            out.extend({"id": r.id, "event_id": r.event_id, "route": r.route, "target": r.target,
                        "reason": r.reason, "state": r.state, "created_at": r.created_at}
                       for r in conn.execute(sa.select(dl.c.id, dl.c.event_id, dl.c.route, dl.c.target, dl.c.reason,
                                                       dl.c.state, dl.c.created_at).where(dl.c.event_id.in_(part))))
    return sorted(out, key=lambda r: r["id"])
