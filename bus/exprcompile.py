"""The closure compiler behind :mod:`bus.expr`: a JMESPath AST turned into nested Python closures.

Each node type becomes one closure that does exactly what jmespath's tree interpreter does for it (truthiness,
null propagation, comparison and function type rules); node types it does not know fall back to jmespath's
interpreter. :func:`bus.expr.compile_expression` is the public entry point.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Iterable
from typing import Any

from jmespath.visitor import Options, TreeInterpreter, _equals, _is_actual_number, _is_comparable

# Function calls (and the Compiled type and CompileError they share) are bus.exprcalls'; re-exported here.
from bus.exprcalls import Compiled, CompileError, FunctionCalls
from bus.functions import IronbusFunctions

__all__ = ["ClosureCompiler", "CompileError", "Compiled", "default_functions", "is_false"]

_ORDERING = {"lt": operator.lt, "gt": operator.gt, "lte": operator.le, "gte": operator.ge}
default_functions = IronbusFunctions()


def is_false(value: Any) -> bool:
    """JMESPath falsiness: null, false, and empty string, list and object (0 is true)."""
    if value is None or value is False:
        return True
    kind = type(value)
    if kind is str or kind is list or kind is dict:
        return not value
    return bool(value == "" or value == [] or value == {})


class ClosureCompiler(FunctionCalls):
    def __init__(self, functions: IronbusFunctions) -> None:
        self.functions = functions
        self._interpreter: TreeInterpreter | None = None

    def compile(self, node: dict[str, Any]) -> Compiled:
        method = getattr(self, "_" + node["type"], None)
        if method is None:
            return self._fallback(node)
        fn: Compiled = method(node)
        return fn

    def _fallback(self, node: dict[str, Any]) -> Compiled:
        if self._interpreter is None:
            self._interpreter = TreeInterpreter(Options(custom_functions=self.functions))
        visit = self._interpreter.visit
        return lambda value: visit(node, value)

    # -- paths

    def _field(self, node: dict[str, Any]) -> Compiled:
        name = node["value"]

        def field(value: Any) -> Any:
            try:
                return value.get(name)
            except AttributeError:
                return None

        return field

    def _chain(self, children: list[dict[str, Any]]) -> Compiled:
        # Runs of plain fields (a.b.c) become one loop; field access on null is null, so stopping early
        # on null is the same as visiting every remaining field.
        steps: list[Compiled] = []
        names: list[str] = []
        flat = self._flatten_chain(children)
        for child in flat:
            if child["type"] == "field":
                names.append(child["value"])
                continue
            if names:
                steps.append(self._fields(names))
                names = []
            steps.append(self.compile(child))
        if names:
            steps.append(self._fields(names))
        if len(steps) == 1:
            return steps[0]
        if len(steps) == 2:
            first, second = steps
            return lambda value: second(first(value))
        chain = tuple(steps)

        def run(value: Any) -> Any:
            for step in chain:
                value = step(value)
            return value

        return run

    def _flatten_chain(self, children: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for child in children:
            if child["type"] in ("subexpression", "index_expression", "pipe"):
                out.extend(self._flatten_chain(child["children"]))
            else:
                out.append(child)
        return out

    def _fields(self, names: list[str]) -> Compiled:
        if len(names) == 1:
            return self._field({"value": names[0]})
        if len(names) == 2:
            a, b = names

            def two(value: Any) -> Any:
                try:
                    return value.get(a).get(b)
                except AttributeError:
                    return None

            return two
        path = tuple(names)

        def many(value: Any) -> Any:
            try:
                for name in path:
                    value = value.get(name)
            except AttributeError:
                return None
            return value

        return many

    def _subexpression(self, node: dict[str, Any]) -> Compiled:
        return self._chain(node["children"])

    _index_expression = _subexpression
    _pipe = _subexpression

    def _index(self, node: dict[str, Any]) -> Compiled:
        position = node["value"]

        def index(value: Any) -> Any:
            if not isinstance(value, list):
                return None
            try:
                return value[position]
            except IndexError:
                return None

        return index

    def _slice(self, node: dict[str, Any]) -> Compiled:
        part = slice(*node["children"])
        return lambda value: value[part] if isinstance(value, list) else None

    def _current(self, node: dict[str, Any]) -> Compiled:
        return lambda value: value

    _identity = _current

    def _literal(self, node: dict[str, Any]) -> Compiled:
        constant = node["value"]
        if isinstance(constant, list | dict):
            # A fresh copy per search: the result may be changed by whoever receives it.
            return lambda value: copy.deepcopy(constant)
        return lambda value: constant

    # -- projections

    def _projection(self, node: dict[str, Any]) -> Compiled:
        left, right = self.compile(node["children"][0]), node["children"][1]
        if right["type"] == "identity":

            def identity_projection(value: Any) -> Any:
                base = left(value)
                if not isinstance(base, list):
                    return None
                return [element for element in base if element is not None]

            return identity_projection
        each = self.compile(right)

        def projection(value: Any) -> Any:
            base = left(value)
            if not isinstance(base, list):
                return None
            return _collect(each, base)

        return projection

    def _value_projection(self, node: dict[str, Any]) -> Compiled:
        left, each = self.compile(node["children"][0]), self.compile(node["children"][1])

        def value_projection(value: Any) -> Any:
            try:
                base = left(value).values()
            except AttributeError:
                return None
            return _collect(each, base)

        return value_projection

    def _filter_projection(self, node: dict[str, Any]) -> Compiled:
        left, each, condition = (self.compile(child) for child in node["children"])

        def filter_projection(value: Any) -> Any:
            base = left(value)
            if not isinstance(base, list):
                return None
            return _collect(each, (element for element in base if not is_false(condition(element))))

        return filter_projection

    def _flatten(self, node: dict[str, Any]) -> Compiled:
        left = self.compile(node["children"][0])

        def flatten(value: Any) -> Any:
            base = left(value)
            if not isinstance(base, list):
                return None
            merged: list[Any] = []
            for element in base:
                if isinstance(element, list):
                    merged.extend(element)
                else:
                    merged.append(element)
            return merged

        return flatten

    # -- multi-select

    def _multi_select_dict(self, node: dict[str, Any]) -> Compiled:
        pairs = tuple((child["value"], self.compile(child["children"][0])) for child in node["children"])

        def multi_select_dict(value: Any) -> Any:
            if value is None:
                return None
            return {key: fn(value) for key, fn in pairs}

        return multi_select_dict

    def _multi_select_list(self, node: dict[str, Any]) -> Compiled:
        items = tuple(self.compile(child) for child in node["children"])

        def multi_select_list(value: Any) -> Any:
            if value is None:
                return None
            return [fn(value) for fn in items]

        return multi_select_list

    # -- logic

    def _comparator(self, node: dict[str, Any]) -> Compiled:
        left, right = (self.compile(child) for child in node["children"])
        op = node["value"]
        if op == "eq":
            return lambda value: _equals(left(value), right(value))
        if op == "ne":
            return lambda value: not _equals(left(value), right(value))
        compare = _ORDERING[op]

        def ordering(value: Any) -> Any:
            a, b = left(value), right(value)
            if not (_is_comparable(a) and _is_comparable(b)):
                return None
            return compare(a, b)

        return ordering

    def _or_expression(self, node: dict[str, Any]) -> Compiled:
        left, right = (self.compile(child) for child in node["children"])

        def either(value: Any) -> Any:
            matched = left(value)
            return right(value) if is_false(matched) else matched

        return either

    def _and_expression(self, node: dict[str, Any]) -> Compiled:
        left, right = (self.compile(child) for child in node["children"])

        def both(value: Any) -> Any:
            matched = left(value)
            return matched if is_false(matched) else right(value)

        return both

    def _not_expression(self, node: dict[str, Any]) -> Compiled:
        inner = self.compile(node["children"][0])

        def negate(value: Any) -> Any:
            result = inner(value)
            if _is_actual_number(result) and result == 0:
                return False  # JMESPath: 0 is true, so !0 is false
            return not result

        return negate


def _collect(each: Compiled, elements: Iterable[Any]) -> list[Any]:
    """A projection's result: ``each`` applied to every element, nulls dropped (JMESPath semantics)."""
    return [current for element in elements if (current := each(element)) is not None]
