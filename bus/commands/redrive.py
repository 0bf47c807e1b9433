"""``ironbus dlq`` and ``ironbus replay``: look at dead letters and put journaled work back on the bus."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from typing import Any

import structlog

from bus.commands.common import current_pipeline, existing_journal, iso_time, parse_since
from bus.config import load_config
from bus.console import dump_json, table
from bus.envelope import Event
from bus.errors import ConfigError
from bus.followups import Redriven, parse_letter, redrive
from bus.frontdoor import FrontDoor
from bus.journal import Journal
from bus.journal.stream import EventSelection, LetterSelection, event_chunks, missing_events
from bus.pipeline import Pipeline
from bus.queue.open import open_queue
from bus.refusals import RefusedLetter, Reread, SystemAdapters, reread
from bus.replay import follow_up_letters, replay_events, retry_dead_letters
from bus.runtime import broker_url, open_adapters

log = structlog.get_logger(__name__)

__all__ = ["dlq", "replay"]




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
            "kind": row.error_kind, "attempts": row.attempts, "state": row.state,
            "created_at": iso_time(row.created_at), "body": row.body.decode("utf-8", "replace")}
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
    rows = journal.dead_letters(route=args.route, target=args.target, error=args.error, since=parse_since(args.since),
                                state=state, limit=args.limit)
    if args.ids:
        wanted = set(args.ids)
        rows = [r for r in rows if r.id in wanted] + [r for i in wanted - {r.id for r in rows}
                                                     if (r := journal.dead_letter_by_id(i)) and r.state == state]
    if args.dlq_command == "list":
        if args.json:
            dump_json([{"id": r.id, "event_id": r.event_id, "route": r.route, "target": r.target,
                        "reason": r.reason, "attempts": r.attempts, "created_at": iso_time(r.created_at)}
                       for r in rows])
        else:
            table([(r.id, iso_time(r.created_at), r.route, r.target, r.attempts, r.reason) for r in rows],
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
        route=args.route, target=args.target, error=args.error, since=parse_since(args.since), limit=args.limit)
    if not args.routes.is_file():
        followups = follow_up_letters(journal, selection)
        if followups:
            raise ConfigError(f"{args.routes}: not found; dead letter(s) {', '.join(str(f.id) for f in followups)} "
                              "are follow-ups not emitted, rebuilt with the routes file that emits them (use --routes)")
    queue = open_queue(broker_url(args.broker), journal)
    pipeline = current_pipeline(args.routes, journal)
    door = FrontDoor(journal, queue, pipeline)
    redriven: Redriven | None = None
    reread_: Reread | None = None
    try:
        done = retry_dead_letters(journal, door, selection, keyer=pipeline)
        if done.count or not (done.followups or done.refused):
            print(f"re-queued {done.count} dead letter(s); 'ironbus status' shows them flow, 'ironbus dlq list' what "
                  "fails again")
        if done.followups and pipeline is not None:
            redriven = redrive(done.followups, pipeline, journal, door)
        if done.refused:
            reread_ = _reread(args, journal, door, done.refused)
    finally:
        door.close()
        queue.close()
    _report_followups(redriven)
    return 1 if (redriven is not None and redriven.failed) or (reread_ is not None and reread_.failed) else 0


def _reread(args: argparse.Namespace, journal: Journal, door: FrontDoor, letters: list[RefusedLetter]) -> Reread:
    """Read refused inbound documents again with their systems' adapters as the routes file sets them now."""
    if not args.routes.is_file():
        raise ConfigError(f"{args.routes}: not found; dead letter(s) {', '.join(str(r.id) for r in letters)} are "
                          "refused documents, read again by the systems of the routes file (use --routes)")
    config = load_config(args.routes)
    systems = SystemAdapters(config, journal, lambda name: open_adapters(config, {name})[name])
    try:
        done = reread(letters, systems, journal, door)
    finally:
        systems.close()
    for letter, events in done.emitted:
        print(f"dead letter #{letter.id}: the refused document from {letter.refused.partner or 'its sender'} was read "
              f"again: {len(events)} event(s) " + ", ".join(e.id for e in events))
    for letter, why in done.failed:
        print(f"dead letter #{letter.id} stays dead: {why}", file=sys.stderr)
    return done


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
                                   since=parse_since(args.since), until=parse_since(args.until))
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


