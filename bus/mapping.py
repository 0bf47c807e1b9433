"""Mapping files: turn one document shape into another, declared in YAML.

A mapping lists target fields, each filled from a JMESPath expression over the input (with the functions of
:mod:`bus.functions`), a constant, or a sub-mapping applied to every element of a list. Everything that can
be decided when the file loads is decided then: expressions are compiled to closures, dotted targets are
turned into a tree of object builders, value-map names are checked. :meth:`Mapping.apply` then only runs
closures, which is what keeps mapping cheap enough to do tens of thousands of times per second.

See ``docs/mapping.md`` for the file format.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Mapping as AbcMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bus.envelope import Event
from bus.errors import ConfigError, Location, MappingError, UnknownNameError
from bus.expr import Compiled, compile_expression
from bus.functions import CURRENT_EVENT, IronbusFunctions

# The code generator (and the leaf, failure and builder types it shares with the loader) is bus.mappingcode's.
from bus.mappingcode import _NO_DEFAULT, _Builder, _each_builder, _Failure, _Generator, _Leaf
from bus.xref import XrefStore
from bus.yamlfile import load_yaml, load_yaml_text, plain

__all__ = ["Mapping", "load_mapping"]

_TOP_KEYS = ("description", "output", "fields", "value_maps", "omit_null")
_FIELD_KEYS = ("expr", "default", "value", "each", "fields")


def _constant(value: Any) -> Compiled:
    if isinstance(value, list | dict):
        return lambda doc: copy.deepcopy(value)
    return lambda doc: value


@dataclass
class _Context:
    file: str
    functions: IronbusFunctions
    omit_null: bool


def _where(fields: Any, key: str, file: str) -> Location:
    locations = getattr(fields, "key_locations", None) or {}
    return locations.get(key) or getattr(fields, "location", None) or Location(file)


def _compile_field(spec: Any, target: str, where: Location, ctx: _Context, prefix: str) -> _Leaf:
    label = f"field {prefix + target!r}"
    if isinstance(spec, str):
        expr = compile_expression(spec, label, location=where, functions=ctx.functions)
        return _Leaf(expr.fn, _NO_DEFAULT, spec, expr)
    if not isinstance(spec, dict):
        raise ConfigError(f"{label}: expected a JMESPath string or one of {{expr: …}}, {{value: …}}, "
                          f"{{each: …, fields: …}}; got {spec!r}" + (" (use {value: …} for a constant)"
                                                                      if spec is not None else ""), where)
    for option in spec:
        if option not in _FIELD_KEYS:
            err = UnknownNameError("field option", option, _FIELD_KEYS)
            raise ConfigError(f"{label}: {err.message}", _where(spec, option, ctx.file))
    forms = [name for name in ("expr", "value", "each") if name in spec]
    if len(forms) != 1:
        raise ConfigError(f"{label}: give exactly one of 'expr', 'value' or 'each' (got "
                          f"{', '.join(forms) or 'none'})", where)
    default = plain(spec["default"]) if "default" in spec else _NO_DEFAULT
    if "value" in spec:
        if "fields" in spec or "default" in spec:
            raise ConfigError(f"{label}: a constant {{value: …}} takes no other option", where)
        value = plain(spec["value"])
        return _Leaf(_constant(value), _NO_DEFAULT, repr(spec["value"]), constant=value)
    if "expr" in spec:
        if "fields" in spec:
            raise ConfigError(f"{label}: 'fields' belongs with 'each', not 'expr'", where)
        text = spec["expr"]
        expr = compile_expression(text, label, location=_where(spec, "expr", ctx.file), functions=ctx.functions)
        return _Leaf(expr.fn, default, text, expr)
    text = spec["each"]
    source = compile_expression(text, label, location=_where(spec, "each", ctx.file), functions=ctx.functions)
    sub = spec.get("fields")
    if not isinstance(sub, dict) or not sub:
        raise ConfigError(f"{label}: 'each' needs 'fields:' with at least one target field",
                          _where(spec, "fields", ctx.file) if "fields" in spec else where)
    children: list[tuple[str, _Leaf]] = []
    element = _compile_object(sub, ctx, prefix=f"{prefix}{target}[].", leaves=children)
    return _Leaf(_each_builder(source.fn, element, text), default, text, source=source.fn,
                 children=tuple(children))


def _unmatched(leaves: tuple[tuple[str, _Leaf], ...], doc: Any, prefix: str, out: list[tuple[str, str]]) -> None:
    for target, leaf in leaves:
        if leaf.constant is not _NO_DEFAULT or leaf.default is not _NO_DEFAULT:
            continue  # a constant always has a value; a default is the author's answer to "nothing found"
        try:
            if leaf.source is None:
                if leaf.fn(doc) is None:
                    out.append((prefix + target, leaf.text))
                continue
            items = leaf.source(doc)
        except Exception:  # noqa: BLE001 - a failing field is reported by apply(), not here
            continue
        if items is None:
            out.append((prefix + target, leaf.text))
        elif isinstance(items, dict | list):
            for index, item in enumerate([items] if isinstance(items, dict) else items):
                _unmatched(leaf.children, item, f"{prefix}{target}[{index}].", out)


def _compile_object(fields: dict[str, Any], ctx: _Context, prefix: str = "",
                    leaves: list[tuple[str, _Leaf]] | None = None) -> _Builder:
    # Dotted targets become a tree: {"customer": {"id": leaf, "name": leaf}, "status": leaf}.
    tree: dict[str, Any] = {}
    for target, spec in fields.items():
        where = _where(fields, target, ctx.file)
        parts = str(target).split(".")
        if any(not part for part in parts):
            raise ConfigError(f"field {prefix + str(target)!r}: empty segment in target path", where)
        compiled = _compile_field(spec, str(target), where, ctx, prefix)
        if leaves is not None:
            leaves.append((str(target), compiled))
        node = tree
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                clash = ".".join(parts[: depth + 1])
                raise ConfigError(f"field {prefix + target!r} conflicts with field {prefix + clash!r}", where)
            node = child
        if parts[-1] in node:
            raise ConfigError(f"field {prefix + target!r} conflicts with fields under it", where)
        node[parts[-1]] = compiled
    return _tree_builder(tree, ctx)


def _tree_builder(tree: dict[str, Any], ctx: _Context) -> _Builder:
    return _Generator(ctx.omit_null).function(tree)


class Mapping:
    """A loaded mapping file, ready to apply.

    ``path`` is the file it came from, ``output`` the canonical schema its result is meant to match (lint and
    ``ironbus test`` check that), ``targets`` the target fields as written.
    """

    def __init__(self, path: str, description: str, output: str | None, targets: tuple[str, ...],
                 functions: IronbusFunctions, build: _Builder,
                 leaves: tuple[tuple[str, _Leaf], ...] = ()) -> None:
        self._leaves = leaves
        self.path = path
        self.description = description
        self.output = output
        self.targets = targets
        self.functions = functions
        self._build = build

    @property
    def value_maps(self) -> dict[str, dict[str, Any]]:
        """Every value map the mapping can use (shared ones plus its own)."""
        return self.functions.value_maps

    @classmethod
    def load(cls, path: str | Path, *, value_maps: AbcMapping[str, AbcMapping[str, Any]] | None = None,
             xref: XrefStore | None = None) -> Mapping:
        """Load and compile a mapping file; raises :class:`ConfigError` at ``file:line:col`` when it is wrong.

        ``value_maps`` are shared maps (e.g. from routes.yaml); the file's own ``value_maps`` override them
        by name. ``xref`` is the cross-reference store ``xref()`` and ``xref_to()`` consult.
        """
        return cls._from_doc(load_yaml(path), str(path), value_maps, xref)

    @classmethod
    def from_text(cls, text: str, path: str = "<string>", *,
                  value_maps: AbcMapping[str, AbcMapping[str, Any]] | None = None,
                  xref: XrefStore | None = None) -> Mapping:
        """Like :meth:`load`, from YAML text (``path`` is used in error messages)."""
        return cls._from_doc(load_yaml_text(text, path), path, value_maps, xref)

    @classmethod
    def _from_doc(cls, doc: Any, file: str, shared: AbcMapping[str, AbcMapping[str, Any]] | None,
                  xref: XrefStore | None) -> Mapping:
        here = getattr(doc, "location", None) or Location(file, 1, 1)
        if not isinstance(doc, dict):
            raise ConfigError("a mapping file must be a YAML object with 'fields:'", here)
        for key in doc:
            if key not in _TOP_KEYS:
                raise UnknownNameError("mapping key", key, _TOP_KEYS, _where(doc, key, file))
        maps: dict[str, AbcMapping[str, Any]] = dict(shared or {})
        own = doc.get("value_maps") or {}
        if not isinstance(own, dict):
            raise ConfigError("value_maps: expected an object of {name: {from: to}}", _where(doc, "value_maps", file))
        for name, table in own.items():
            if not isinstance(table, dict):
                raise ConfigError(f"value_maps.{name}: expected an object of {{from: to}}, got {table!r}",
                                  _where(own, name, file))
            maps[name] = plain(table)
        omit_null = doc.get("omit_null", True)
        if not isinstance(omit_null, bool):
            raise ConfigError(f"omit_null: expected true or false, got {omit_null!r}", _where(doc, "omit_null", file))
        output, description = doc.get("output"), doc.get("description", "")
        if output is not None and not isinstance(output, str):
            raise ConfigError(f"output: expected a schema name, got {output!r}", _where(doc, "output", file))
        if not isinstance(description, str):
            raise ConfigError("description: expected text", _where(doc, "description", file))
        fields = doc.get("fields")
        if not isinstance(fields, dict) or not fields:
            raise ConfigError("a mapping needs 'fields:' with at least one target field",
                              _where(doc, "fields", file) if "fields" in doc else here)
        functions = IronbusFunctions(maps, xref)
        leaves: list[tuple[str, _Leaf]] = []
        build = _compile_object(fields, _Context(file, functions, omit_null), leaves=leaves)
        return cls(file, description, output, tuple(str(t) for t in fields), functions, build, tuple(leaves))

    def unmatched(self, doc: Any, *, event: Event | None = None) -> list[tuple[str, str]]:
        """``(target field, expression)`` for every expression that finds nothing in ``doc`` (and has no
        default), so ``ironbus map`` and ``ironbus test`` can name a field the result silently lacks — most
        often a misspelt input path. A diagnostic: it evaluates each expression once more."""
        token = CURRENT_EVENT.set(event) if event is not None else None
        try:
            out: list[tuple[str, str]] = []
            _unmatched(self._leaves, doc, "", out)
            return out
        finally:
            if token is not None:
                CURRENT_EVENT.reset(token)

    def apply(self, doc: Any, *, event: Event | None = None) -> dict[str, Any]:
        """Map ``doc``; raises :class:`MappingError` naming this file, the target field and what failed.

        ``event`` is the event being mapped, for ``event('id')`` and friends.
        """
        token = CURRENT_EVENT.set(event) if event is not None else None
        try:
            result: dict[str, Any] = self._build(doc)
            return result
        except _Failure as exc:
            raise MappingError(self.path, exc.path, exc.reason, waiting_for=exc.waiting_for) from None
        finally:
            if token is not None:
                CURRENT_EVENT.reset(token)

    def __repr__(self) -> str:
        return f"Mapping({self.path!r})"


_cache: dict[Path, tuple[int, int, Any, Any, Mapping]] = {}
_cache_lock = threading.Lock()


def load_mapping(path: str | Path, *, value_maps: AbcMapping[str, AbcMapping[str, Any]] | None = None,
                 xref: XrefStore | None = None) -> Mapping:
    """:meth:`Mapping.load`, cached until the file changes (same shared value maps and xref store)."""
    resolved = Path(path).resolve()
    try:
        stat = resolved.stat()
    except OSError:
        return Mapping.load(path, value_maps=value_maps, xref=xref)  # raises the located "file not found"
    with _cache_lock:
        hit = _cache.get(resolved)
    if hit is not None:
        mtime, size, maps, store, mapping = hit
        if mtime == stat.st_mtime_ns and size == stat.st_size and store is xref and maps == (value_maps or {}):
            return mapping
    mapping = Mapping.load(path, value_maps=value_maps, xref=xref)
    with _cache_lock:
        _cache[resolved] = (stat.st_mtime_ns, stat.st_size, copy.deepcopy(dict(value_maps or {})), xref, mapping)
    return mapping
