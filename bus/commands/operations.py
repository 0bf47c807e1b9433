"""Commands for operators: run, send, status, dlq, replay, trace, journal."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import structlog

from bus import telemetry
from bus.commands.authoring import read_document
from bus.config import load_config, parse_duration
from bus.console import dump_json, table
from bus.envelope import Event
from bus.errors import ConfigError
from bus.followups import Redriven, parse_letter, redrive
from bus.frontdoor import FrontDoor
from bus.journal import Journal
from bus.journal.stream import EventSelection, LetterSelection, event_chunks, missing_events
from bus.layout import default_layout
from bus.lint import refuse_on_errors
from bus.outbox import outbox_counts
from bus.pipeline import Pipeline
from bus.portlock import claim_port
from bus.progress import bus_rows, oldest_ready_age, stalled
from bus.queue.open import open_queue
from bus.replay import follow_up_letters, replay_events, retry_dead_letters
from bus.runtime import Runtime, RuntimeOptions, broker_url, check_routes_file, journal_url
from bus.supervisor import Supervisor
from bus.systemstate import read_state
from bus.tracing import build_trace, render_trace

log = structlog.get_logger(__name__)

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


def existing_journal(explicit: str | None) -> str:
    """The journal URL for a command that only reads: refuse one that does not exist instead of creating an
    empty journal and reporting zero of everything."""
    url = journal_url(explicit)
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        raise ConfigError(f"journal URL {url!r} is not a database URL (e.g. sqlite:///var/ironbus.sqlite or "
                          "postgresql://host/db)") from None
    shown = parsed.render_as_string(hide_password=True)
    hint = "check --journal or $IRONBUS_JOURNAL (the bus creates its journal when it first runs)"
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:" and not Path(parsed.database).is_file():
            raise ConfigError(f"journal {shown} does not exist (no file {parsed.database}); {hint}")
        return url
    engine = sa.create_engine(parsed)
    try:
        with engine.connect() as conn:
            present = sa.inspect(conn).has_table("ironbus_schema")
    except sa.exc.SQLAlchemyError:
        return url  # unreachable: the journal itself says so, in one line
    finally:
        engine.dispose()
    if not present:
        raise ConfigError(f"journal {shown} holds no ironbus journal (the database exists, its tables do not); "
                          f"{hint}")
    return url


def _pipeline(routes: Path, journal: Journal) -> Pipeline | None:
    return Pipeline(load_config(routes), xref=journal.xref) if routes.is_file() else None


def run(args: argparse.Namespace) -> int:
    check_routes_file(args.routes)
    if getattr(args, "process_slot", None) is None:  # a supervised child was checked by its supervisor
        refuse_on_errors(args.routes)
    port = None if args.no_http else (8080 if args.port is None else args.port)
    processes = getattr(args, "processes", None)
    if processes is None or getattr(args, "workers", None) is None or getattr(args, "batch", None) is None:
        # no tuning flags: the layout comes from the machine and the targets (a broken routes file is
        # reported here, once, rather than by every process)
        layout = default_layout(load_config(args.routes))
        if processes is None:
            # --port 0 is a different free port in each process: one process, unless asked for more
            processes = 1 if port == 0 else layout.processes
        args.workers = layout.workers if getattr(args, "workers", None) is None else args.workers
        args.batch = layout.batch if getattr(args, "batch", None) is None else args.batch
        log.info("layout chosen", processes=processes, workers=args.workers, batch=args.batch, why=layout.reason)
    if port and getattr(args, "process_slot", None) is None:
        # one bus per port: a second `ironbus run` fails here instead of sharing the port through SO_REUSEPORT
        claim = claim_port(args.host, port)
        try:
            return _run(args, port, processes)
        finally:
            claim.release()
    return _run(args, port, processes)


def _run(args: argparse.Namespace, port: int | None, processes: int) -> int:
    if processes > 1:
        if port == 0:
            raise ConfigError("--port 0 picks a different free port in each process; with --processes, "
                              "give a fixed --port (or --no-http)")
        print(f"ironbus: starting {processes} bus processes with {args.workers} workers each (batches of "
              f"{args.batch}){f' on port {port}' if port else ''}; triggers run in the first. Ctrl-C stops all.",
              file=sys.stderr)
        return Supervisor(processes, run, args).run()
    runtime = Runtime(args.routes, journal=args.journal, broker=args.broker,
                      options=RuntimeOptions(workers=args.workers, host=args.host, port=port,
                                             triggers=not args.no_triggers, lease_seconds=args.lease,
                                             batch_size=args.batch,
                                             process_slot=getattr(args, "process_slot", None),
                                             console=_console(args)))
    telemetry.configure_from_env()  # OTEL_* variables; off unless they ask for it
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
        telemetry.shutdown()  # flushes the spans still buffered
    stats = runtime.stats()
    print(f"ironbus: stopped — {sum(s.delivered for s in stats)} delivered, {sum(s.parked for s in stats)} parked, "
          f"{sum(s.dead for s in stats)} dead-lettered in this run", file=sys.stderr)
    return 0


def _console(args: argparse.Namespace) -> Any:
    """The console's credentials when ``--console`` asks for it (checked before anything starts)."""
    if not getattr(args, "console", False):
        return None
    from bus.commands.console import console_auth

    return console_auth(getattr(args, "console_users", None))


