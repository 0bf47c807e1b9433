"""ironbus test: the *.test.yaml format, its comparisons, route tests with recording stubs, broken test files."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest

from bus import testrun
from bus.errors import ConfigError, Location
from bus.testrun import discover, json_contains_diff, json_equals_diff, run_file, run_paths

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "routes"
ORDER_FLOW = FIXTURES / "order_flow"


def _run(tmp_path: Path, text: str, name: str = "t.test.yaml") -> list[testrun.TestOutcome]:
    """Run a test file written into a copy-free project: it names the order_flow fixture's files by path."""
    path = tmp_path / name
    text = dedent(text).lstrip("\n").replace("FLOW", str(ORDER_FLOW))
    path.write_text(text, encoding="utf-8")
    return run_file(path)


def _summary(outcomes: list[testrun.TestOutcome]) -> list[tuple[str, bool, list[str]]]:
    return [(o.name, o.passed, o.details) for o in outcomes]


# -- comparisons ---------------------------------------------------------------------------------------
def test_json_contains_is_a_recursive_subset_check() -> None:
    actual = {"id": "SO-1", "lines": [{"qty": 2, "unit": "pc"}, {"qty": 1}], "total": 10.0, "extra": True}
    assert json_contains_diff({"id": "SO-1", "lines": [{"qty": 2}], "total": 10}, actual) == []
    assert json_contains_diff({"lines": [{"qty": 3}, {"unit": "kg"}]}, actual) == [
        "$.lines[0].qty: expected 3, got 2",
        '$.lines[1].unit: missing (expected "kg")',
    ]
    assert json_contains_diff({"lines": [{}, {}, {}]}, actual) == ["$.lines: expected at least 3 items, got 2"]
    assert json_contains_diff({"id": {"x": 1}}, actual) == ['$.id: expected an object, got "SO-1"']
    assert json_contains_diff({"extra": [1]}, actual) == ["$.extra: expected a list, got true"]


def test_json_contains_does_not_confuse_booleans_with_numbers() -> None:
    assert json_contains_diff({"flag": 1}, {"flag": True}) == ["$.flag: expected 1, got true"]
    assert json_contains_diff({"n": 1}, {"n": 1.0}) == []
    assert json_contains_diff({"s": "1"}, {"s": 1}) == ['$.s: expected "1", got 1']


def test_json_equals_gives_a_unified_diff_of_sorted_json() -> None:
    assert json_equals_diff({"b": 1, "a": [1, 2]}, {"a": [1, 2], "b": 1}) == []
    diff = json_equals_diff({"a": 1, "b": 2}, {"a": 1, "b": 3, "c": 4})
    assert diff[:2] == ["--- expected", "+++ actual"]
    assert '-  "b": 2' in diff and '+  "b": 3,' in diff and '+  "c": 4' in diff


# -- passing and failing tests -------------------------------------------------------------------------
def test_the_order_flow_tests_pass() -> None:
    outcomes = run_paths([ORDER_FLOW / "tests"])
    assert [(o.name, o.passed) for o in outcomes] == [
        ("a confirmed sale maps to order.changed", True),
        ("an unknown state is a mapping error", True),
        ("a cancelled sale updates demand and leaves a note in the CRM", True),
        ("drafts are not routed", True),
    ]
    assert outcomes[2].location == Location(str(ORDER_FLOW / "tests" / "order_flow.test.yaml"), 18, 5)


def test_the_failing_fixture_fails_each_test_for_its_reason() -> None:
    outcomes = run_paths([FIXTURES / "order_flow_failing"])
    assert not any(o.passed for o in outcomes)
    details = {o.name: o.details for o in outcomes}
    assert details["wrong expectations show a path-by-path diff"] == [
        '$.status: expected "open", got "confirmed"',
        '$.customer.id: expected "C-42", got "C-0042"',
        '$.customer.vat: missing (expected "DE1")',
    ]
    assert '-  "text": "Order SO-9 was canceled"' in details["json_equals shows a unified diff"]
    assert details["a missing cross-reference is an unexpected error"][0].startswith("unexpected error: ")
    assert "no cross-reference for customer crm:42" in details["a missing cross-reference is an unexpected error"][0]
    assert details["the note only goes out for cancelled orders"] == [
        "deliveries[0]: expected a delivery to 'crm.add_note', got scm.update_demand"]
    assert details["a misspelt check is a broken test, not a pass"] == [
        "unknown expectation 'filtred'; did you mean 'filtered'?"]


