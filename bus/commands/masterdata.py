"""``ironbus xref``: the master-data cross reference — get, set, import, export, check."""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path
from typing import Any

from bus.config import load_config
from bus.console import dump_json, table
from bus.errors import ConfigError, Location
from bus.journal import Journal
from bus.journal.records import XrefRow
from bus.masterdata import check_master_data
from bus.runtime import journal_url, open_adapters
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
        report = check_master_data(adapters, journal.xref_rows(), entities=args.entity)
    finally:
        for adapter in adapters.values():
            adapter.close()
    problems: list[dict[str, Any]] = report["problems"]
    if args.json:
        dump_json(report)
    else:
        for entity, counts in report["summary"].items():
            print(f"{entity}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        table([(p["entity"], p["kind"], p.get("canonical_id"), p.get("system"), p.get("system_id"), p["detail"])
               for p in problems], ["entity", "problem", "canonical", "system", "id", "detail"])
        if problems:
            print("fix with 'ironbus xref set ENTITY CANONICAL SYSTEM ID' or 'ironbus xref import FILE'")
    return 1 if problems else 0


_ACTIONS = {"get": _get, "set": _set, "import": _import, "export": _export, "check": _check}