def send(args: argparse.Namespace) -> int:
    data = read_document(args.file)
    journal = Journal(journal_url(args.journal))
    queue = open_queue(broker_url(args.broker), journal)
    try:
        event = Event(type=args.type, source=args.source, data=data, key=args.key, sequence=args.sequence)
        pipeline = _pipeline(args.routes, journal)
        if pipeline is not None and not pipeline.routes_for(args.type):
            known = sorted({r.config.source for r in pipeline.routes.values()})
            print(f"ironbus: warning: no route consumes {args.type!r}; known: {', '.join(known)}",
                  file=sys.stderr)
        door = FrontDoor(journal, queue, pipeline)
        try:
            door.submit([event], "send")
        finally:
            door.close()
        print(event.id)
    finally:
        queue.close()
        journal.close()
    return 0


def status(args: argparse.Namespace) -> int:
    journal = Journal(existing_journal(args.journal))
    queue = open_queue(broker_url(args.broker), journal)
    try:
        counts = journal.status_counts()
        depth = queue.depth()
        processes, systems = bus_rows(read_state(journal))
        pending = journal.pending_adapter_items()
        inbound = outbox_counts(journal.engine)
        oldest = oldest_ready_age(journal) if broker_url(args.broker) is None else None
    finally:
        queue.close()
        journal.close()
    if args.json:
        dump_json({"queue": depth, **counts, "systems": systems, "awaiting": pending, "inbound": inbound,
                   "oldest_ready_age": oldest, "processes": [{**p, "stalled": stalled(p)} for p in processes]})
        return 0
    print("queue: " + ", ".join(f"{k} {v}" for k, v in sorted(depth.items()))
          + (f"; oldest waiting {oldest}s" if oldest is not None else ""))
    for p in processes:
        flag = "  STALLED: work waits and no batch finished" if stalled(p) else ""
        print(f"bus process {p['process']}: last batch {p['progress_age']}s ago, {p['batches']} batches, "
              f"held {p['held']}, seen {p['age']}s ago{flag}")
    # journaled but not on the queue (a process died in between: the outbox relay publishes them), and events
    # whose source was answered 503 (it sends them again; they are never delivered from here)
    print(f"inbound: unpublished {inbound['unpublished']}, refused {inbound['refused']}")
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
    if pending:
        # Adapters' own "awaiting:" state: documents sent and not yet acknowledged (EDI 997 / CONTRL …).
        late = sum(1 for p in pending if p["overdue"])
        print(f"\nawaiting acknowledgement: {len(pending)}" + (f" ({late} overdue)" if late else ""))
        table([(p["system"], p["name"], "OVERDUE" if p["overdue"] else "waiting", f"{p['age']}s", p["detail"])
               for p in pending], ["system", "item", "state", "since", "detail"])
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
    journal = Journal(existing_journal(args.journal))
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
    if args.dlq_command == "retry":
        return _retry(args, journal)
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
    raise ConfigError(f"dlq: unknown action {args.dlq_command!r}")