def test_mapping_test_expectations(tmp_path: Path) -> None:
    (tmp_path / "input.yaml").write_text("order_id: Y\n")
    outcomes = _run(tmp_path, """
        tests:
          - name: valid against the schema
            routes: FLOW/routes.yaml
            mapping: FLOW/mappings/sale_to_order.yaml
            xref: {customer: {crm: {"42": C-1}}}
            input_file: FLOW/inputs/sale_confirmed.json
            expect: {valid: order.changed, json_contains: {customer: {id: C-1}}}
          - name: not valid against another schema
            routes: FLOW/routes.yaml
            mapping: FLOW/mappings/sale_to_order.yaml
            xref: {customer: {crm: {"42": C-1}}}
            input_file: FLOW/inputs/sale_confirmed.json
            expect: {valid: supplier.issue}
          - name: an error was expected
            mapping: FLOW/mappings/order_to_note.yaml
            input: {order_id: A}
            expect: {error: something}
          - name: the error text differs
            routes: FLOW/routes.yaml
            mapping: FLOW/mappings/sale_to_order.yaml
            input: {number: X, state: confirmed, party: {id: 1}}
            expect: {error: "value map"}
          - name: a YAML input file
            mapping: FLOW/mappings/order_to_note.yaml
            input_file: input.yaml
            expect: {json_equals: {order: Y, text: Order Y was cancelled}}
    """.replace("input_file: input.yaml", f"input_file: {tmp_path / 'input.yaml'}"))
    got = _summary(outcomes)
    assert got[0] == ("valid against the schema", True, [])
    assert got[1][1] is False and got[1][2][0].startswith("does not match schema 'supplier.issue'")
    assert got[2] == ("an error was expected", False, [
        "expected an error containing 'something', but the mapping succeeded: "
        '{"order":"A","text":"Order A was cancelled"}'])
    assert got[3][1] is False
    assert got[3][2][0].startswith("expected an error containing 'value map', got: ")
    assert "no cross-reference for customer crm:1" in got[3][2][0]
    assert got[4] == ("a YAML input file", True, [])


def test_route_test_expectations(tmp_path: Path) -> None:
    outcomes = _run(tmp_path, """
        tests:
          - name: no deliveries expected, but some happened
            routes: FLOW/routes.yaml
            route: order-change-to-demand
            xref: {customer: {crm: {"42": C-1}}}
            input_file: FLOW/inputs/sale_confirmed.json
            expect: {no_deliveries: true}
          - name: the filter was expected to drop it
            routes: FLOW/routes.yaml
            route: order-change-to-demand
            xref: {customer: {crm: {"42": C-1}}}
            input_file: FLOW/inputs/sale_confirmed.json
            expect: {filtered: true}
          - name: the filter dropped it unexpectedly
            routes: FLOW/routes.yaml
            route: order-change-to-demand
            input: {state: draft}
            expect: {deliveries: [{target: scm.update_demand}]}
          - name: payload checks per target
            routes: FLOW/routes.yaml
            route: order-change-to-demand
            xref: {customer: {crm: {"42": C-1}}}
            event: {type: order.changed, key: K-1, data: {number: SO-5, state: cancel, revision: 1,
                    write_date: "2026-01-01T00:00:00Z", party: {id: 42}}}
            expect:
              deliveries:
                - {target: scm.update_demand, valid: order.changed, json_contains: {order_id: SO-5}}
                - {target: crm.add_note, json_equals: {order: SO-6, text: Order SO-5 was cancelled}}
          - name: an invalid route result can be expected
            routes: FLOW/routes.yaml
            route: order-change-to-demand
            input: {number: SO-7, state: confirmed, revision: 1, write_date: "2026-01-01T00:00:00Z", party: {id: 9}}
            xref: {customer: {crm: {"9": C-9}}}
            expect: {error: "no cross-reference"}
    """)
    got = _summary(outcomes)
    assert got[0] == ("no deliveries expected, but some happened", False,
                      ["expected no deliveries, got ['scm.update_demand']"])
    assert got[1] == ("the filter was expected to drop it", False, ["expected the filter to drop the event, it passed"])
    assert got[2] == ("the filter dropped it unexpectedly", False, ["the route's filter dropped the event"])
    assert got[3][1] is False
    assert got[3][2][:2] == ["crm.add_note: --- expected", "crm.add_note: +++ actual"]
    assert 'crm.add_note: -  "order": "SO-6",' in got[3][2]
    assert not any(line.startswith("scm.update_demand") for line in got[3][2])
    # the xref has C-9 for party 9, so the route succeeds and the expected error never comes
    assert got[4] == ("an invalid route result can be expected", False, [
        "expected an error containing 'no cross-reference', but the route produced 'dispatch'"])


def test_route_tests_find_routes_yaml_above_the_test_file() -> None:
    outcomes = run_file(ORDER_FLOW / "tests" / "order_flow.test.yaml")
    assert len(outcomes) == 4 and all(o.passed for o in outcomes)


