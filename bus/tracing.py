"""``ironbus trace``: the causal chain of a business transaction, read back from the journal.

Events of one transaction share a ``correlationid``; each follow-up names its cause in ``causationid``. The
trace is that tree, with every delivery (route, target, status, attempts, timing, the target's reference)
hung under the event it delivered.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bus.journal import Journal
from bus.outbox import inbound_states

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
    for cid in correlations:
        events = sorted(journal.events_for(correlationid=cid), key=lambda e: e.time)
        deliveries = journal.deliveries_for_events([e.id for e in events])
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
