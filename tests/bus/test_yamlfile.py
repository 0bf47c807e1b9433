"""Located, safe YAML loading: duplicate keys, object tags and syntax errors point at file:line:column."""

from __future__ import annotations

from pathlib import Path

import pytest

from bus.errors import ConfigError, Location
from bus.yamlfile import YamlList, YamlMap, load_yaml, load_yaml_text, locate


def _error(tmp_path: Path, text: str) -> ConfigError:
    file = tmp_path / "routes.yaml"
    file.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_yaml(file)
    return caught.value


def test_duplicate_key_is_rejected_at_the_second_occurrence(tmp_path: Path) -> None:
    error = _error(tmp_path, "systems:\n  crm: {adapter: stub}\n  scm: {adapter: stub}\n  crm: {adapter: http}\n")
    assert error.location == Location(str(tmp_path / "routes.yaml"), 4, 3)
    assert error.message == "duplicate key 'crm' (first defined at line 2)"


def test_duplicate_key_in_a_flow_mapping(tmp_path: Path) -> None:
    error = _error(tmp_path, "retry: {attempts: 3, attempts: 4}\n")
    assert (error.location.line, error.location.column) == (1, 22)  # type: ignore[union-attr]


def test_explicit_key_may_override_a_merged_one(tmp_path: Path) -> None:
    doc = load_yaml_text("base: &b {attempts: 3, backoff: fixed}\nroute:\n  <<: *b\n  attempts: 9\n")
    assert doc["route"] == {"attempts": 9, "backoff": "fixed"}
    assert doc["route"].key_locations["attempts"].line == 4


def test_a_key_written_twice_next_to_a_merge_is_still_a_duplicate() -> None:
    with pytest.raises(ConfigError, match=r"duplicate key 'attempts' \(first defined at line 4\)"):
        load_yaml_text("base: &b {attempts: 3}\nroute:\n  <<: *b\n  attempts: 9\n  attempts: 10\n")


@pytest.mark.parametrize(
    "tag", ["!!python/object:os.system {}", "!!python/name:os.system", "!!python/object/apply:os.system ['id']"])
def test_python_object_tags_are_refused(tmp_path: Path, tag: str) -> None:
    error = _error(tmp_path, f"name: ok\nevil: {tag}\n")
    assert error.location is not None and error.location.line == 2
    assert "could not determine a constructor" in error.message


def test_syntax_error_is_located(tmp_path: Path) -> None:
    error = _error(tmp_path, "routes:\n  - name: a\n    to: [scm.x\n  - name: b\n")
    assert error.message.startswith("invalid YAML: ")
    assert error.location is not None and error.location.line == 4
    assert str(error).startswith(f"{tmp_path / 'routes.yaml'}:4:")


def test_tab_indentation_is_a_located_syntax_error(tmp_path: Path) -> None:
    error = _error(tmp_path, "routes:\n\t- name: a\n")
    assert error.location is not None and error.location.line == 2
    assert "'\\t'" in error.message


def test_complex_keys_are_refused() -> None:
    with pytest.raises(ConfigError, match="mapping keys must be plain scalars"):
        load_yaml_text("? [a, b]\n: 1\n", "m.yaml")


def test_scalar_keys_become_strings() -> None:
    assert load_yaml_text("1: a\ntrue: b\n") == {"1": "a", "True": "b"}


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found") as caught:
        load_yaml(tmp_path / "nope.yaml")
    assert caught.value.location == Location(str(tmp_path / "nope.yaml"))
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ConfigError, match="cannot read file"):
        load_yaml(latin)


def test_locations_are_recorded_for_keys_and_items() -> None:
    doc = load_yaml_text("routes:\n  - name: a\n    to:\n      - scm.update\n      - operation: crm.note\n", "r.yaml")
    assert isinstance(doc, YamlMap) and isinstance(doc["routes"], YamlList)
    assert doc["routes"].item_locations[0] == Location("r.yaml", 2, 5)
    assert locate(doc, ["routes", 0, "to", 1, "operation"]) == Location("r.yaml", 5, 9)
    assert locate(doc, ["routes", 0, "to", 0]) == Location("r.yaml", 4, 9)


def test_locate_stops_at_the_deepest_known_node() -> None:
    doc = load_yaml_text("routes:\n  - name: a\n", "r.yaml")
    assert locate(doc, ["routes", 0, "retry", "attempts"]) == Location("r.yaml", 2, 5)
    assert locate(doc, ["routes", 5]) == Location("r.yaml", 1, 1)
    assert locate({"plain": 1}, ["plain"], Location("x")) == Location("x")


def test_empty_document_is_none() -> None:
    assert load_yaml_text("# only a comment\n") is None
