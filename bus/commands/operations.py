"""Commands for operators: run, send, status, dlq, replay, trace, journal."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import structlog

from bus import telemetry
from bus.commands.authoring import read_document
from bus.commands.common import current_pipeline, existing_journal
from bus.commands.redrive import dlq, replay
from bus.config import load_config, parse_duration
from bus.console import dump_json, table
from bus.envelope import Event
from bus.errors import ConfigError
from bus.frontdoor import FrontDoor
from bus.gcsettings import settle_for_serving
from bus.journal import Journal
from bus.layout import default_layout
from bus.lint import refuse_on_errors
from bus.outbox import outbox_counts
from bus.portlock import claim_port
from bus.progress import bus_rows, oldest_ready_age, stalled
from bus.queue.open import open_queue
from bus.runtime import Runtime, RuntimeOptions, broker_url, check_routes_file, journal_url
from bus.stopflag import StopFlag
from bus.supervisor import Supervisor
from bus.systemstate import read_state
from bus.tracing import build_trace, render_trace

log = structlog.get_logger(__name__)

__all__ = ["dlq", "journal", "replay", "run", "send", "status", "trace"]




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
    stop = StopFlag()  # not a threading.Event: see bus.stopflag
    stop.install()
    runtime.start()
    settle_for_serving()  # after start-up: see bus.gcsettings
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
        pipeline = current_pipeline(args.routes, journal)
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
        inbound = outbox_counts(journal)
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
