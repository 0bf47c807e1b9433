"""``ironbus xref``: the master-data cross reference — get, set, import, export, check (and repair), match."""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path
from typing import Any

from bus.config import Config, load_config
from bus.console import Progress, dump_json, table
from bus.errors import ConfigError, Location
from bus.frontdoor import FrontDoor
from bus.journal import Journal
from bus.journal.records import XrefRow
from bus.masterdata import check_master_data
from bus.pipeline import Pipeline
from bus.queue.open import open_queue
from bus.repair import Repair, apply_repairs, plan_repairs
from bus.runtime import broker_url, journal_url, open_adapters
from bus.xrefmatch import match_records
from bus.yamlfile import load_json_text

__all__ = ["xref"]


def xref(args: argparse.Namespace) -> int:
    journal = Journal(journal_url(args.journal))
    try:
        return _ACTIONS[args.xref_command](args, journal)
    finally:
        journal.close()


def _get(args: argparse.Namespace, journal: Journal) -> int:
    canonical = journal.xref.lookup(args.entity, args.system, args.id)
    if canonical is None:
        print(f"no cross reference for {args.entity} {args.system}:{args.id}; link it with "
              f"'ironbus xref set {args.entity} <canonical-id> {args.system} {args.id}'", file=sys.stderr)
        return 1
    others = [r for r in journal.xref_rows(args.entity) if r.canonical_id == canonical]
    if args.json:
        dump_json({"entity": args.entity, "canonical_id": canonical,
                   "systems": {r.system: r.system_id for r in others}})
    else:
        print(f"{args.entity} {canonical}: " + ", ".join(f"{r.system}={r.system_id}" for r in others))
    return 0


def _set(args: argparse.Namespace, journal: Journal) -> int:
    journal.xref.link(args.entity, args.canonical, args.system, args.id)
    print(f"linked {args.entity} {args.system}:{args.id} -> {args.canonical}")
    return 0


def _import(args: argparse.Namespace, journal: Journal) -> int:
    path = Path(args.file)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc}", Location(str(path))) from None
    rows: list[XrefRow] = []
    if path.suffix == ".json":
        doc = load_json_text(text, str(path))
        items = doc if isinstance(doc, list) else []
        for i, item in enumerate(items):
            try:
                rows.append(XrefRow(str(item["entity"]), str(item["system"]), str(item["system_id"]),
                                    str(item["canonical_id"])))
            except (KeyError, TypeError):
                raise ConfigError(f"item {i}: expected entity, canonical_id, system, system_id",
                                  Location(str(path))) from None
    else:
        reader = csv.DictReader(io.StringIO(text))
        need = {"entity", "canonical_id", "system", "system_id"}
        if not reader.fieldnames or not need <= set(reader.fieldnames):
            raise ConfigError(f"CSV header must name {', '.join(sorted(need))}", Location(str(path), 1))
        for line, row in enumerate(reader, start=2):
            if not all(row.get(k) for k in need):
                raise ConfigError("empty field; every row needs entity, canonical_id, system, system_id",
                                  Location(str(path), line))
            rows.append(XrefRow(row["entity"], row["system"], row["system_id"], row["canonical_id"]))
    n = journal.xref.import_rows(rows)
    print(f"imported {n} cross reference(s) from {path}")
    return 0


def _export(args: argparse.Namespace, journal: Journal) -> int:
    rows = journal.xref_rows(args.entity)
    if args.format == "json" or args.json:
        dump_json([{"entity": r.entity, "canonical_id": r.canonical_id, "system": r.system,
                    "system_id": r.system_id} for r in rows])
        return 0
    writer = csv.writer(sys.stdout)
    writer.writerow(["entity", "canonical_id", "system", "system_id"])
    for r in rows:
        writer.writerow([r.entity, r.canonical_id, r.system, r.system_id])
    return 0


