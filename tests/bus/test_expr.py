"""The expression compiler must agree with jmespath's own interpreter, result for result and error for error."""

from __future__ import annotations

from typing import Any

import jmespath
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jmespath import exceptions as jexc

from bus.errors import ConfigError, Location, MappingError
from bus.expr import compile_expression, is_false
from bus.functions import IronbusFunctions

DOC: dict[str, Any] = {
    "a": {"b": {"c": 1, "d": [1, 2, 3]}, "e": None, "f": "", "g": [], "h": {}},
    "n": 0, "one": 1, "t": True, "false": False, "s": "text", "empty": "", "neg": -2.5,
    "list": [{"id": 1, "v": "x", "tags": ["p", "q"]}, {"id": 2, "v": None, "tags": []}, {"id": 3, "v": "z"}],
    "nested": [[1, 2], [3, [4, 5]], 6, None],
    "obj": {"k1": {"v": 1}, "k2": {"v": 2}, "k3": "scalar"},
    "nums": [3, 1, 2], "strs": ["b", "a", "c"], "mixed": [1, "a", None, True],
}

EXPRESSIONS = [
    # fields, subexpressions, indexes, slices
    "a", "a.b", "a.b.c", "a.b.c.d", "missing", "missing.x", "s.x", "a.b.d[0]", "a.b.d[-1]", "a.b.d[5]",
    "list[0].v", "list[1].v", "nums[1:]", "nums[::-1]", "nums[:-1:2]", "s[0]", "a.b.d[0:2][0]", "@", "@.a.b",
    # projections, flatten, filters, value projections
    "list[*].id", "list[*].v", "list[].tags[]", "list[*].tags", "nested[]", "nested[][]", "obj.*.v", "obj.*",
    "s.*", "s[*]", "list[?v == 'x'].id", "list[?v].id", "list[?!v].id", "list[?id > `1`].v",
    "list[?id >= `2` && v != null].id", "list[?tags].id", "list[?contains(tags, 'p')].id", "a.b.d[?@ > `1`]",
    "nested[?@ == `6`]", "list[*].[id, v]", "list[].{i: id, t: tags[0]}", "list[*].id | [0]",
    # multi-select, literals
    "[a.b.c, n, missing]", "{x: a.b.c, y: s}", "missing.{x: a}", "missing.[a]", "`[1, 2]`", "`{\"k\": 1}`",
    "'raw'", "`null`", "`true`",
    # comparators: numbers, strings, booleans, 0/1 vs true/false, mixed types
    "one == `1`", "n == `false`", "one == `true`", "s == 'text'", "a.b == a.b", "neg < `0`", "s < 'u'",
    "s < `1`", "t < `1`", "missing < `1`", "a.g == `[]`", "a.h == `{}`", "n != `0`",
    # and / or / not and truthiness
    "n || 'x'", "empty || 'x'", "a.g || 'x'", "a.h || 'x'", "false || missing", "t && s", "empty && s",
    "!n", "!empty", "!a.g", "!missing", "!t", "!one", "!neg",
    # pipes
    "list[*].v | [1]", "a | b | c", "nums | sort(@) | [0]",
    # JMESPath built-in functions
    "length(list)", "length(s)", "sort(nums)", "sort(strs)", "max(nums)", "min(strs)", "sum(nums)",
    "avg(nums)", "abs(neg)", "ceil(neg)", "floor(neg)", "keys(obj)", "values(a.b)", "type(list)", "type(n)",
    "to_string(nums)", "to_string(s)", "to_number('12')", "to_number('x')", "to_array(s)", "not_null(missing, n)",
    "join(', ', strs)", "reverse(strs)", "reverse(s)", "starts_with(s, 'te')", "ends_with(s, 'xt')",
    "contains(strs, 'a')", "merge(a.b, obj)", "sort_by(list, &id)[].id", "max_by(list, &id).id",
    "min_by(list, &id).v", "map(&id, list)", "map(&v, list)",
    # type errors must be the same errors
    "length(n)", "sort(mixed)", "abs(s)", "sum(strs)", "join(', ', nums)", "max_by(list, &v)",
]


def _outcome(fn: Any, doc: Any) -> tuple[str, Any]:
    try:
        return "ok", fn(doc)
    except Exception as exc:  # the kind of failure is what must agree
        return "error", type(exc).__name__


def _jmespath(text: str) -> Any:
    options = jmespath.Options(custom_functions=IronbusFunctions())
    return lambda doc: jmespath.search(text, doc, options=options)


@pytest.mark.parametrize("text", EXPRESSIONS)
def test_compiled_expression_agrees_with_jmespath(text: str) -> None:
    compiled = compile_expression(text)
    assert _outcome(compiled.fn, DOC) == _outcome(_jmespath(text), DOC)


def test_compiled_results_do_not_share_mutable_literals() -> None:
    expr = compile_expression("`[1, 2]`")
    first = expr.search({})
    first.append(3)
    assert expr.search({}) == [1, 2]


@pytest.mark.parametrize("value", [None, False, "", [], {}])
def test_falsy_values(value: Any) -> None:
    assert is_false(value)


@pytest.mark.parametrize("value", [0, 0.0, True, "x", [0], {"a": None}])
def test_truthy_values(value: Any) -> None:
    assert not is_false(value)


