"""Commands for operators: run, send, status, dlq, replay, trace, journal."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bus.commands.authoring import read_document
from bus.config import load_config, parse_duration
from bus.console import Progress, dump_json, table
from bus.envelope import Event
from bus.errors import ConfigError
from bus.followups import FollowUpLetter, Redriven, parse_letter, redrive
from bus.ingest import Ingestor
from bus.journal import Journal
from bus.pipeline import Pipeline
from bus.queue.base import Message, Queue
from bus.queue.open import open_queue
from bus.runtime import Runtime, RuntimeOptions, broker_url, check_routes_file, journal_url
from bus.supervisor import Supervisor
from bus.systemstate import read_state
from bus.tracing import build_trace, render_trace

__all__ = ["dlq", "journal", "replay", "run", "send", "status", "trace"]


def _since(text: str | None) -> float | None:
    """Epoch seconds from '2h' / '1d' (ago) or an ISO timestamp."""
    if not text:
        return None
    try:
        return time.time() - parse_duration(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise ConfigError(f"--since/--until {text!r}: expected a duration like '2h' or an ISO timestamp") from None


def _pipeline(routes: Path, journal: Journal) -> Pipeline | None:
    return Pipeline(load_config(routes), xref=journal.xref) if routes.is_file() else None


def run(args: argparse.Namespace) -> int:
    check_routes_file(args.routes)
    port = None if args.no_http else (8080 if args.port is None else args.port)
    processes = getattr(args, "processes", 1)
    if processes > 1:
        if port == 0:
            raise ConfigError("--port 0 picks a different free port in each process; with --processes, "
                              "give a fixed --port (or --no-http)")
        load_config(args.routes)  # a broken routes file is reported once, here, not by every process
        print(f"ironbus: starting {processes} bus processes with {args.workers} workers each"
              f"{f' on port {port}' if port else ''}; triggers run in the first. Ctrl-C stops all.",
              file=sys.stderr)
        return Supervisor(processes, run, args).run()
    runtime = Runtime(args.routes, journal=args.journal, broker=args.broker,
                      options=RuntimeOptions(workers=args.workers, host=args.host, port=port,
                                             triggers=not args.no_triggers, lease_seconds=args.lease,
                                             batch_size=args.batch,
                                             process_slot=getattr(args, "process_slot", None)))
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    runtime.start()
    on_started = getattr(args, "on_started", None)
    if on_started is not None:  # a supervisor (--processes) waits for this before it restarts failures
        on_started()
    where = f" — webhooks and /metrics on http://{args.host}:{runtime.port}" if runtime.port else ""
    print(f"ironbus: running {len(runtime.config.routes)} routes with {args.workers} workers "
          f"(journal {runtime.journal.url}){where}. Ctrl-C stops.", file=sys.stderr)
    started = time.monotonic()
    try:
        while not stop.is_set():
            if args.max_seconds is not None and time.monotonic() - started >= args.max_seconds:
                break
            if args.until_idle and runtime.idle() and runtime.wait_idle(timeout=5.0, settle=0.5):
                break
            stop.wait(0.2)
    finally:
        print("ironbus: stopping (finishing in-flight work)…", file=sys.stderr)
        runtime.stop()
    stats = runtime.stats()
    print(f"ironbus: stopped — {sum(s.delivered for s in stats)} delivered, {sum(s.parked for s in stats)} parked, "
          f"{sum(s.dead for s in stats)} dead-lettered in this run", file=sys.stderr)
    return 0


def send(args: argparse.Namespace) -> int:
    data = read_document(args.file)
    journal = Journal(journal_url(args.journal))
    queue = open_queue(broker_url(args.broker), journal)
    try:
        event = Event(type=args.type, source=args.source, data=data, key=args.key, sequence=args.sequence)
        pipeline = _pipeline(args.routes, journal)
        if pipeline is not None:
            if not pipeline.routes_for(args.type):
                known = sorted({r.config.source for r in pipeline.routes.values()})
                print(f"ironbus: warning: no route consumes {args.type!r}; known: {', '.join(known)}",
                      file=sys.stderr)
            event = pipeline.assign_key(event)
        ingestor = Ingestor(journal, queue)
        ingestor.ingest([(event, "send")])
        ingestor.close()
        print(event.id)
    finally:
        queue.close()
        journal.close()
    return 0


def status(args: argparse.Namespace) -> int:
    journal = Journal(journal_url(args.journal))
    queue = open_queue(broker_url(args.broker), journal)
    try:
        counts = journal.status_counts()
        depth = queue.depth()
        systems = read_state(journal.engine)
    finally:
        queue.close()
        journal.close()
    if args.json:
        dump_json({"queue": depth, **counts, "systems": systems})
        return 0
    print("queue: " + ", ".join(f"{k} {v}" for k, v in sorted(depth.items())))
    statuses = ("delivered", "parked", "dead", "stale", "unchanged", "shadow", "filtered", "invalid", "pending")
    rows = []
    totals: dict[str, int] = {}
    for route, targets in sorted(counts.get("deliveries", {}).items()):
        for target, by_status in sorted(targets.items()):
            rows.append((route, target, *(by_status.get(s, 0) for s in statuses)))
            for s, n in by_status.items():
                totals[s] = totals.get(s, 0) + n
    print(f"events journaled: {counts.get('events', 0)}; deliveries: "
          + (", ".join(f"{k} {v}" for k, v in sorted(totals.items())) or "none yet"))
    print(f"dead letters: {counts.get('dead_letters', 0)}" + ("  (see 'ironbus dlq list')" if
                                                             counts.get("dead_letters") else ""))
    table(rows, ["route", "target", *statuses])
    if systems:
        print()
        table([(s["system"], s["process"], _circuit(s.get("circuit")), _limit(s.get("rate_limit")), f"{s['age']}s ago")
               for s in systems], ["system", "process", "circuit", "rate limit", "seen"])
    return 0


def _circuit(snap: dict[str, Any] | None) -> str:
    if not snap:
        return "-"
    text = str(snap.get("state", "?"))
    if snap.get("retry_at"):
        text += f" (probe in {max(0.0, snap['retry_at'] - time.time()):.0f}s)"
    return text + (f", tripped {snap['trips']}x" if snap.get("trips") else "")


def _limit(snap: dict[str, Any] | None) -> str:
    if not snap:
        return "-"
    return ", ".join(f"{k} {v}" for k, v in snap.items())


def dlq(args: argparse.Namespace) -> int:
    journal = Journal(journal_url(args.journal))
    try:
        return _dlq(args, journal)
    finally:
        journal.close()


def _dlq(args: argparse.Namespace, journal: Journal) -> int:
    if args.dlq_command == "show":
        row = journal.dead_letter_by_id(args.id)
        if row is None:
            raise ConfigError(f"no dead letter #{args.id}; list them with 'ironbus dlq list'")
        doc: dict[str, Any] = {
            "id": row.id, "event_id": row.event_id, "route": row.route, "target": row.target, "reason": row.reason,
            "kind": row.error_kind, "attempts": row.attempts, "state": row.state, "created_at": _iso(row.created_at),
            "body": row.body.decode("utf-8", "replace")}
        letter = parse_letter(row)
        if letter is not None:
            delivery = journal.delivery(letter.delivery)
            doc["followup"] = {"type": letter.type, "delivery": letter.delivery,
                               "delivery_status": delivery.status if delivery else None}
        if args.json:
            dump_json(doc)
            return 0
        for k, v in doc.items():
            if k != "followup":
                print(f"{k:>10}: {v}")
        if letter is not None:
            print(f"  followup: {letter.type or '(see the reason)'} was not emitted after delivery {letter.delivery} "
                  f"({doc['followup']['delivery_status'] or 'no longer journaled'})")
            print(f"            'ironbus dlq retry {row.id}' builds it from the stored result with the current "
                  "routes and mappings; it does not call the target again")
        return 0
    state = "dead"
    rows = journal.dead_letters(route=args.route, target=args.target, error=args.error, since=_since(args.since),
                                state=state, limit=args.limit)
    if args.ids:
        wanted = set(args.ids)
        rows = [r for r in rows if r.id in wanted] + [r for i in wanted - {r.id for r in rows}
                                                     if (r := journal.dead_letter_by_id(i)) and r.state == state]
    if args.dlq_command == "list":
        if args.json:
            dump_json([{"id": r.id, "event_id": r.event_id, "route": r.route, "target": r.target,
                        "reason": r.reason, "attempts": r.attempts, "created_at": _iso(r.created_at)} for r in rows])
        else:
            table([(r.id, _iso(r.created_at), r.route, r.target, r.attempts, r.reason) for r in rows],
                  ["id", "when", "route", "target", "attempts", "reason"])
        return 0
    if args.dlq_command == "purge":
        n = journal.mark_dead_letters([r.id for r in rows], "purged")
        print(f"purged {n} dead letter(s)")
        return 0
    followups = {r.id: letter for r in rows if (letter := parse_letter(r)) is not None}
    pipeline = _pipeline(args.routes, journal) if followups else None
    if followups and pipeline is None:
        raise ConfigError(f"{args.routes}: not found; dead letter(s) {', '.join(map(str, sorted(followups)))} are "
                          "follow-ups not emitted, rebuilt with the routes file that emits them (use --routes)")
    rows = [r for r in rows if r.id not in followups]
    queue = open_queue(broker_url(args.broker), journal)
    try:
        events = {r.event_id: journal.get_event(r.event_id) for r in rows if r.event_id}
        keyer = pipeline or (_pipeline(args.routes, journal) if rows else None)
        messages = []
        for r in rows:
            event = events.get(r.event_id) if r.event_id else None
            body = r.body
            if event is not None and event.key is None and keyer is not None:
                # An event whose key could not be computed when it arrived (its route's mapping failed, e.g. on
                # an unlinked customer) gets it now that it maps: the retry and what follows it stay with the
                # business key in `trace --key`.
                keyed = keyer.assign_key(event)
                if keyed.key is not None:
                    _set_event_key(journal, event.id, keyed.key)
                    event, body = keyed, keyed.encode()
            messages.append(Message(body=body, key=event.key if event else None, route=r.route, target=r.target,
                                    headers={"redrive": str(r.id)}))
        if messages:
            queue.publish(messages)
        n = journal.mark_dead_letters([r.id for r in rows], "retried")
        if rows or not followups:
            print(f"re-queued {n} dead letter(s); 'ironbus status' shows them flow, 'ironbus dlq list' what fails "
                  "again")
        redriven = _redrive_followups(list(followups.values()), pipeline, journal, queue)
    finally:
        queue.close()
    return 1 if redriven and redriven.failed else 0


def _set_event_key(journal: Journal, event_id: str, key: str) -> None:
    import sqlalchemy as sa

    from bus.journal import tables
    from bus.journal.engine import write

    with write(journal.engine) as conn:
        conn.execute(sa.update(tables.events).where(tables.events.c.id == event_id, tables.events.c.key.is_(None))
                     .values(key=key))


def _redrive_followups(letters: list[FollowUpLetter], pipeline: Pipeline | None, journal: Journal,
                       queue: Queue) -> Redriven | None:
    """Re-emit the follow-ups of follow-up dead letters and say what happened to each."""
    if not letters or pipeline is None:
        return None
    ingestor = Ingestor(journal, queue)
    try:
        done = redrive(letters, pipeline, journal, ingestor.ingest)
    finally:
        ingestor.close()
    if done.emitted:
        print(f"emitted {len(done.emitted)} follow-up(s) from dead letters: "
              + ", ".join(f"#{letter.id} {event.type} {event.id}" for letter, event in done.emitted)
              + " (their deliveries are not repeated)")
    for letter, why in done.failed:
        print(f"dead letter #{letter.id} stays dead: {why.reason}\n    next: {why.fix}; then "
              f"'ironbus dlq retry {letter.id}'", file=sys.stderr)
    return done


def replay(args: argparse.Namespace) -> int:
    if not (args.ids or args.route or args.key or args.since):
        raise ConfigError("replay needs event ids, --route, --key or --since (refusing to replay everything)")
    journal = Journal(journal_url(args.journal))
    try:
        events = journal.events_for(event_ids=args.ids or None, key=args.key, route=args.route,
                                    since=_since(args.since), until=_since(args.until))
        if args.ids:
            missing = set(args.ids) - {e.id for e in events}
            if missing:
                raise ConfigError(f"no such event(s) in the journal: {', '.join(sorted(missing))}")
        pipeline = Pipeline(load_config(args.routes), xref=journal.xref)
        route = args.to_route or args.route
        if args.dry_run:
            return _dry_run(pipeline, events, route, args.json)
        queue = open_queue(broker_url(args.broker), journal)
        try:
            progress = Progress(len(events), "replaying")
            interval = 1.0 / args.rate if args.rate > 0 else 0.0
            next_at = time.monotonic()
            for event in events:
                now = time.monotonic()
                if now < next_at:
                    time.sleep(next_at - now)  # the rate limit the operator asked for
                next_at = max(now, next_at) + interval
                headers = {"force": "1"} if args.force else {}
                queue.publish([Message(body=event.encode(), key=event.key, route=route, headers=headers)])
                marker = event.caused("ironbus.replayed", "ironbus/cli", {"event_id": event.id, "route": route,
                                                                         "force": args.force})
                journal.record_events([(marker, "replay")])
                progress.advance()
        finally:
            queue.close()
        print(f"replayed {len(events)} event(s)" + (f" through route {route!r}" if route else "")
              + ("" if args.force else "; deliveries that already succeeded are skipped (use --force to repeat)"))
        return 0
    finally:
        journal.close()


def _dry_run(pipeline: Pipeline, events: list[Event], route: str | None, as_json: bool) -> int:
    out: list[dict[str, Any]] = []
    for event in events:
        for result in pipeline.process(event, route=route):
            entry: dict[str, Any] = {"event_id": event.id, "route": result.route.name, "status": result.status}
            if result.error is not None:
                entry["error"] = str(result.error)
            entry["deliveries"] = [{"target": d.target_name, "idempotency_key": d.idempotency_key,
                                    "payload": d.payload} for d in result.dispatches]
            out.append(entry)
    if as_json:
        dump_json(out)
    else:
        for entry in out:
            print(f"{entry['event_id']}  route {entry['route']}: {entry['status']}"
                  + (f" ({entry['error']})" if "error" in entry else ""))
            for d in entry["deliveries"]:
                print(f"    would deliver to {d['target']}:")
                dump_json(d["payload"])
        print(f"dry run: {len(events)} event(s), nothing delivered")
    return 0


def trace(args: argparse.Namespace) -> int:
    if not args.id and not args.key:
        raise ConfigError("trace needs an event id or --key KEY")
    journal = Journal(journal_url(args.journal))
    try:
        chains = build_trace(journal, event_id=args.id, key=args.key)
    finally:
        journal.close()
    if not chains:
        raise ConfigError(f"nothing in the journal for {args.id or 'key ' + repr(args.key)}")
    if args.json:
        dump_json(chains)
    else:
        print(render_trace(chains, everything=args.all))
    return 0


def journal(args: argparse.Namespace) -> int:
    j = Journal(journal_url(args.journal))
    try:
        if args.action == "migrate":
            print(f"journal {j.url} is at schema version {j.version}")
            return 0
        days = parse_duration(args.older_than) / 86400.0
        counts = j.prune(days)
        print("pruned " + ", ".join(f"{v} {k}" for k, v in counts.items()))
        return 0
    finally:
        j.close()


def _iso(epoch: float | None) -> str:
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch).astimezone().isoformat(timespec="seconds")
