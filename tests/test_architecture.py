"""The layering rules of docs/architecture.md, checked on the source (ast), so a change that breaks one fails
here rather than in review."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUS = ROOT / "bus"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(*folders: Path) -> dict[str, Path]:
    return {_module_name(p): p for folder in folders for p in sorted(folder.rglob("*.py"))}


def _imported(module: str, path: Path, known: set[str]) -> Iterator[tuple[str, int]]:
    """Every module of ``known`` that ``module`` imports, anywhere in the file (inside functions too), with the
    line. ``from pkg import name`` counts as importing ``pkg.name`` when that is a module, else ``pkg``."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                yield name, node.lineno


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_among_bus_modules() -> None:
    modules = _modules(BUS)
    graph = {m: {dep for dep, _ in _imported(m, p, set(modules))} for m, p in modules.items()}
    assert _cycles(graph) == []


def test_the_cycle_check_finds_a_cycle_through_a_function_level_import() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_only_the_journal_touches_its_tables() -> None:
    modules = _modules(BUS, ROOT / "adapters")
    modules["cli"] = ROOT / "cli.py"
    offenders = [f"{path.relative_to(ROOT)}:{line}" for name, path in modules.items()
                 if not name.startswith("bus.journal")
                 for dep, line in _imported(name, path, set(modules)) if dep == "bus.journal.tables"]
    assert offenders == []


def _mentions_adapter(node: ast.AST) -> bool:
    text = ast.unparse(node)
    return "adapter" in text.lower() or text in ("cls", "type(cls)")


def test_the_core_asks_adapters_only_through_their_declared_contract() -> None:
    """No ``getattr`` on an adapter and no ``type(adapter).call_many is not Adapter.call_many`` override check:
    every hook the core calls is declared on adapters.base.Adapter."""
    offenders = []
    for path in sorted(BUS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in (
                    "getattr", "hasattr") and node.args and _mentions_adapter(node.args[0]):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
            if isinstance(node, ast.Compare) and any(isinstance(op, ast.Is | ast.IsNot) for op in node.ops) and \
                    any("Adapter." in ast.unparse(side) for side in [node.left, *node.comparators]):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert offenders == []


def _table_definitions(path: Path, root: Path = ROOT) -> Iterator[str]:
    """``sa.Table(...)`` / ``Table(...)`` calls, ``create_all`` calls and SQL text with ``CREATE TABLE`` in a file."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            name = ast.unparse(node.func)
            if name in ("Table", "sa.Table", "sqlalchemy.Table") or name.endswith(".create_all"):
                yield f"{path.relative_to(root)}:{node.lineno}: {name}(…)"
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                "create table" in " ".join(node.value.lower().split()):
            yield f"{path.relative_to(root)}:{node.lineno}: {node.value.strip()[:40]!r}"


def test_only_the_journal_defines_tables() -> None:
    """Every table ironbus keeps is defined in bus/journal/tables.py and created by a migration step: no module
    elsewhere defines or creates one on first use (the outbox, leases and shared limiter state once did)."""
    files = [p for p in sorted([*BUS.rglob("*.py"), *(ROOT / "adapters").rglob("*.py"), ROOT / "cli.py"])
             if BUS / "journal" not in p.parents]
    assert [hit for path in files for hit in _table_definitions(path)] == []


def test_the_table_check_finds_a_table_made_outside_the_journal(tmp_path: Path) -> None:
    module = tmp_path / "side.py"
    module.write_text('import sqlalchemy as sa\nT = sa.Table("ib_side", sa.MetaData())\n'
                      'SQL = "create  TABLE ib_other (id int)"\nmeta.create_all(conn)\n')
    assert sorted(_table_definitions(module, tmp_path)) == [
        "side.py:2: sa.Table(…)", "side.py:3: 'create  TABLE ib_other (id int)'", "side.py:4: meta.create_all(…)"]
