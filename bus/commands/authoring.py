"""Commands for integrators writing routes and mappings: lint, map, test, adapters, graph."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bus.config import load_config
from bus.console import dump_json, table
from bus.errors import ConfigError, IronbusError, Location
from bus.limits import MAX_FILE_BYTES
from bus.lint import lint as run_lint
from bus.mapping import Mapping
from bus.plugins import adapter_names, load_adapter_class
from bus.schemas import default_registry
from bus.testrun import run_paths
from bus.xref import MemoryXref
from bus.yamlfile import load_json_text, load_yaml, load_yaml_text

__all__ = ["adapters", "graph", "lint", "map_", "read_document", "test"]


def read_document(source: str) -> Any:
    """A JSON or YAML document from a file path or ``-`` (stdin); errors name the file and position."""
    if source == "-":
        text = sys.stdin.read(MAX_FILE_BYTES + 1)
        name = "<stdin>"
    else:
        try:
            if Path(source).stat().st_size > MAX_FILE_BYTES:
                raise ConfigError(f"file is larger than {MAX_FILE_BYTES} bytes", Location(source))
            text = Path(source).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError("file not found", Location(source)) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read file: {exc}", Location(source)) from None
        name = source
    if name.endswith((".yaml", ".yml")):
        return load_yaml_text(text, name)
    return load_json_text(text, name)


def lint(args: argparse.Namespace) -> int:
    issues = run_lint(args.routes)
    errors = [i for i in issues if i.severity == "error"]
    if args.json:
        dump_json([{"severity": i.severity, "message": i.message, "location": str(i.location or "")}
                   for i in issues])
    else:
        for issue in issues:
            print(issue, file=sys.stderr if issue.severity == "error" else sys.stdout)
        if not errors:
            config = load_config(args.routes)
            counts = f"{_plural(len(config.systems), 'system')}, {_plural(len(config.routes), 'route')}"
            print(f"{args.routes}: OK — {counts}" + (f", {len(issues)} warning(s)" if issues else ""))
        else:
            print(f"{args.routes}: {len(errors)} error(s); fix them and run 'ironbus lint' again", file=sys.stderr)
    return 1 if errors else 0


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def map_(args: argparse.Namespace) -> int:
    xref = MemoryXref()
    if args.xref:
        seed = load_yaml(args.xref) if args.xref.suffix in (".yaml", ".yml") else read_document(str(args.xref))
        xref = MemoryXref.from_dict(seed or {})
    # value maps shared in routes.yaml apply to every mapping, as they do in the running bus
    shared = load_config(args.routes).value_maps if args.routes.is_file() else {}
    mapping = Mapping.load(args.mapping, xref=xref, value_maps=shared)
    doc = read_document(args.input)
    result = mapping.apply(doc)
    for target, expression in mapping.unmatched(doc):
        print(f"ironbus: note: {args.mapping}: field {target!r} is left out: {_short_expr(expression)} finds "
              f"nothing in {args.input}", file=sys.stderr)
    schema = args.validate or None
    if schema:
        default_registry().validate(schema, result)
    dump_json(result)
    return 0


def test(args: argparse.Namespace) -> int:
    outcomes = run_paths(list(args.paths), routes=args.routes)
    failed = [o for o in outcomes if not o.passed]
    if args.json:
        dump_json([{"file": o.file, "name": o.name, "passed": o.passed, "location": str(o.location or ""),
                    "details": o.details, "notes": o.notes} for o in outcomes])
    else:
        for o in outcomes:
            mark = "PASS" if o.passed else "FAIL"
            print(f"{mark}  {o.location or o.file}  {o.name}")
            for line in o.details:
                print(f"      {line}")
            for note in o.notes:
                print(f"      note: {note}")
        print(f"{len(outcomes) - len(failed)} passed, {len(failed)} failed")
    if not outcomes:
        print("no tests found (files are named *.test.yaml)", file=sys.stderr)
        return 1
    return 1 if failed else 0


def adapters(args: argparse.Namespace) -> int:
    names = [args.name] if args.name else adapter_names()
    rows: list[dict[str, Any]] = []
    for name in names:
        try:
            cls = load_adapter_class(name)
        except IronbusError as exc:
            if args.name:
                raise  # asked for one adapter by name: an unknown one is a usage error (exit 2)
            rows.append({"name": name, "error": str(exc)})
            continue
        props = dict(cls.settings_schema).get("properties", {})
        rows.append({
            "name": name, "summary": cls.summary,
            "triggers": {t.name: t.kind for t in cls.triggers.values()} | (
                {"(declared in settings.polls)": "poll"} if "polls" in props else {}),
            "operations": sorted(cls.operations) or (
                ["(declared in settings)"] if cls.declared_operations({}) is not None
                else ["(any)"] if cls.accepts_any_operation else ["none"]),
            "settings": sorted(props), "required": sorted(dict(cls.settings_schema).get("required", [])),
        })
    if args.json:
        dump_json(rows)
        return 0
    for row in rows:
        if "error" in row:
            print(f"{row['name']}: {row['error']}")
            continue
        print(f"{row['name']} — {row['summary']}")
        triggers = ", ".join(f"{n} ({k})" for n, k in row["triggers"].items()) or "none"
        print(f"  triggers:   {triggers}")
        print(f"  operations: {', '.join(row['operations'])}")
        settings = ", ".join(s + ("*" if s in row["required"] else "") for s in row["settings"]) or "none"
        print(f"  settings:   {settings}   (* required)")
    return 0


def graph(args: argparse.Namespace) -> int:
    config = load_config(args.routes)
    lines = ["flowchart LR"]

    def node(name: str) -> str:
        return name.replace(".", "_").replace("-", "_")

    for route in config.routes:
        src = node(route.source)
        lines.append(f'  {src}(["{route.source}"])')
        for target in route.targets:
            tgt = node(target.name)
            label = route.name + (" (shadow)" if route.mode == "shadow" else "")
            lines.append(f'  {src} -- "{label}" --> {tgt}["{target.name}"]')
            if target.emit:
                lines.append(f'  {tgt} -. emits .-> {node(target.emit)}(["{target.emit}"])')
    table_rows = [(r.name, r.source, ", ".join(t.name for t in r.targets), r.mode) for r in config.routes]
    print("\n".join(lines))
    print()
    table(table_rows, ["route", "from", "to", "mode"])
    return 0


def _short_expr(text: str) -> str:
    """An expression quoted for a one-line note (long ones are cut)."""
    return repr(text if len(text) <= 60 else text[:57] + "...")
