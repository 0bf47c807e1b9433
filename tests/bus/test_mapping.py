"""Mapping files: loading (with located errors) and applying (with field-named errors)."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any

import pytest

from bus.envelope import Event
from bus.errors import ConfigError, MappingError, UnknownNameError
from bus.functions import CURRENT_EVENT
from bus.mapping import Mapping, load_mapping
from bus.xref import MemoryXref

SALE_MAPPING = """\
description: Tryton sale -> canonical order.changed
output: order.changed
fields:
  order_id: number
  customer.id: "xref('customer', 'crm', to_string(party))"
  customer.name: "party_name"
  status: "value_map('order_status', state)"
  total: {expr: "number(total_amount)", default: 0}
  currency: {value: EUR}
  lines:
    each: lines
    fields:
      line_no: "sequence"
      material_id: "xref('material', 'crm', to_string(product))"
      quantity: "number(quantity)"
  requested_date: "date(sale_date)"
  tags: "[`a`, `b`]"
value_maps:
  order_status: {quotation: open, confirmed: confirmed, processing: confirmed, cancelled: cancelled}
"""


def sale() -> dict[str, Any]:
    return {
        "number": "SO-7", "party": 42, "party_name": "ACME", "state": "processing", "total_amount": "1.234,50",
        "sale_date": "2024-03-01T09:00:00+01:00",
        "lines": [{"sequence": 1, "product": 7, "quantity": "2,5"}, {"sequence": 2, "product": 8, "quantity": "3"},
                  {"sequence": 3, "product": 7, "quantity": "1"}],
    }


@pytest.fixture
def xref() -> MemoryXref:
    return MemoryXref.from_dict({"customer": {"crm": {"42": "CUST-42"}},
                                 "material": {"crm": {"7": "MAT-7", "8": "MAT-8"}}})


def write(tmp_path: Path, text: str, name: str = "m.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load_text(text: str, **kwargs: Any) -> Mapping:
    return Mapping.from_text(textwrap.dedent(text), "mappings/x.yaml", **kwargs)


# --- applying -----------------------------------------------------------------------------------------------


def test_maps_the_documented_example(tmp_path: Path, xref: MemoryXref) -> None:
    mapping = Mapping.load(write(tmp_path, SALE_MAPPING), xref=xref)
    assert mapping.output == "order.changed"
    assert mapping.description == "Tryton sale -> canonical order.changed"
    assert mapping.apply(sale()) == {
        "order_id": "SO-7",
        "customer": {"id": "CUST-42", "name": "ACME"},
        "status": "confirmed",
        "total": 1234.5,
        "currency": "EUR",
        "lines": [{"line_no": 1, "material_id": "MAT-7", "quantity": 2.5},
                  {"line_no": 2, "material_id": "MAT-8", "quantity": 3},
                  {"line_no": 3, "material_id": "MAT-7", "quantity": 1}],
        "requested_date": "2024-03-01",
        "tags": ["a", "b"],
    }


def test_nulls_are_left_out_and_defaults_fill_in(xref: MemoryXref) -> None:
    mapping = load_text(SALE_MAPPING, xref=xref)
    doc = {"number": "SO-8", "party": 42, "state": "quotation"}
    assert mapping.apply(doc) == {"order_id": "SO-8", "customer": {"id": "CUST-42"}, "status": "open", "total": 0,
                                  "currency": "EUR", "tags": ["a", "b"]}


def test_omit_null_false_keeps_null_fields() -> None:
    mapping = load_text("""\
        omit_null: false
        fields:
          a: x
          b.c: y
          d: {expr: z, default: 5}
        """)
    assert mapping.apply({"x": 1}) == {"a": 1, "b": {"c": None}, "d": 5}


def test_nested_object_with_only_nulls_is_left_out() -> None:
    mapping = load_text("""\
        fields:
          id: id
          customer.id: c.id
          customer.name: c.name
        """)
    assert mapping.apply({"id": 1}) == {"id": 1}
    assert mapping.apply({"id": 1, "c": {"name": "N"}}) == {"id": 1, "customer": {"name": "N"}}


def test_constants_and_defaults_are_fresh_copies() -> None:
    mapping = load_text("""\
        fields:
          tags: {value: [a]}
          extra: {expr: missing, default: {k: [1]}}
        """)
    first = mapping.apply({})
    first["tags"].append("b")
    first["extra"]["k"].append(2)
    assert mapping.apply({}) == {"tags": ["a"], "extra": {"k": [1]}}


def test_each_accepts_a_single_object_as_a_list_of_one() -> None:
    mapping = load_text("""\
        fields:
          lines: {each: item, fields: {n: num}}
        """)
    assert mapping.apply({"item": {"num": 1}}) == {"lines": [{"n": 1}]}
    assert mapping.apply({"item": [{"num": 1}, {"num": 2}]}) == {"lines": [{"n": 1}, {"n": 2}]}
    assert mapping.apply({}) == {}


def test_each_can_nest() -> None:
    mapping = load_text("""\
        fields:
          orders:
            each: orders
            fields:
              id: id
              lines: {each: lines, fields: {q: number(q)}}
        """)
    doc = {"orders": [{"id": 1, "lines": [{"q": "1,5"}]}, {"id": 2, "lines": []}]}
    assert mapping.apply(doc) == {"orders": [{"id": 1, "lines": [{"q": 1.5}]}, {"id": 2, "lines": []}]}


def test_event_attributes_are_available_during_apply() -> None:
    mapping = load_text("""\
        fields:
          event_id: "event('id')"
          correlation: "event('correlationid')"
        """)
    event = Event(type="t", source="s", id="E-9", correlationid="C-1")
    assert mapping.apply({}, event=event) == {"event_id": "E-9", "correlation": "C-1"}
    assert CURRENT_EVENT.get() is None


def test_shared_value_maps_are_used_and_own_maps_win() -> None:
    text = """\
        fields:
          status: "value_map('status', s)"
          unit: "value_map('unit', u)"
        value_maps:
          unit: {kg: KGM}
        """
    mapping = load_text(text, value_maps={"status": {"a": "open"}, "unit": {"kg": "shared"}})
    assert mapping.apply({"s": "a", "u": "kg"}) == {"status": "open", "unit": "KGM"}


# --- run-time errors ----------------------------------------------------------------------------------------


def test_error_names_file_field_and_input(xref: MemoryXref) -> None:
    mapping = load_text(SALE_MAPPING, xref=xref)
    doc = sale()
    doc["lines"][2]["quantity"] = "abc"
    with pytest.raises(MappingError) as info:
        mapping.apply(doc)
    assert info.value.mapping == "mappings/x.yaml"
    assert info.value.field == "lines[2].quantity"
    assert str(info.value).startswith("mappings/x.yaml: field 'lines[2].quantity': number() cannot read 'abc'")


def test_missing_xref_names_the_nested_field(xref: MemoryXref) -> None:
    mapping = load_text(SALE_MAPPING, xref=xref)
    doc = sale()
    doc["party"] = 43
    with pytest.raises(MappingError, match=r"field 'customer.id': no cross-reference for customer crm:43"):
        mapping.apply(doc)


def test_unknown_value_is_named(xref: MemoryXref) -> None:
    mapping = load_text(SALE_MAPPING, xref=xref)
    with pytest.raises(MappingError, match=r"field 'status': value map 'order_status' has no entry for 'weird'"):
        mapping.apply(dict(sale(), state="weird"))


def test_jmespath_type_error_names_field_and_expression() -> None:
    mapping = load_text("""\
        fields:
          n: length(v)
        """)
    with pytest.raises(MappingError) as info:
        mapping.apply({"v": 5})
    assert info.value.field == "n"
    assert "(in 'length(v)')" in info.value.reason


def test_each_over_a_scalar_is_an_error() -> None:
    mapping = load_text("""\
        fields:
          lines: {each: items, fields: {n: num}}
        """)
    with pytest.raises(MappingError, match=r"field 'lines': each: 'items' gave 'oops'; expected a list of objects"):
        mapping.apply({"items": "oops"})


# --- load errors --------------------------------------------------------------------------------------------


def test_unknown_top_level_key_is_located_with_suggestion() -> None:
    with pytest.raises(UnknownNameError) as info:
        load_text("""\
            fields: {a: b}
            valu_maps: {}
            """)
    assert str(info.value) == "mappings/x.yaml:2:1: unknown mapping key 'valu_maps'; did you mean 'value_maps'?"


def test_field_of_wrong_type_is_located() -> None:
    with pytest.raises(ConfigError) as info:
        load_text("""\
            fields:
              a: b
              version: 2
            """)
    assert str(info.value).startswith("mappings/x.yaml:3:3: field 'version': expected a JMESPath string")
    assert "use {value: …} for a constant" in str(info.value)


def test_unknown_field_option_is_located() -> None:
    with pytest.raises(ConfigError, match=r"^mappings/x.yaml:2:20: field 'total': unknown field option 'defualt'; "
                                          r"did you mean 'default'\?"):
        load_text("""\
            fields:
              total: {expr: a, defualt: 0}
            """)


def test_expression_that_does_not_compile_is_located() -> None:
    with pytest.raises(ConfigError) as info:
        load_text("""\
            fields:
              a: b
              lines:
                each: lines
                fields:
                  qty: "number(quantity"
            """)
    message = str(info.value)
    assert message.startswith("mappings/x.yaml:6:7: field 'lines[].qty': expression 'number(quantity' "
                              "does not compile")


def test_unknown_value_map_name_is_caught_at_load() -> None:
    with pytest.raises(ConfigError, match=r"^mappings/x.yaml:2:3: field 'status': .* unknown value map 'stauts'; "
                                          r"did you mean 'status'\?"):
        load_text("""\
            fields:
              status: "value_map('stauts', s)"
            value_maps:
              status: {a: b}
            """)


@pytest.mark.parametrize(("fields", "message"), [
    ("  a: x\n  a.b: y\n", "field 'a.b' conflicts with field 'a'"),
    ("  a.b: y\n  a: x\n", "field 'a' conflicts with fields under it"),
    ("  a..b: x\n", "field 'a..b': empty segment in target path"),
    ("  a: {expr: x, value: 1}\n", "give exactly one of 'expr', 'value' or 'each' (got expr, value)"),
    ("  a: {default: 1}\n", "give exactly one of 'expr', 'value' or 'each' (got none)"),
    ("  a: {each: x}\n", "'each' needs 'fields:'"),
    ("  a: {value: 1, default: 2}\n", "a constant {value: …} takes no other option"),
    ("  a:\n", "field 'a': expected a JMESPath string"),
])
def test_malformed_fields(fields: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Mapping.from_text("fields:\n" + fields, "m.yaml")
    assert message in str(info.value)
    assert info.value.location is not None and info.value.location.line is not None


@pytest.mark.parametrize(("text", "message"), [
    ("description: x\n", "mapping needs 'fields:'"),
    ("- a\n", "must be a YAML object"),
    ("fields: {a: b}\nomit_null: maybe\n", "omit_null: expected true or false"),
    ("fields: {a: b}\nvalue_maps: {s: [a]}\n", "value_maps.s: expected an object"),
])
def test_malformed_files(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Mapping.from_text(text, "m.yaml")


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_mapping(tmp_path / "nope.yaml")


# --- caching ------------------------------------------------------------------------------------------------


def test_load_mapping_caches_until_the_file_changes(tmp_path: Path) -> None:
    path = write(tmp_path, "fields: {a: x}\n")
    first = load_mapping(path)
    assert load_mapping(path) is first
    path.write_text("fields: {a: y}\n", encoding="utf-8")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    second = load_mapping(path)
    assert second is not first
    assert second.apply({"x": 1, "y": 2}) == {"a": 2}


def test_load_mapping_does_not_share_across_stores(tmp_path: Path) -> None:
    path = write(tmp_path, "fields: {a: \"xref('c', 's', x)\"}\n")
    one = load_mapping(path, xref=MemoryXref.from_dict({"c": {"s": {"1": "A"}}}))
    two = load_mapping(path, xref=MemoryXref.from_dict({"c": {"s": {"1": "B"}}}))
    assert (one.apply({"x": 1}), two.apply({"x": 1})) == ({"a": "A"}, {"a": "B"})


# --- generated code keeps jmespath's semantics ----------------------------------------------------------------

INLINE_CASES = {
    "plain": "a", "path": "a.b.c", "into_list": "l.b", "into_text": "s.b", "missing": "x.y.z",
    "fn_on_path": "number(a.b.n)", "fn_literals": "concat('x', a.b.c, 'y')", "fn_null": "upper(x.y)",
    "fn_nested": "lower(upper(s))", "fn_list_literal": "coalesce(x, `[1]`)", "builtin": "length(l)",
    "projection": "l[*].b", "or": "x || s",
}


@pytest.mark.parametrize("doc", [
    {"a": {"b": {"c": "C", "n": "1,5"}}, "l": [{"b": 1}, {"b": 2}], "s": "Text"},
    {"a": {"b": None}, "l": [], "s": "t"},
    {"a": "flat", "l": [{"b": None}], "s": "T"},
])
def test_generated_fields_equal_jmespath(doc: dict[str, Any]) -> None:
    import jmespath

    from bus.functions import IronbusFunctions

    body = "\n".join(f"  {key}: {text!r}" for key, text in INLINE_CASES.items())
    mapping = Mapping.from_text(f"omit_null: false\nfields:\n{body}\n", "m.yaml")
    options = jmespath.Options(custom_functions=IronbusFunctions())
    expected = {key: jmespath.search(text, doc, options=options) for key, text in INLINE_CASES.items()}
    assert mapping.apply(doc) == expected


def test_inputs_that_are_dict_subclasses_are_read_like_dicts() -> None:
    from collections import OrderedDict

    mapping = load_text("""\
        fields:
          name: party.name
          n: number(party.n)
        """)
    assert mapping.apply(OrderedDict(party=OrderedDict(name="A", n="2"))) == {"name": "A", "n": 2}


def test_unusual_target_names_are_kept_verbatim() -> None:
    mapping = load_text("""\
        fields:
          "it's": a
          'say "hi"': a
          doc: a
          out.v: a
          "f": {expr: missing, default: 1}
        """)
    assert mapping.apply({"a": 7}) == {"it's": 7, 'say "hi"': 7, "doc": 7, "out": {"v": 7}, "f": 1}


def test_errors_are_named_for_inputs_that_are_not_plain_dicts() -> None:
    from collections import OrderedDict

    mapping = load_text("""\
        fields:
          a: x
          b.c: number(y)
        """)
    with pytest.raises(MappingError, match=r"field 'b.c': number\(\) cannot read 'zz'"):
        mapping.apply(OrderedDict(x=1, y="zz"))
    assert mapping.apply(["not", "an", "object"]) == {}