def _check(args: argparse.Namespace, journal: Journal) -> int:
    config = load_config(args.routes)
    adapters = open_adapters(config)
    try:
        for adapter in adapters.values():
            adapter.open()
        report = check_master_data(adapters, journal.xref_rows(), entities=args.entity,
                                   ownership=config.master_data)
        problems: list[dict[str, Any]] = report["problems"]
        if args.json and not args.repair:
            dump_json(report)
        elif not args.repair or problems:
            for entity, counts in report["summary"].items():
                print(f"{entity}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
            table([(p["entity"], p["kind"], p.get("canonical_id"), p.get("system"), p.get("field"),
                    p["detail"]) for p in problems], ["entity", "problem", "canonical", "system", "field", "detail"])
        if args.repair:
            return _repair(args, config, adapters, problems, journal)
        if problems and not args.json:
            print("next: 'ironbus xref check --repair' pushes the owners' values over drift; link records with "
                  "'ironbus xref match' or 'ironbus xref set ENTITY CANONICAL SYSTEM ID'", file=sys.stderr)
    finally:
        for adapter in adapters.values():
            adapter.close()
    return 1 if problems else 0


def _repair(args: argparse.Namespace, config: Config, adapters: dict[str, Any], problems: list[dict[str, Any]],
            journal: Journal) -> int:
    pipeline = Pipeline(config, xref=journal.xref)
    progress = Progress(0, "reading owners")
    repairs, unrepairable = plan_repairs(config, adapters, problems, pipeline, progress=progress.advance)
    if args.json:
        dump_json({"repairs": [{"entity": r.entity, "canonical_id": r.canonical_id, "route": r.route,
                                "targets": list(r.targets), "reasons": list(r.reasons)} for r in repairs],
                   "unrepairable": unrepairable, "applied": bool(args.apply)})
    else:
        for r in repairs:
            print(f"{'push' if args.apply else 'would push'} {r.entity} {r.canonical_id} through route {r.route!r} "
                  f"to {', '.join(r.targets)}: " + "; ".join(r.reasons))
        for line in unrepairable:
            print(f"cannot repair {line}", file=sys.stderr)
    if repairs and args.apply:
        _publish(args, journal, repairs, pipeline)
        if not args.json:
            print(f"{len(repairs)} repair(s) queued; 'ironbus trace --key ID' follows each, and the bus must be "
                  "running to deliver them")
    elif repairs and not args.json:
        print("dry run: nothing changed; add --apply to push these")
    return 1 if unrepairable else 0


def _publish(args: argparse.Namespace, journal: Journal, repairs: list[Repair], pipeline: Pipeline) -> None:
    queue = open_queue(broker_url(args.broker), journal)
    door = FrontDoor(journal, queue, pipeline)
    try:
        apply_repairs(journal, door, repairs)
    finally:
        door.close()
        queue.close()


def _match(args: argparse.Namespace, journal: Journal) -> int:
    config = load_config(args.routes)
    adapters = open_adapters(config)
    proposals = []
    try:
        for adapter in adapters.values():
            adapter.open()
        entities = args.entity or sorted(config.master_data) or ["customer", "material", "supplier"]
        for entity in entities:
            held = {name: records for name, adapter in adapters.items()
                    if (records := adapter.master_data(entity)) is not None}
            progress = Progress(sum(len(v) for v in held.values()), f"matching {entity}")
            proposals.extend(match_records(entity, held, journal.xref_rows(entity), config.master_data.get(entity),
                                           progress=progress.advance))
    finally:
        for adapter in adapters.values():
            adapter.close()
    sure = [p for p in proposals if p.sure]
    if args.apply and sure:
        journal.xref.import_rows([row for p in sure for row in p.rows()])
    if args.json:
        dump_json([{"entity": p.entity, "canonical_id": p.canonical_id, "system": p.system, "system_id": p.system_id,
                    "owner": p.owner, "owner_id": p.owner_id, "reason": p.reason, "confidence": p.confidence,
                    "sure": p.sure, "applied": bool(args.apply and p.sure)} for p in proposals])
        return 0
    table([(p.entity, p.canonical_id, f"{p.system}:{p.system_id}", p.label, f"{p.owner}:{p.owner_id}", p.reason,
            f"{p.confidence:.2f}", ("linked" if args.apply else "sure") if p.sure else "decide")
           for p in proposals], ["entity", "canonical", "record", "label", "owner record", "reason", "confidence",
                                 "status"])
    undecided = [p for p in proposals if not p.sure]
    if args.apply:
        print(f"linked {len(sure)} sure match(es)")
    elif sure:
        print(f"{len(sure)} sure match(es); add --apply to link them")
    if undecided:
        print(f"{len(undecided)} proposal(s) need a person: 'ironbus xref set ENTITY CANONICAL SYSTEM ID' for each "
              "one that is right")
    return 0


_ACTIONS = {"get": _get, "set": _set, "import": _import, "export": _export, "check": _check, "match": _match}
