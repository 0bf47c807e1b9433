"""The code generator behind :mod:`bus.mapping`: a loaded mapping's tree of target fields written out as one
Python function per object level, every field as straight-line code (see :class:`_Generator` for why), plus
the ``each`` builder that applies a sub-mapping to every element of a list.

Private to :mod:`bus.mapping`, which compiles the fields into :class:`_Leaf` trees and applies the built
function; the names stay underscored because nothing else should use them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jmespath.exceptions import JMESPathError

from bus.errors import MappingError
from bus.expr import Compiled, Expression, field_get, inline_source

__all__: list[str] = []

_NO_DEFAULT: Any = object()
_Builder = Callable[[Any], Any]


class _Failure(Exception):
    """A field failed; ``path`` is relative to the object being built, outer builders prefix their key."""

    def __init__(self, path: str, reason: str, waiting_for: tuple[str, str, str] | None = None) -> None:
        super().__init__(path, reason)
        self.path = path
        self.reason = reason
        self.waiting_for = waiting_for  # carried from a missing cross reference (MappingError.waiting_for)


def _join(key: str, path: str) -> str:
    if not path:
        return key
    return key + path if path.startswith("[") else f"{key}.{path}"


def _reason(exc: Exception, text: str) -> str:
    if isinstance(exc, MappingError):
        return exc.reason
    return f"{exc} (in {text!r})"


@dataclass(frozen=True)
class _Leaf:
    """One target field: an expression (inlined when simple), a constant, or an ``each`` sub-mapping."""

    fn: Compiled
    default: Any
    text: str
    expr: Expression | None = None
    constant: Any = _NO_DEFAULT
    #: for ``each``: the list expression and the element's own leaves (for :meth:`Mapping.unmatched`)
    source: Compiled | None = None
    children: tuple[tuple[str, _Leaf], ...] = ()


_TEMPLATE = """def {name}(doc):
{guard}    out = {{}}
    try:
{body}
    except _Failure as exc:
        raise _Failure(_join(_paths[exc.__traceback__.tb_lineno], exc.path), exc.reason, exc.waiting_for) from None
    except _ERRORS as exc:
        f = _paths[exc.__traceback__.tb_lineno]
        raise _Failure(f, _reason(exc, _texts.get(f, f)), getattr(exc, "waiting_for", None)) from None
    return out
"""
# Inputs are nearly always plain dicts (that is what JSON decodes to): the fast version reads their fields
# with a bare .get() and hands anything else to the general version.
_GUARD = "    if type(doc) is not dict:\n        return _general(doc)\n"


class _Generator:
    """Writes one Python function per object level of a mapping, with every field as straight-line code.

    A loop over field descriptors costs a tuple unpack, a closure call and a few branches per field; for a
    typical order mapping of 60 fields that overhead alone exceeded the time the expressions took. The
    generated function assigns each field in turn; a failure finds its field from the line it failed on.
    """

    def __init__(self, omit_null: bool) -> None:
        self.omit_null = omit_null
        self.namespace: dict[str, Any] = {
            "_Failure": _Failure, "_join": _join, "_reason": _reason, "_copy": copy.deepcopy,
            "_ERRORS": (MappingError, JMESPathError, TypeError, ValueError), "_field_get": field_get,
        }
        self._count = 0

    def bind(self, value: Any) -> str:
        self._count += 1
        name = f"_k{self._count}"
        self.namespace[name] = value
        return name

    def temp(self) -> str:
        self._count += 1
        return f"_t{self._count}"

    def function(self, tree: dict[str, Any]) -> _Builder:
        general = self._emit(tree, known_dict=False, guard="", extra={})
        return self._emit(tree, known_dict=True, guard=_GUARD, extra={"_general": general})

    def _emit(self, tree: dict[str, Any], known_dict: bool, guard: str, extra: dict[str, Any]) -> _Builder:
        texts: dict[str, str] = {}
        lines: list[tuple[str, str]] = []
        self._object(tree, "out", "", lines, texts, known_dict)
        name = self.temp().replace("_t", "_build")
        body = "\n".join("        " + code for code, _ in lines) or "        pass"
        source = _TEMPLATE.format(name=name, guard=guard, body=body)
        # Which target a failing line fills, found from the traceback's line number: naming the field costs
        # nothing until something fails.
        first = source.split("\n").index(body.split("\n")[0]) + 1
        paths = {first + index: path for index, (_, path) in enumerate(lines)}
        namespace = dict(self.namespace, _texts=texts, _paths=paths, **extra)
        # The source comes from our own template; user text only appears as repr() literals or bound names.
        exec(compile(source, f"<mapping {name}>", "exec"), namespace)
        built: _Builder = namespace[name]
        return built

    def _object(self, tree: dict[str, Any], out: str, prefix: str, lines: list[tuple[str, str]],
                texts: dict[str, str], known_dict: bool) -> None:
        for key, node in tree.items():
            path = prefix + key
            if isinstance(node, dict):
                inner = self.temp()
                lines.append((f"{inner} = {{}}", path))
                self._object(node, inner, path + ".", lines, texts, known_dict)
                # A nested object whose fields all came out null is left out like a null field.
                lines.append((f"if {inner}: {out}[{key!r}] = {inner}" if self.omit_null else
                              f"{out}[{key!r}] = {inner}", path))
                continue
            texts[path] = node.text
            if node.constant is not _NO_DEFAULT and node.constant is not None:
                value = self.bind(node.constant)
                if isinstance(node.constant, list | dict):
                    value = f"_copy({value})"
                lines.append((f"{out}[{key!r}] = {value}", path))
                continue
            if node.expr is not None:
                source = inline_source(node.expr, "doc", self.bind, self.temp, known_dict)
            else:
                source = f"{self.bind(node.fn)}(doc)"
            if node.default is not _NO_DEFAULT:
                fallback = self.bind(node.default)
                if isinstance(node.default, list | dict):
                    fallback = f"_copy({fallback})"
                lines.append((f"v = {source}", path))
                lines.append((f"{out}[{key!r}] = {fallback} if v is None else v", path))
            elif self.omit_null:
                lines.append((f"v = {source}", path))
                lines.append((f"if v is not None: {out}[{key!r}] = v", path))
            else:
                lines.append((f"{out}[{key!r}] = {source}", path))


def _each_builder(source: Compiled, element: _Builder, text: str) -> Compiled:
    def each(doc: Any) -> Any:
        items = source(doc)
        if items is None:
            return None
        if isinstance(items, dict):
            items = [items]  # one element where a list was expected: common in XML-derived payloads
        elif not isinstance(items, list):
            raise _Failure("", f"each: {text!r} gave {items!r}; expected a list of objects")
        out = []
        for index, item in enumerate(items):
            try:
                out.append(element(item))
            except _Failure as exc:
                raise _Failure(f"[{index}]." + exc.path if exc.path else f"[{index}]", exc.reason,
                               exc.waiting_for) from None
        return out

    return each