# -- broken test files ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "where", "message"), [
    ("tests: {a: 1}\n", (1, 1), "a test file must have a 'tests:' list"),
    ("tests:\n  - name: x\n    mapping: m.yaml\n    expct: {}\n", (4, 5),
     "unknown test field 'expct'; did you mean 'expect'?"),
    ("tests:\n  - name: x\n    input: [1\n", (4, 1), "invalid YAML: "),
    ("tests:\n  - name: x\n  - name: x\n    name: y\n", (4, 5), "duplicate key 'name' (first defined at line 3)"),
])
def test_a_broken_file_is_one_failed_outcome_with_its_location(tmp_path: Path, text: str,
                                                               where: tuple[int, int], message: str) -> None:
    outcomes = _run(tmp_path, text)
    assert len(outcomes) == 1
    outcome = outcomes[0]
    assert (outcome.name, outcome.passed) == ("(file)", False)
    assert outcome.location == Location(str(tmp_path / "t.test.yaml"), *where)
    assert outcome.details[0].startswith(message)


def test_broken_tests_are_located_and_the_rest_still_run(tmp_path: Path) -> None:
    outcomes = _run(tmp_path, """
        tests:
          - name: no kind
            input: {a: 1}
          - name: no input
            mapping: FLOW/mappings/order_to_note.yaml
          - name: missing input file
            mapping: FLOW/mappings/order_to_note.yaml
            input_file: nothing.json
          - name: missing mapping
            mapping: nothing.yaml
            input: {}
          - name: unknown route
            routes: FLOW/routes.yaml
            route: order-change-to-demnd
            input: {}
          - name: misspelt delivery check
            routes: FLOW/routes.yaml
            route: order-change-to-demand
            input: {state: draft}
            expect: {deliveries: [{target: scm.update_demand, json_contain: {}}]}
          - name: route checks in a mapping test
            mapping: FLOW/mappings/order_to_note.yaml
            input: {order_id: Z}
            expect: {filtered: true}
          - name: still runs
            mapping: FLOW/mappings/order_to_note.yaml
            input: {order_id: Z}
            expect: {json_contains: {order: Z}}
    """)
    file = str(tmp_path / "t.test.yaml")
    got = [(o.name, o.passed, str(o.location), o.details) for o in outcomes]
    assert got[0] == ("no kind", False, f"{file}:2:5", ["a test needs 'mapping:' or 'route:'"])
    assert got[1] == ("no input", False, f"{file}:4:5", ["a test needs 'input', 'input_file' or 'event'"])
    assert got[2][:3] == ("missing input file", False, f"{file}:8:5")
    assert got[2][3][0].startswith("input_file 'nothing.json' not found (looked at ")
    # a problem in another file keeps that file's location in the message; the outcome points at the test
    assert got[3] == ("missing mapping", False, f"{file}:9:5", [f"{tmp_path / 'nothing.yaml'}: file not found"])
    assert got[4] == ("unknown route", False, f"{file}:14:5",
                      ["unknown route 'order-change-to-demnd'; did you mean 'order-change-to-demand'?"])
    assert got[5] == ("misspelt delivery check", False, f"{file}:20:55",
                      ["unknown delivery expectation 'json_contain'; did you mean 'json_contains'?"])
    assert got[6] == ("route checks in a mapping test", False, f"{file}:24:14",
                      ["expect.filtered only applies to route tests ('route:')"])
    assert got[7] == ("still runs", True, f"{file}:25:5", [])


def test_route_test_without_routes_yaml_anywhere(tmp_path: Path) -> None:
    outcomes = _run(tmp_path, "tests:\n  - name: r\n    route: x\n    input: {}\n")
    assert outcomes[0].passed is False
    assert outcomes[0].details[0].endswith("no routes.yaml found above the test file; name it with 'routes:'")


def test_discover_finds_test_files_recursively(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/one.test.yaml", "a/b/two.test.yml", "a/b/not-a-test.yaml", "three.test.yaml"):
        (tmp_path / name).write_text("tests: []\n")
    assert discover([tmp_path / "a", tmp_path / "three.test.yaml"]) == [
        tmp_path / "a" / "b" / "two.test.yml", tmp_path / "a" / "one.test.yaml", tmp_path / "three.test.yaml"]
    with pytest.raises(ConfigError, match="no such file or folder"):
        discover([tmp_path / "missing"])


def test_inline_inputs_are_plain_json_for_type_checked_functions(tmp_path: Path) -> None:
    # join() refused the YAML loader's located list subclass ("received: unknown") though JSON input worked
    (tmp_path / "m.yaml").write_text("fields:\n  street: \"join(', ', street)\"\n")
    (tmp_path / "t.test.yaml").write_text(
        "tests:\n  - name: join\n    mapping: m.yaml\n    input: {street: [a, b]}\n"
        "    expect: {json_equals: {street: 'a, b'}}\n")
    [result] = run_file(tmp_path / "t.test.yaml")
    assert result.passed, result.details
