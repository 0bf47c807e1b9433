"""``ironbus trace``: the causal chain of a business transaction, read back from the journal.

Events of one transaction share a ``correlationid``; each follow-up names its cause in ``causationid``. The
trace is that tree, with every delivery (route, target, status, attempts, timing, the target's reference)
hung under the event it delivered. A replay journals one marker per published batch (:mod:`bus.replaymarks`);
the trace shows it under each event of the batch, as an ``ironbus.replayed`` child.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bus.envelope import Event
from bus.journal import Journal
from bus.journal.records import DeliveryRow
from bus.journal.stream import EventSelection, event_chunks
from bus.outbox import inbound_states
from bus.replaymarks import REPLAY_CORRELATION, replays_of

__all__ = ["build_trace", "render_trace"]


def build_trace(journal: Journal, *, event_id: str | None = None, key: str | None = None) -> list[dict[str, Any]]:
    """One chain per correlation id touched by the event or the business key."""
    correlations: list[str] = []
    if event_id:
        event = journal.get_event(event_id)
        if event is not None:
            correlations.append(event.correlationid)
    if key:
        for event in journal.events_for(key=key):
            if event.correlationid not in correlations:
                correlations.append(event.correlationid)
    chains = []
    markers: list[Event] | None = None
    for cid in correlations:
        events = journal.events_for(correlationid=cid)
        deliveries = journal.deliveries_for_events([e.id for e in events])
        if markers is None:
            markers = journal.events_for(correlationid=REPLAY_CORRELATION)  # read once per trace
        if markers and cid != REPLAY_CORRELATION:
            events += _replay_markers(journal, events, deliveries, markers)
        events.sort(key=lambda e: e.time)
        inbound = inbound_states(journal, [e.id for e in events])
        by_event: dict[str, list[dict[str, Any]]] = {}
        for d in deliveries:
            attempts = journal.attempts_for(d.idempotency_key)
            by_event.setdefault(d.event_id, []).append({
                "route": d.route, "target": d.target, "status": d.status, "attempts": d.attempts,
                "parks": d.parks, "error": d.last_error, "reference": d.reference,
                "duration_ms": round(sum(a.duration_ms for a in attempts), 1),
                "first_attempt_at": min((a.started_at for a in attempts), default=None),
                "delivered_at": d.delivered_at, "next_attempt_at": d.next_attempt_at,
                # the OpenTelemetry spans of each attempt (journaled with tracing on)
                "spans": [{"attempt": a.attempt, "status": a.status, "trace_id": a.trace_id,
                           "span_ids": a.span_ids.split()} for a in attempts if a.trace_id and a.span_ids],
            })
        chains.append({"correlationid": cid, "events": [{
            "id": e.id, "type": e.type, "source": e.source, "key": e.key, "sequence": e.sequence,
            "causationid": e.causationid, "time": e.time, "inbound": inbound.get(e.id),
            "deliveries": sorted(by_event.get(e.id, []), key=lambda d: (d["route"], d["target"])),
        } for e in events]})
    return chains


def _replay_markers(journal: Journal, events: list[Event], deliveries: list[DeliveryRow],
                    markers: list[Event]) -> list[Event]:
    """The batch markers of the replays that re-published some of ``events`` (see :mod:`bus.replaymarks`), each
    as a child of the event it replayed."""
    routes: dict[str, set[str]] = {}
    for d in deliveries:
        routes.setdefault(d.event_id, set()).add(d.route)
    stored = [e for chunk in event_chunks(journal.engine, EventSelection(event_ids=[e.id for e in events]))
              for e in chunk]
    found = replays_of(markers, [(e.id, e.received_at, e.key, routes.get(e.id, set())) for e in stored])
    return [m.with_(causationid=event_id, key=next((e.key for e in stored if e.id == event_id), None))
            for event_id, hits in found.items() for m in hits]


def _fmt_time(epoch: float | None) -> str:
    return "" if epoch is None else datetime.fromtimestamp(epoch).astimezone().strftime("%H:%M:%S.%f")[:-3]


def _walk(children: dict[str | None, list[dict[str, Any]]], parent: str | None, indent: str,
          lines: list[str]) -> None:
    items = children.get(parent, [])
    for i, e in enumerate(items):
        last = i == len(items) - 1
        branch = "└─ " if last else "├─ "
        key = f" key={e['key']}" if e["key"] else ""
        seq = f" seq={e['sequence']}" if e["sequence"] is not None else ""
        # an event whose source was answered 503 (it sends it again) was never accepted: say so
        state = {"refused": "  REFUSED (answered 503; the source sends it again)",
                 "unpublished": "  UNPUBLISHED (waiting for the outbox relay)"}.get(e.get("inbound") or "", "")
        lines.append(f"{indent}{branch}{e['type']}  {e['id'][:8]}  {e['time']}{key}{seq}{state}")
        inner = indent + ("   " if last else "│  ")
        for d in e["deliveries"]:
            ref = f" ref={d['reference']}" if d["reference"] else ""
            err = f" — {d['error']}" if d["error"] and d["status"] != "delivered" else ""
            lines.append(f"{inner}• {d['route']} → {d['target']}: {d['status'].upper()} "
                         f"attempts={d['attempts']} {d['duration_ms']}ms "
                         f"at {_fmt_time(d['delivered_at'] or d['first_attempt_at'])}{ref}{err}")
            for a in d.get("spans", ()):
                lines.append(f"{inner}    attempt {a['attempt']} {a['status']}: trace {a['trace_id']} "
                             f"span {' '.join(a['span_ids'])}")
        _walk(children, e["id"], inner, lines)


def _idle(chain: dict[str, Any]) -> bool:
    """A transaction in which nothing was attempted: every route filtered it, found it unchanged, or none matched."""
    return all(d["status"] in ("filtered", "unchanged") for e in chain["events"] for d in e["deliveries"])


def render_trace(chains: list[dict[str, Any]], *, everything: bool = False) -> str:
    """A tree for humans: events by causation, deliveries under each event.

    Transactions in which every route filtered the event (a poll seeing a record the bus itself just wrote, say)
    are counted at the end rather than drawn, unless ``everything``.
    """
    lines: list[str] = []
    quiet = []
    for chain in chains:
        if not everything and _idle(chain):
            quiet.append(chain)
            continue
        events = chain["events"]
        lines.append(f"transaction {chain['correlationid']}  ({len(events)} events)")
        ids = {e["id"] for e in events}
        children: dict[str | None, list[dict[str, Any]]] = {}
        for e in events:
            parent = e["causationid"] if e["causationid"] in ids else None
            children.setdefault(parent, []).append(e)

        _walk(children, None, "  ", lines)
    if quiet:
        types = sorted({e["type"] for c in quiet for e in c["events"]})
        lines.append(f"(+{len(quiet)} more transaction(s) with nothing to deliver (filtered or unchanged): "
                     f"{', '.join(types)}; --all shows them)")
    return "\n".join(lines)
