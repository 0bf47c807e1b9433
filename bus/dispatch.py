"""Choosing the routes an event passes, without trying every route's filter.

Many routes often share one trigger and differ only in a test such as ``region == 'EU'`` or
``kind == 'invoice' && amount > `1000```. Trying a thousand filters one by one costs a thousand evaluations per
event. :class:`RouteDispatch` reads each filter's AST once: the equality tests between a field path and a
literal that open its ``&&`` chain become keys of an index (path -> literal -> routes). Per event, each indexed
path is evaluated once and looked up; only the routes found, and the routes whose filter has no such test, have
their filter run. The routes passed are exactly those evaluating every filter would pass:

* JMESPath's ``&&`` stops at its first false operand, so a route whose leading equality fails would have
  evaluated nothing after it (and raised nothing) — its filter could only have said no;
* a path of plain field names evaluates to the same value whichever filter holds it, and cannot fail;
* literals are indexed by kind as well as value, following JMESPath equality: ``true`` never equals ``1``,
  ``1`` equals ``1.0``, a string only a string; lists and objects are not indexed.

A route the index rules out gets no result at all, as a route of another event type gets none: with a thousand
routes on one trigger, an event costs one journal row, not a "filtered" row for each of the 999 others. The
candidates whose filter runs and says no are "filtered" as before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

from bus.envelope import Event
from bus.exprcompile import ClosureCompiler, Compiled, default_functions


class Filtered(Protocol):
    """A compiled route as the dispatch sees it: its filter (an expression with its parsed ``ast``) or None."""

    @property
    def filter(self) -> Any: ...


R = TypeVar("R", bound=Filtered)  # a compiled route (bus.pipeline.CompiledRoute)
T = TypeVar("T")  # what a route makes of an event (bus.pipeline.RouteResult)

__all__ = ["MIN_ROUTES", "RouteDispatch", "equality_prefix"]

#: Below this many routes on one event type, trying each filter costs no more than the index would.
MIN_ROUTES = 4

#: An indexable value: its kind and the value (JMESPath equality distinguishes booleans from numbers).
IndexKey = tuple[str, Any]
Path = tuple[str, ...]


def _index_key(value: Any) -> IndexKey | None:
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, int | float):
        return ("n", value)
    if isinstance(value, str):
        return ("s", value)
    if value is None:
        return ("z", None)
    return None  # lists and objects: compared by value, not hashable; such tests stay in the filter


def _path(node: dict[str, Any]) -> Path | None:
    """The field names of a plain path (``a`` or ``a.b.c``), else None."""
    if node.get("type") == "field":
        return (str(node["value"]),)
    if node.get("type") == "subexpression":
        parts: list[str] = []
        for child in node["children"]:
            sub = _path(child)
            if sub is None:
                return None
            parts.extend(sub)
        return tuple(parts)
    return None


def _and_chain(node: dict[str, Any]) -> list[dict[str, Any]]:
    """The operands of a ``&&`` chain in evaluation order (a lone expression is a chain of one)."""
    if node.get("type") == "and_expression":
        left, right = node["children"]
        return _and_chain(left) + _and_chain(right)
    return [node]


def _equality(node: dict[str, Any]) -> tuple[Path, IndexKey, dict[str, Any]] | None:
    """``path == literal`` (either way round) as (path, indexed literal, path node), else None."""
    if node.get("type") != "comparator" or node.get("value") != "eq":
        return None
    left, right = node["children"]
    if right.get("type") != "literal":
        left, right = right, left
    if right.get("type") != "literal":
        return None
    path, key = _path(left), _index_key(right.get("value"))
    return None if path is None or key is None else (path, key, left)


def equality_prefix(ast: dict[str, Any]) -> list[tuple[Path, IndexKey, dict[str, Any]]]:
    """The ``path == literal`` tests at the start of a filter's ``&&`` chain (all must hold for it to pass)."""
    tests = []
    for operand in _and_chain(ast):
        test = _equality(operand)
        if test is None:
            break
        tests.append(test)
    return tests


class _Group:
    """Routes indexed on one path: evaluated once per event, then one dictionary look-up."""

    __slots__ = ("path", "get", "buckets")

    def __init__(self, path: Path, get: Compiled) -> None:
        self.path = path
        self.get = get
        self.buckets: dict[IndexKey, list[int]] = {}


class RouteDispatch(Generic[R]):
    """The routes of one event type, with their filters compiled into one dispatch (see the module doc)."""

    def __init__(self, routes: Sequence[R]) -> None:
        self.routes = list(routes)
        tests = {i: equality_prefix(r.filter.ast) for i, r in enumerate(self.routes)
                 if r.filter is not None and len(self.routes) >= MIN_ROUTES}
        self.groups: list[_Group] = []
        left = {i for i, t in tests.items() if t}
        compiler = ClosureCompiler(default_functions)
        while left:
            # index on the path most of the remaining routes test: fewest groups, fewest evaluations per event
            counts: dict[Path, int] = {}
            nodes: dict[Path, dict[str, Any]] = {}
            for i in left:
                for path, _, node in tests[i]:
                    counts[path] = counts.get(path, 0) + 1
                    nodes.setdefault(path, node)
            best = max(counts, key=lambda p: (counts[p], p))
            if counts[best] < 2:
                break  # a path of one route saves nothing over running that route's filter
            group = _Group(best, compiler.compile(nodes[best]))
            for i in sorted(left):
                key = next((k for p, k, _ in tests[i] if p == best), None)
                if key is not None:
                    group.buckets.setdefault(key, []).append(i)
            left -= {i for ids in group.buckets.values() for i in ids}
            self.groups.append(group)
        indexed = {i for g in self.groups for ids in g.buckets.values() for i in ids}
        #: routes tried one by one: no filter, or no leading equality test to index
        self.always = [i for i in range(len(self.routes)) if i not in indexed]

    def candidates(self, data: Any) -> list[int]:
        """Indexes (in route order) of the routes whose filter may pass on ``data``; the others do not."""
        found = self.always.copy()
        for group in self.groups:
            value = group.get(data)
            # the usual case, a string, without the function call
            key = ("s", value) if type(value) is str else _index_key(value)
            if key is not None:
                hit = group.buckets.get(key)
                if hit is not None:
                    found.extend(hit)
        if len(self.groups) > 1 or (self.groups and self.always):
            found.sort()
        return found

    def process(self, event: Event, target: str | None, run: Callable[[R, Event, str | None], T]) -> list[T]:
        """``run(route, event, target)`` for each candidate route, in route order; the routes ruled out get no
        result."""
        routes = self.routes
        return [run(routes[i], event, target) for i in self.candidates(event.data)]
