"""Function calls in compiled expressions: the ``name(args)`` nodes of :class:`~bus.exprcompile.ClosureCompiler`.

A call is checked against the function's signature once, when compiled (unknown name, arity, literal
arguments an ironbus function can judge early), and becomes as few closures as its arguments allow; jmespath's
own functions keep jmespath's argument type checks. Also home of :data:`Compiled` and :class:`CompileError`,
which :mod:`bus.exprcompile` re-exports.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bus.errors import ConfigError
from bus.functions import NOT_LITERAL, IronbusFunctions

__all__ = ["CompileError", "Compiled", "FunctionCalls"]

#: A compiled expression: the current value in, the result out.
Compiled = Callable[[Any], Any]


class _Expression:
    """An expression reference (``&field``) handed to functions such as ``sort_by``.

    jmespath's functions call ``expref.visit(expref.expression, value)`` and type-check arguments by class
    name, so this class must be called ``_Expression`` and offer that method.
    """

    __slots__ = ("expression", "_fn")

    def __init__(self, node: dict[str, Any], fn: Compiled) -> None:
        self.expression = node
        self._fn = fn

    def visit(self, node: dict[str, Any], value: Any) -> Any:
        return self._fn(value)


class CompileError(Exception):
    """Raised inside the compiler; :func:`compile_expression` turns it into a ConfigError."""


class FunctionCalls:
    """The function-call nodes of :class:`~bus.exprcompile.ClosureCompiler`, mixed into it."""

    # Given by the compiler this is mixed into.
    functions: IronbusFunctions
    compile: Callable[[dict[str, Any]], Compiled]

    def _expref(self, node: dict[str, Any]) -> Compiled:
        ref = _Expression(node["children"][0], self.compile(node["children"][0]))
        return lambda value: ref

    def _function_expression(self, node: dict[str, Any]) -> Compiled:
        name: str = node["value"]
        functions = self.functions
        spec = functions.FUNCTION_TABLE.get(name)
        if spec is None:
            raise CompileError(f"unknown function {name}()" + _suggest(name, functions.FUNCTION_TABLE))
        signature = spec["signature"]
        children = node["children"]
        variadic = bool(signature) and bool(signature[-1].get("variadic"))
        most = getattr(spec["function"], "max_args", None)
        count = len(children)
        if (variadic and count < len(signature)) or (not variadic and count != len(signature)) or (
                most is not None and count > most):
            raise CompileError(f"{name}() takes {_arity(len(signature), variadic, most)}, got {count}")
        literals = [child["value"] if child["type"] == "literal" else NOT_LITERAL for child in children]
        try:
            functions.check_static(name, literals)
        except ConfigError as exc:
            raise CompileError(exc.message) from None
        args = tuple(self.compile(child) for child in children)
        if name not in IronbusFunctions.OWN:
            return self._checked_call(name, spec["function"].__get__(functions), args, signature)
        special = functions.specialize(name, literals)
        if special is not None:  # value_map('unit', unit): the table is resolved now, not per call
            dynamic = args[literals.index(NOT_LITERAL)]
            return lambda value: special(dynamic(value))
        impl = functions.implementation(name)
        # ironbus's own functions check their input themselves, with messages meant for integrators.
        if count == 1 and children[0]["type"] == "field":
            key = children[0]["value"]

            def call_on_field(value: Any) -> Any:  # number(quantity): the commonest shape, one call saved
                try:
                    field = value.get(key)
                except AttributeError:  # not an object: the field is null (an error inside impl must surface)
                    field = None
                return impl(field)

            return call_on_field
        folded = self._fold_literals(impl, children, args)
        if folded is not None:
            return folded
        if count == 1:
            (only,) = args
            return lambda value: impl(only(value))
        if count == 2:
            first, second = args
            return lambda value: impl(first(value), second(value))
        return lambda value: impl(*[arg(value) for arg in args])

    @staticmethod
    def _fold_literals(impl: Callable[..., Any], children: list[dict[str, Any]],
                       args: tuple[Compiled, ...]) -> Compiled | None:
        # split(text, ',') or concat('SO-', number): every argument but one is a literal, so pass the
        # constants directly instead of calling a closure for each (value_map and xref with constant names
        # are specialised before this). Only for ironbus's own functions, which never modify their arguments.
        dynamic = [i for i, child in enumerate(children) if child["type"] != "literal"]
        if len(dynamic) != 1 or len(children) not in (2, 3):
            return None
        consts = [child.get("value") for child in children]
        arg = args[dynamic[0]]
        if len(children) == 2:
            if dynamic[0] == 1:
                first = consts[0]
                return lambda value: impl(first, arg(value))
            second = consts[1]
            return lambda value: impl(arg(value), second)
        c0, c1, c2 = consts
        if dynamic[0] == 2:
            return lambda value: impl(c0, c1, arg(value))
        if dynamic[0] == 1:
            return lambda value: impl(c0, arg(value), c2)
        return lambda value: impl(arg(value), c1, c2)

    def _checked_call(self, name: str, impl: Callable[..., Any], args: tuple[Compiled, ...],
                      signature: tuple[dict[str, Any], ...]) -> Compiled:
        functions = self.functions
        # Only the declared parameters are type-checked (as jmespath does); variadic extras are not.
        checks = []
        for position, spec in enumerate(signature):
            types = spec["types"]
            if types:
                plain = {py for t in types if "-" not in t for py in _reverse_types(t)}
                has_subtypes = any("-" in t for t in types)
                checks.append((position, frozenset(plain), has_subtypes, types))

        def call(value: Any) -> Any:
            resolved = [arg(value) for arg in args]
            for position, plain, has_subtypes, types in checks:
                current = resolved[position]
                if has_subtypes or type(current).__name__ not in plain:
                    functions._type_check_single(current, types, name)
            return impl(*resolved)

        return call


def _reverse_types(jmespath_type: str) -> tuple[str, ...]:
    from jmespath.functions import REVERSE_TYPES_MAP

    names: tuple[str, ...] = REVERSE_TYPES_MAP[jmespath_type]
    return names


def _arity(required: int, variadic: bool, most: int | None) -> str:
    if most is not None and most != required:
        return f"{required} to {most} arguments"
    if variadic:
        return f"at least {required} argument{'s' if required != 1 else ''}"
    return f"{required} argument{'s' if required != 1 else ''}"


def _suggest(name: str, known: dict[str, Any]) -> str:
    from bus.errors import closest

    close = closest(name, known)
    return f"; did you mean {' or '.join(n + '()' for n in close)}?" if close else ""
