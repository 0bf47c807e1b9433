"""routes.yaml loading: schema errors at file:line:column, defaults, timing, durations, duplicate routes."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest

from bus.config import BatchTiming, RetryPolicy, load_config, parse_duration
from bus.errors import ConfigError, Location, UnknownNameError

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "routes" / "order_flow" / "routes.yaml"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "routes.yaml"
    path.write_text(dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def _error(tmp_path: Path, text: str) -> ConfigError:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    return caught.value


def _at(error: ConfigError) -> tuple[int | None, int | None]:
    assert error.location is not None
    return error.location.line, error.location.column


MINIMAL = """
    systems:
      crm: {adapter: stub}
    routes:
      - name: r1
        from: order.changed
        to: [crm.note]
"""


def test_minimal_file_gets_the_documented_defaults(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, MINIMAL), env={})
    route = config.route("r1")
    assert route.retry == RetryPolicy(attempts=5, backoff="exponential", initial_delay=0.2, max_delay=30.0,
                                      park=60.0, max_parks=20)
    assert (route.timing, route.mode, route.schedule, route.batch) == ("realtime", "live", None, None)
    assert [t.name for t in route.targets] == ["crm.note"]
    assert config.system("crm").settings == {}
    assert route.location == Location(str(tmp_path / "routes.yaml"), 4, 5)


def test_fixture_file_loads_with_every_kind_of_key() -> None:
    config = load_config(FIXTURE, env={})
    assert set(config.systems) == {"crm", "scm", "srm"}
    assert config.systems["srm"].rate_limit == (10, 1.0)
    assert config.systems["srm"].circuit_breaker == (5, 30.0)
    demand = config.route("order-change-to-demand")
    assert demand.retry == RetryPolicy(attempts=4, initial_delay=0.2, max_delay=10.0, park=60.0, max_parks=10)
    assert (demand.key, demand.sequence, demand.validate) == ("order_id", "revision", "order.changed")
    note = demand.targets[1]
    assert (note.name, note.when, note.map, dict(note.args)) == (
        "crm.add_note", "status == 'cancelled'", "mappings/order_to_note.yaml", {"visibility": "internal"})
    po = config.route("procurement-to-po")
    # a route's own retry keys override the defaults key by key; the rest is inherited
    assert po.retry == RetryPolicy(attempts=8, initial_delay=0.2, max_delay=300.0, park=60.0, max_parks=10)
    assert (po.mode, po.batch) == ("shadow", BatchTiming(size=50, window=30.0))
    assert po.targets[0].emit == "purchase_order.created"
    assert config.resolve("mappings/x.yaml") == FIXTURE.parent / "mappings" / "x.yaml"
    assert [r.name for r in config.routes_from("procurement.requested")] == ["procurement-to-po"]


def test_schedule_timing_and_defaults_for_mode_and_timing(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, """
        defaults: {mode: shadow, timing: {schedule: "*/15 * * * *"}}
        systems: {crm: {adapter: stub}}
        routes:
          - {name: a, from: x.y, to: [crm.op]}
          - {name: b, from: x.y, to: [crm.op], mode: live, timing: realtime}
    """), env={})
    a, b = config.routes
    assert (a.mode, a.schedule, a.timing) == ("shadow", "*/15 * * * *", "*/15 * * * *")
    assert (b.mode, b.schedule, b.timing) == ("live", None, "realtime")


def test_unknown_key_suggests_the_right_one_at_its_line(tmp_path: Path) -> None:
    error = _error(tmp_path, """
        systems:
          crm: {adapter: stub}
        routes:
          - name: r1
            from: order.changed
            to: [crm.note]
            tming: realtime
    """)
    assert _at(error) == (7, 5)
    assert "unknown field 'tming'; did you mean 'timing'?" in error.message


def test_unknown_top_level_key(tmp_path: Path) -> None:
    error = _error(tmp_path, "rotues: []\nroutes: []\n")
    assert _at(error) == (1, 1)
    assert "did you mean 'routes'?" in error.message


def test_wrong_type_points_at_the_value_key(tmp_path: Path) -> None:
    error = _error(tmp_path, """
        systems:
          crm: {adapter: stub}
        routes:
          - name: r1
            from: order.changed
            to: crm.note
    """)
    assert _at(error) == (6, 5)
    assert error.message == "routes/0/to: 'crm.note' is not of type 'array'"


def test_wrong_type_deep_in_retry(tmp_path: Path) -> None:
    error = _error(tmp_path, """
        routes:
          - name: r1
            from: order.changed
            to: [crm.note]
            retry:
              attempts: many
    """)
    assert _at(error) == (6, 7)
    assert "routes/0/retry/attempts" in error.message and "'integer'" in error.message


def test_missing_to(tmp_path: Path) -> None:
    error = _error(tmp_path, """
        systems:
          crm: {adapter: stub}
        routes:
          - name: r1
            from: order.changed
    """)
    assert _at(error) == (4, 5)
    assert error.message == "routes/0: 'to' is a required property"


def test_bad_target_form(tmp_path: Path) -> None:
    error = _error(tmp_path, """
        routes:
          - name: r1
            from: order.changed
            to:
              - crm.note
              - operation: crm.note
                emitt: x.y
    """)
    assert _at(error) == (7, 9)  # the misspelt key inside the target, not the route
    assert "unknown field 'emitt'; did you mean 'emit' or 'emit_map'?" in error.message


def test_target_without_a_dot_says_what_a_target_looks_like(tmp_path: Path) -> None:
    error = _error(tmp_path, """
        routes:
          - name: r1
            from: order.changed
            to: [crm.note, crmnote]
    """)
    assert _at(error) == (4, 20)
    assert error.message == ("routes/0/to/1: 'crmnote' is not a target; expected 'system.operation', "
                             "e.g. 'scm.update_demand'")


def test_badly_named_system_points_at_its_key(tmp_path: Path) -> None:
    error = _error(tmp_path, """
        systems:
          crm: {adapter: stub}
          Crm2: {adapter: stub}
        routes: []
    """)
    assert _at(error) == (3, 3)
    assert "'Crm2' is not a valid system name" in error.message


def test_the_first_problem_in_reading_order_is_reported(tmp_path: Path) -> None:
    error = _error(tmp_path, """
        systems:
          crm: {adapter: stub, setings: {}}
        routes:
          - {name: r1, from: a.b}
    """)
    assert _at(error) == (2, 24)
    assert "did you mean 'settings'?" in error.message


@pytest.mark.parametrize(("text", "word"), [
    ("{schedule: '* * * * *', batch: {size: 1}}", "timing"),
    ("{batch: {size: 0}}", "timing/batch/size: 0 is less than the minimum of 1"),
    ("weekly", "'weekly' is not a timing; expected 'realtime', {schedule: '<cron>'} or {batch:"),
])
def test_bad_timing_is_located(tmp_path: Path, text: str, word: str) -> None:
    error = _error(tmp_path, f"""
        routes:
          - name: r1
            from: order.changed
            to: [crm.note]
            timing: {text}
    """)
    assert _at(error)[0] == 5
    assert word in error.message


def test_bad_duration_is_located(tmp_path: Path) -> None:
    error = _error(tmp_path, """
        routes:
          - name: r1
            from: order.changed
            to: [crm.note]
            retry: {max_delay: 5 minutes}
    """)
    assert _at(error) == (5, 13)
    assert error.message == ("routes/0/retry/max_delay: '5 minutes' is not a duration; expected seconds or "
                             "e.g. '500ms', '30s', '5m', '2h', '1d'")


def test_duplicate_route_names(tmp_path: Path) -> None:
    error = _error(tmp_path, """
        routes:
          - name: r1
            from: a.b
            to: [crm.x]
          - name: r1
            from: c.d
            to: [crm.y]
    """)
    assert _at(error) == (5, 5)
    assert error.message == "duplicate route name 'r1' (first defined at line 2)"


def test_empty_file(tmp_path: Path) -> None:
    error = _error(tmp_path, "# nothing yet\n")
    assert _at(error) == (1, 1)
    assert "file is empty" in error.message


def test_settings_are_interpolated_after_the_structure_check(tmp_path: Path) -> None:
    path = _write(tmp_path, """
        systems:
          crm:
            adapter: stub
            settings: {result: "${CRM_RESULT:-none}", operations: ["${OP}"]}
        routes: []
    """)
    config = load_config(path, env={"OP": "add_note"})
    assert config.system("crm").settings == {"result": "none", "operations": ["add_note"]}
    with pytest.raises(ConfigError, match=r"routes.yaml:4:60: environment variable \$\{OP\} is not set"):
        load_config(path, env={})


def test_unknown_route_and_system_lookups_suggest(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, MINIMAL), env={})
    with pytest.raises(UnknownNameError, match="unknown route 'r2'; known: r1"):
        config.route("r2")
    with pytest.raises(UnknownNameError, match="did you mean 'crm'"):
        config.system("crn")


@pytest.mark.parametrize(("value", "seconds"), [
    (5, 5.0), (0.5, 0.5), ("500ms", 0.5), ("30s", 30.0), ("5m", 300.0), ("1.5h", 5400.0), ("1d", 86400.0),
    (" 2m ", 120.0),
])
def test_parse_duration(value: float | str, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["5 minutes", "5", "-1s", "1w", "", "m5"])
def test_parse_duration_rejects_other_text(value: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(value)