# --- property-based: random documents against random expressions --------------------------------------------

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from(["", "a", "b", "x"]))
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(["a", "b", "c"]), inner, max_size=3)),
    max_leaves=12)
_docs = st.dictionaries(st.sampled_from(["a", "b", "c"]), _values, max_size=3)
_leaf_exprs = st.sampled_from(["a", "b", "c", "@", "a.b", "b[0]", "c[-1]", "`1`", "'x'", "`null`", "a[*]",
                               "b[]", "c.*", "a[?@]", "b[?a == `1`]"])


def _combine(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(inner, inner).map(lambda p: f"{p[0]} || {p[1]}"),
        st.tuples(inner, inner).map(lambda p: f"{p[0]} && {p[1]}"),
        inner.map(lambda e: f"!({e})"),
        st.tuples(inner, inner).map(lambda p: f"({p[0]}) | ({p[1]})"),
        st.tuples(inner, st.sampled_from(["==", "!=", "<", ">="]), inner).map(lambda p: f"{p[0]} {p[1]} {p[2]}"),
        st.tuples(inner, inner).map(lambda p: f"[{p[0]}, {p[1]}]"),
        st.tuples(inner, inner).map(lambda p: f"{{x: {p[0]}, y: {p[1]}}}"),
        inner.map(lambda e: f"length({e})"),
        inner.map(lambda e: f"to_string({e})"),
        st.tuples(inner, inner).map(lambda p: f"a[?{p[0]}].{p[1]}" if p[1][0].isalpha() else f"a[?{p[0]}]"),
    )


_exprs = st.recursive(_leaf_exprs, _combine, max_leaves=6)


@settings(max_examples=400, deadline=None)
@given(text=_exprs, doc=_docs)
def test_random_expressions_agree_with_jmespath(text: str, doc: dict[str, Any]) -> None:
    try:
        compiled = compile_expression(text)
    except ConfigError:
        with pytest.raises(jexc.JMESPathError):
            jmespath.compile(text)
        return
    assert _outcome(compiled.fn, doc) == _outcome(_jmespath(text), doc)


# --- compile errors -----------------------------------------------------------------------------------------


def test_syntax_error_names_the_expression_and_position() -> None:
    where = Location("mappings/x.yaml", 4, 3)
    with pytest.raises(ConfigError) as info:
        compile_expression("a[?b==]", "field 'x'", location=where)
    assert info.value.location == where
    assert str(info.value) == ("mappings/x.yaml:4:3: field 'x': expression 'a[?b==]' does not compile: "
                               "invalid token at column 7 near ']'")


def test_unfinished_expression_says_what_is_likely_open() -> None:
    with pytest.raises(ConfigError, match=r"'number\(quantity' does not compile: it ends too early; is a bracket"):
        compile_expression("number(quantity")


def test_unknown_function_is_a_compile_error_with_suggestion() -> None:
    with pytest.raises(ConfigError, match=r"unknown function lenght\(\); did you mean length\(\)"):
        compile_expression("lenght(a)")


@pytest.mark.parametrize(("text", "expected"), [
    ("length(a, b)", r"length\(\) takes 1 argument, got 2"),
    ("now(a)", r"now\(\) takes 0 arguments, got 1"),
    ("value_map('m', a, 'x', 'y')", r"value_map\(\) takes 2 to 3 arguments, got 4"),
    ("merge()", r"merge\(\) takes at least 1 argument, got 0"),
])
def test_wrong_arity_is_a_compile_error(text: str, expected: str) -> None:
    functions = IronbusFunctions({"m": {"a": "b"}})
    with pytest.raises(ConfigError, match=expected):
        compile_expression(text, functions=functions)


def test_unknown_value_map_literal_is_a_compile_error() -> None:
    functions = IronbusFunctions({"order_status": {"a": "b"}})
    with pytest.raises(ConfigError, match=r"unknown value map 'order_statsu'; did you mean 'order_status'"):
        compile_expression("value_map('order_statsu', state)", functions=functions)


@pytest.mark.parametrize("text", ["", "   "])
def test_empty_expression_is_a_compile_error(text: str) -> None:
    with pytest.raises(ConfigError, match="expected a non-empty JMESPath string"):
        compile_expression(text)


# --- run-time errors ----------------------------------------------------------------------------------------


def test_search_turns_type_errors_into_mapping_errors() -> None:
    expr = compile_expression("length(n)", "route 'r' filter")
    with pytest.raises(MappingError) as info:
        expr.search({"n": 5})
    assert info.value.mapping == "route 'r' filter"
    assert info.value.field == "length(n)"
    assert "expected one of" in info.value.reason


def test_search_turns_function_errors_into_mapping_errors() -> None:
    expr = compile_expression("number(q)")
    with pytest.raises(MappingError, match=r"number\(\) cannot read 'abc'"):
        expr.search({"q": "abc"})


def test_search_reports_ordering_strings_against_numbers() -> None:
    expr = compile_expression("a < `1`")
    with pytest.raises(MappingError, match="cannot order-compare"):
        expr.search({"a": "x"})


def test_expression_keeps_its_text() -> None:
    expr = compile_expression("a.b")
    assert expr.text == "a.b"
    assert expr.search({"a": {"b": 7}}) == 7
