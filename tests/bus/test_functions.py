"""The ironbus mapping functions, called through compiled expressions as mappings call them."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import jmespath
import pytest

from bus.envelope import Event
from bus.errors import MappingError
from bus.expr import compile_expression
from bus.functions import CURRENT_EVENT, FunctionError, IronbusFunctions
from bus.xref import MemoryXref


@pytest.fixture
def functions() -> IronbusFunctions:
    xref = MemoryXref.from_dict({"customer": {"crm": {"42": "CUST-1"}, "scm": {"K-9": "CUST-1"}}})
    return IronbusFunctions({"order_status": {"quotation": "open", "confirmed": "confirmed"},
                             "flags": {1: "one"}, "bools": {True: "yes"}}, xref)


def run(text: str, doc: Any = None, functions: IronbusFunctions | None = None) -> Any:
    return compile_expression(text, functions=functions or IronbusFunctions()).fn(doc)


# --- value_map ----------------------------------------------------------------------------------------------


def test_value_map_translates(functions: IronbusFunctions) -> None:
    assert run("value_map('order_status', s)", {"s": "quotation"}, functions) == "open"


def test_value_map_default_for_unknown_value(functions: IronbusFunctions) -> None:
    assert run("value_map('order_status', s, 'other')", {"s": "weird"}, functions) == "other"


def test_value_map_null_stays_null(functions: IronbusFunctions) -> None:
    assert run("value_map('order_status', s)", {}, functions) is None


def test_value_map_compares_numbers_as_text(functions: IronbusFunctions) -> None:
    assert run("value_map('flags', n)", {"n": 1}, functions) == "one"
    assert run("value_map('bools', b)", {"b": True}, functions) == "yes"


def test_value_map_unknown_value_names_map_and_value(functions: IronbusFunctions) -> None:
    with pytest.raises(FunctionError) as info:
        run("value_map('order_status', s)", {"s": "weird"}, functions)
    assert "value map 'order_status' has no entry for 'weird'" in str(info.value)
    assert "'quotation'" in str(info.value)


def test_value_map_name_from_data_is_checked_at_run_time(functions: IronbusFunctions) -> None:
    with pytest.raises(FunctionError, match="unknown value map 'nope'"):
        run("value_map(m, s)", {"m": "nope", "s": "x"}, functions)


# --- xref ---------------------------------------------------------------------------------------------------


def test_xref_finds_canonical_id_for_number_id(functions: IronbusFunctions) -> None:
    assert run("xref('customer', 'crm', id)", {"id": 42}, functions) == "CUST-1"


def test_xref_to_finds_the_other_systems_id(functions: IronbusFunctions) -> None:
    assert run("xref_to('customer', 'scm', xref('customer', 'crm', id))", {"id": "42"}, functions) == "K-9"


def test_xref_missing_tells_how_to_link(functions: IronbusFunctions) -> None:
    with pytest.raises(FunctionError) as info:
        run("xref('customer', 'crm', id)", {"id": 43}, functions)
    assert str(info.value) == ("no cross-reference for customer crm:43; "
                               "link it with `ironbus xref set customer <canonical> crm 43`")


def test_xref_to_missing_tells_how_to_link(functions: IronbusFunctions) -> None:
    with pytest.raises(FunctionError, match=r"no cross-reference for customer CUST-2 in scm; link it with "
                                            r"`ironbus xref set customer CUST-2 scm <scm id>`"):
        run("xref_to('customer', 'scm', 'CUST-2')", None, functions)


def test_xref_of_null_is_null(functions: IronbusFunctions) -> None:
    assert run("xref('customer', 'crm', id)", {}, functions) is None


def test_xref_without_a_store_says_so() -> None:
    with pytest.raises(FunctionError, match="needs a cross-reference store"):
        run("xref('customer', 'crm', '1')")


def test_xref_rejects_an_object_id(functions: IronbusFunctions) -> None:
    with pytest.raises(FunctionError, match=r"xref\(\) cannot read \{'id': 1\}; expected an id"):
        run("xref('customer', 'crm', party)", {"party": {"id": 1}}, functions)


# --- dates --------------------------------------------------------------------------------------------------

DATE_CASES = [
    ("2024-03-01", "2024-03-01", "2024-03-01T00:00:00Z"),
    ("2024-03-01T23:30:00+02:00", "2024-03-01", "2024-03-01T21:30:00Z"),
    ("2024-03-01T23:30:00-0200", "2024-03-01", "2024-03-02T01:30:00Z"),
    ("2024-03-01T10:00:00Z", "2024-03-01", "2024-03-01T10:00:00Z"),
    ("2024-03-01 10:00:00", "2024-03-01", "2024-03-01T10:00:00Z"),
    ("2024-03-01T10:00:00.250+01:00", "2024-03-01", "2024-03-01T09:00:00.250Z"),
    ("2024-03-01T10:00:00.123456Z", "2024-03-01", "2024-03-01T10:00:00.123456Z"),
    (1130112000, "2005-10-24", "2005-10-24T00:00:00Z"),
    (1130112000000, "2005-10-24", "2005-10-24T00:00:00Z"),
    ("1130112000", "2005-10-24", "2005-10-24T00:00:00Z"),
    ("1130112000000", "2005-10-24", "2005-10-24T00:00:00Z"),
    (1130112000.5, "2005-10-24", "2005-10-24T00:00:00.500Z"),
    ("/Date(1130112000000)/", "2005-10-24", "2005-10-24T00:00:00Z"),
    ("\\/Date(1130168212000+0000)\\/", "2005-10-24", "2005-10-24T15:36:52Z"),
    ("/Date(1130168212000+0200)/", "2005-10-24", "2005-10-24T15:36:52Z"),
    ({"__class__": "date", "year": 2024, "month": 2, "day": 29}, "2024-02-29", "2024-02-29T00:00:00Z"),
    ({"__class__": "datetime", "year": 2024, "month": 2, "day": 29, "hour": 23, "minute": 59, "second": 58,
      "microsecond": 1000}, "2024-02-29", "2024-02-29T23:59:58.001Z"),
]


@pytest.mark.parametrize(("value", "day", "instant"), DATE_CASES)
def test_date_and_datetime_read_vendor_formats(value: Any, day: str, instant: str) -> None:
    assert run("date(v)", {"v": value}) == day
    assert run("datetime(v)", {"v": value}) == instant


@pytest.mark.parametrize("value", ["yesterday", "2024-13-01", "/Date(abc)/", True, [2024], {"year": 2024},
                                   {"__class__": "date", "year": 2024}])
@pytest.mark.parametrize("function", ["date", "datetime"])
def test_bad_dates_name_function_value_and_expectation(function: str, value: Any) -> None:
    with pytest.raises(FunctionError) as info:
        run(f"{function}(v)", {"v": value})
    assert str(info.value).startswith(f"{function}() cannot read {value!r}; expected an ISO 8601 date/time")


@pytest.mark.parametrize("value", [None, ""])
def test_missing_dates_are_null(value: Any) -> None:
    assert run("date(v)", {"v": value}) is None
    assert run("datetime(v)", {"v": value}) is None


def test_now_is_current_utc() -> None:
    text = run("now()")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", text)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert abs(datetime.now(UTC) - moment) < timedelta(seconds=5)


# --- numbers ------------------------------------------------------------------------------------------------

NUMBER_CASES = [
    (12, 12, "12"), (12.5, 12.5, "12.5"), (10.0, 10, "10"), ("12", 12, "12"), (" 12 ", 12, "12"),
    ("12.5", 12.5, "12.5"), ("1,5", 1.5, "1.5"), ("1.234,56", 1234.56, "1234.56"),
    ("1,234,567.89", 1234567.89, "1234567.89"), ("1.234.567", 1234567, "1234567"), ("1 234.5", 1234.5, "1234.5"),
    ("1\u00a0234,5", 1234.5, "1234.5"), ("1'234.50", 1234.5, "1234.50"), ("-1.234,5", -1234.5, "-1234.5"),
    ("+.5", 0.5, "0.5"), ("10.00", 10, "10.00"), ("1e3", 1000, "1000"),
    ("12345678901234567890", 12345678901234567890, "12345678901234567890"),
    ({"__class__": "Decimal", "decimal": "10.00"}, 10, "10.00"),
    ({"__class__": "Decimal", "decimal": "2656.24"}, 2656.24, "2656.24"),
]


@pytest.mark.parametrize(("value", "number", "decimal"), NUMBER_CASES)
def test_number_and_decimal_read_vendor_formats(value: Any, number: Any, decimal: str) -> None:
    result = run("number(v)", {"v": value})
    assert result == number and type(result) is type(number)
    assert run("decimal(v)", {"v": value}) == decimal


@pytest.mark.parametrize("value", ["abc", "1.23.4", "12,34,5", "1,2,3.4", "nan", "inf", "1_000", True, [1],
                                   {"a": 1}, float("nan")])
@pytest.mark.parametrize("function", ["number", "decimal", "integer"])
def test_bad_numbers_name_function_value_and_expectation(function: str, value: Any) -> None:
    with pytest.raises(FunctionError) as info:
        run(f"{function}(v)", {"v": value})
    assert str(info.value).startswith(f"{function}() cannot read {value!r}; expected ")


@pytest.mark.parametrize("value", [None, "", "  "])
def test_blank_numbers_are_null(value: Any) -> None:
    assert run("number(v)", {"v": value}) is None
    assert run("decimal(v)", {"v": value}) is None
    assert run("integer(v)", {"v": value}) is None


def test_integer_accepts_whole_numbers_only() -> None:
    assert run("integer(v)", {"v": "1.000,00"}) == 1000
    assert run("integer(v)", {"v": "1.000"}) == 1  # one dot alone is a decimal point
    assert run("integer(v)", {"v": "12,0"}) == 12
    with pytest.raises(FunctionError, match=r"integer\(\) cannot read '2,5'; expected a whole number"):
        run("integer(v)", {"v": "2,5"})


# --- text ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "text"), [("a", "a"), (42, "42"), (42.0, "42"), (2.5, "2.5"), (True, "true"),
                                            ({"__class__": "Decimal", "decimal": "1.50"}, "1.50"), (None, None)])
def test_string(value: Any, text: str | None) -> None:
    assert run("string(v)", {"v": value}) == text


def test_string_rejects_objects() -> None:
    with pytest.raises(FunctionError, match=r"string\(\) cannot read \[1\]; expected a string, number or boolean"):
        run("string(v)", {"v": [1]})


def test_concat_skips_nulls_and_formats_numbers() -> None:
    assert run("concat('SO-', n, missing, '-', s)", {"n": 42, "s": "x"}) == "SO-42-x"
    assert run("concat(missing, other)", {}) is None


def test_coalesce_takes_first_non_empty() -> None:
    doc = {"a": None, "b": "", "c": [], "d": 0, "e": "x"}
    assert run("coalesce(a, b, c, d, e)", doc) == 0
    assert run("coalesce(a, b, e)", doc) == "x"
    assert run("coalesce(a, b, c)", doc) is None


@pytest.mark.parametrize(("text", "result"), [
    ("lower(v)", " ab c "), ("upper(v)", " AB C "), ("trim(v)", "aB c"), ("split(trim(v), ' ')", ["aB", "c"]),
])
def test_text_functions(text: str, result: Any) -> None:
    assert run(text, {"v": " aB c "}) == result


@pytest.mark.parametrize("text", ["lower(v)", "upper(v)", "trim(v)", "split(v, ',')"])
def test_text_functions_keep_null(text: str) -> None:
    assert run(text, {}) is None


@pytest.mark.parametrize("function", ["lower", "upper", "trim"])
def test_text_functions_reject_numbers(function: str) -> None:
    with pytest.raises(FunctionError, match=rf"{function}\(\) cannot read 5; expected a string"):
        run(f"{function}(v)", {"v": 5})


def test_split_needs_a_separator() -> None:
    with pytest.raises(FunctionError, match="non-empty separator"):
        run("split(v, '')", {"v": "a"})


# --- event --------------------------------------------------------------------------------------------------


def test_event_reads_the_current_event() -> None:
    event = Event(type="crm.sale_changed", source="ironbus/crm", id="E-1", key="SO-1",
                  extensions={"tenant": "acme"})
    token = CURRENT_EVENT.set(event)
    try:
        assert run("[event('id'), event('type'), event('key'), event('tenant'), event('nothing')]", {}) == [
            "E-1", "crm.sale_changed", "SO-1", "acme", None]
    finally:
        CURRENT_EVENT.reset(token)


def test_event_outside_mapping_is_an_error() -> None:
    with pytest.raises(FunctionError, match=r"event\('id'\) used where no event is being mapped"):
        run("event('id')")


# --- the same functions inside jmespath's interpreter --------------------------------------------------------


def test_functions_work_in_jmespath_interpreter(functions: IronbusFunctions) -> None:
    options = jmespath.Options(custom_functions=functions)
    doc = {"id": 42, "total": "1.234,5", "s": "confirmed"}
    assert jmespath.search("[xref('customer', 'crm', id), number(total), value_map('order_status', s)]", doc,
                           options=options) == ["CUST-1", 1234.5, "confirmed"]


@pytest.mark.parametrize("text", ["value_map('order_status', v)", "value_map('order_status', v, 'other')",
                                  "value_map('flags', v)", "value_map('bools', v, 'no')",
                                  "xref('customer', 'crm', v)", "xref('customer', 'scm', v)"])
@pytest.mark.parametrize("value", [None, "quotation", "weird", 1, 1.0, True, 42, "42", 42.0, "K-9", [1], {"a": 1}])
def test_constant_name_calls_behave_like_the_generic_function(functions: IronbusFunctions, text: str,
                                                               value: Any) -> None:
    # value_map('x', v) and xref('e', 's', v) resolve their table when they compile; the answer and the error
    # for every input must be what jmespath's interpreter, which calls the generic function, gives.
    def outcome(call: Any) -> Any:
        try:
            return ("ok", call())
        except (FunctionError, jmespath.exceptions.JMESPathError) as exc:
            return ("error", str(exc))

    assert functions.specialize(text.split("(")[0], _literals(text)) is not None  # the fast path is taken
    compiled = outcome(lambda: run(text, {"v": value}, functions))
    interpreted = outcome(lambda: jmespath.search(text, {"v": value},
                                                  options=jmespath.Options(custom_functions=functions)))
    assert compiled == interpreted


def _literals(text: str) -> list[Any]:
    args = text[text.index("(") + 1:-1].split(", ")
    return [arg.strip("'") if arg.startswith("'") else ... for arg in args]


@pytest.mark.parametrize("millis", [0, 1, -1, 86_399_999, 86_400_000, -86_400_000, -86_400_001, 1_130_112_000_000,
                                    1_711_929_599_999, 253_402_300_799_000])
def test_sap_day_agrees_with_the_instant(millis: int) -> None:
    # date() reads an SAP date by day number without building a datetime; datetime() goes the long way
    for text in (f"/Date({millis})/", f"/Date({millis}+0200)/"):
        assert run("date(v)", {"v": text}) == run("datetime(v)", {"v": text})[:10]


def test_function_error_is_a_mapping_error() -> None:
    assert issubclass(FunctionError, MappingError)