def _retry(args: argparse.Namespace, journal: Journal) -> int:
    """``dlq retry``: stream the matching letters back onto the bus (see :func:`bus.replay.retry_dead_letters`),
    then re-emit the follow-ups of follow-up letters from their stored results."""
    selection = LetterSelection(ids=args.ids) if args.ids else LetterSelection(
        route=args.route, target=args.target, error=args.error, since=_since(args.since), limit=args.limit)
    if not args.routes.is_file():
        followups = follow_up_letters(journal, selection)
        if followups:
            raise ConfigError(f"{args.routes}: not found; dead letter(s) {', '.join(str(f.id) for f in followups)} "
                              "are follow-ups not emitted, rebuilt with the routes file that emits them (use --routes)")
    queue = open_queue(broker_url(args.broker), journal)
    pipeline = _pipeline(args.routes, journal)
    door = FrontDoor(journal, queue, pipeline)
    redriven: Redriven | None = None
    try:
        done = retry_dead_letters(journal, door, selection, keyer=pipeline)
        if done.count or not done.followups:
            print(f"re-queued {done.count} dead letter(s); 'ironbus status' shows them flow, 'ironbus dlq list' what "
                  "fails again")
        if done.followups and pipeline is not None:
            redriven = redrive(done.followups, pipeline, journal, door)
    finally:
        door.close()
        queue.close()
    _report_followups(redriven)
    return 1 if redriven is not None and redriven.failed else 0


def _report_followups(done: Redriven | None) -> None:
    """Say what happened to each follow-up re-emitted from a dead letter."""
    if done is None:
        return
    if done.emitted:
        print(f"emitted {len(done.emitted)} follow-up(s) from dead letters: "
              + ", ".join(f"#{letter.id} {event.type} {event.id}" for letter, event in done.emitted)
              + " (their deliveries are not repeated)")
    for letter, why in done.failed:
        print(f"dead letter #{letter.id} stays dead: {why.reason}\n    next: {why.fix}; then "
              f"'ironbus dlq retry {letter.id}'", file=sys.stderr)


def replay(args: argparse.Namespace) -> int:
    if not (args.ids or args.route or args.key or args.since):
        raise ConfigError("replay needs event ids, --route, --key or --since (refusing to replay everything)")
    journal = Journal(existing_journal(args.journal))
    try:
        selection = EventSelection(event_ids=args.ids or None, key=args.key, route=args.route,
                                   since=_since(args.since), until=_since(args.until))
        if args.ids:
            missing = missing_events(journal.engine, args.ids)
            if missing:
                raise ConfigError(f"no such event(s) in the journal: {', '.join(sorted(missing))}")
        pipeline = Pipeline(load_config(args.routes), xref=journal.xref)
        route = args.to_route or args.route
        if args.dry_run:
            events = (Event.decode(e.body) for chunk in event_chunks(journal.engine, selection) for e in chunk)
            return _dry_run(pipeline, events, route, args.json)
        queue = open_queue(broker_url(args.broker), journal)
        door = FrontDoor(journal, queue, pipeline)
        try:
            n = replay_events(journal, door, selection, route=route, force=args.force, rate=args.rate)
        finally:
            door.close()
            queue.close()
        print(f"replayed {n} event(s)" + (f" through route {route!r}" if route else "")
              + ("" if args.force else "; deliveries that already succeeded are skipped (use --force to repeat)"))
        return 0
    finally:
        journal.close()


def _dry_run(pipeline: Pipeline, events: Iterable[Event], route: str | None, as_json: bool) -> int:
    out: list[dict[str, Any]] = []
    count = 0
    for event in events:
        count += 1
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
        print(f"dry run: {count} event(s), nothing delivered")
    return 0


def trace(args: argparse.Namespace) -> int:
    if not args.id and not args.key:
        raise ConfigError("trace needs an event id or --key KEY")
    journal = Journal(existing_journal(args.journal))
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
