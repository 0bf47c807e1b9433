"""Route steps without I/O: filter, map, validate, key/sequence, per-target when and maps, follow-up events."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from textwrap import dedent

import orjson
import pytest

from bus.config import load_config
from bus.envelope import Event
from bus.errors import ConfigError, MappingError, SchemaViolation, UnknownNameError
from bus.pipeline import Pipeline
from bus.schemas import SchemaRegistry
from bus.xref import MemoryXref

ROUTES = """
systems:
  scm: {adapter: stub}
  crm: {adapter: stub}
routes:
  - name: sale-to-order
    from: crm.sale
    filter: "state != 'draft'"
    map: mappings/sale.yaml
    validate: thing.changed
    key: id
    sequence: rev
    to:
      - scm.update
      - operation: crm.note
        when: "status == 'cancelled'"
        map: mappings/note.yaml
        emit: note.added
        emit_map: mappings/note_result.yaml
  - name: raw-copy
    from: crm.sale
    type: sale.copied
    to: [scm.archive]
  - name: loose
    from: loose.thing
    key: "missing_function(x)"
    to: [scm.archive]
"""

SALE_MAPPING = """
fields:
  id: number
  rev: revision
  status: "value_map('status', state)"
  customer: "xref('customer', 'crm', party)"
value_maps:
  status: {confirmed: confirmed, cancel: cancelled, weird: 42}
"""

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://example.test/thing.changed.json",
    "type": "object",
    "required": ["id", "status"],
    "properties": {"id": {"type": "string"}, "status": {"enum": ["confirmed", "cancelled"]}},
}


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dedent(text).lstrip("\n"), encoding="utf-8")


@pytest.fixture
def pipeline(tmp_path: Path) -> Pipeline:
    _write(tmp_path / "routes.yaml", ROUTES.replace("key: \"missing_function(x)\"", "key: id"))
    _write(tmp_path / "mappings" / "sale.yaml", SALE_MAPPING)
    _write(tmp_path / "mappings" / "note.yaml", "fields:\n  order: id\n  text: \"concat('cancelled ', id)\"\n")
    _write(tmp_path / "mappings" / "note_result.yaml", "fields:\n  note_id: reference\n  order: order\n")
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "thing.changed.json").write_bytes(orjson.dumps(SCHEMA))
    xref = MemoryXref.from_dict({"customer": {"crm": {"7": "C-7"}}})
    return Pipeline(load_config(tmp_path / "routes.yaml", env={}), schemas=SchemaRegistry(tmp_path / "schemas"),
                    xref=xref)


def _sale(state: str = "confirmed", **extra: object) -> Event:
    data = {"number": "SO-1", "revision": 3, "state": state, "party": 7, **extra}
    return Event(type="crm.sale", source="crm", data=data)


def test_a_passing_event_is_mapped_validated_keyed_and_dispatched(pipeline: Pipeline) -> None:
    event = _sale()
    results = pipeline.process(event)
    assert [(r.route.name, r.status) for r in results] == [("sale-to-order", "dispatch"), ("raw-copy", "dispatch")]
    mapped = results[0].event
    assert mapped is not None
    assert mapped.data == {"id": "SO-1", "rev": 3, "status": "confirmed", "customer": "C-7"}
    assert (mapped.type, mapped.key, mapped.sequence) == ("thing.changed", "SO-1", 3)
    assert mapped.dataschema == "https://example.test/thing.changed.json"
    # the mapped event is the same event in canonical form: same id and correlation, not a new one
    assert (mapped.id, mapped.correlationid, mapped.source) == (event.id, event.correlationid, "crm")
    assert [d.target_name for d in results[0].dispatches] == ["scm.update"]
    assert results[0].skipped_targets == ["crm.note"]
    assert results[0].dispatches[0].payload == mapped.data
    assert results[0].dispatches[0].source is event


def test_type_overrides_the_outgoing_event_type(pipeline: Pipeline) -> None:
    copy = pipeline.process(_sale(), route="raw-copy")[0]
    assert copy.event is not None and copy.event.type == "sale.copied"
    assert copy.event.data == _sale().data and copy.event.dataschema is None


def test_filter_drops_the_event_for_that_route_only(pipeline: Pipeline) -> None:
    results = pipeline.process(_sale("draft"))
    assert [(r.route.name, r.status) for r in results] == [("sale-to-order", "filtered"), ("raw-copy", "dispatch")]
    assert results[0].dispatches == []
    assert [d.target_name for d in results[1].dispatches] == ["scm.archive"]


def test_schema_violation_makes_the_route_result_invalid(pipeline: Pipeline) -> None:
    result = pipeline.process(_sale("weird"), route="sale-to-order")[0]
    assert (result.status, result.dispatches) == ("invalid", [])
    assert isinstance(result.error, SchemaViolation)
    assert result.error.schema == "thing.changed"
    assert result.error.errors[0][0] == "$.status"


def test_mapping_failure_makes_the_route_result_invalid(pipeline: Pipeline) -> None:
    result = pipeline.process(_sale(party=99), route="sale-to-order")[0]
    assert result.status == "invalid"
    assert isinstance(result.error, MappingError)
    assert result.error.field == "customer"
    assert "no cross-reference for customer crm:99" in str(result.error)


def test_a_non_integer_sequence_is_invalid(pipeline: Pipeline) -> None:
    result = pipeline.process(_sale(revision="v3"), route="sale-to-order")[0]
    assert result.status == "invalid"
    assert "sequence must be an integer, got 'v3'" in str(result.error)


def test_when_and_target_mapping(pipeline: Pipeline) -> None:
    result = pipeline.process(_sale("cancel"), route="sale-to-order")[0]
    assert result.skipped_targets == []
    by_target = {d.target_name: d for d in result.dispatches}
    assert by_target["scm.update"].payload["status"] == "cancelled"
    assert by_target["crm.note"].payload == {"order": "SO-1", "text": "cancelled SO-1"}
    # the target mapping shapes the payload only: the event every target sees stays the canonical one
    assert by_target["crm.note"].event is by_target["scm.update"].event


def test_process_can_be_limited_to_one_target(pipeline: Pipeline) -> None:
    result = pipeline.process(_sale("cancel"), route="sale-to-order", target="crm.note")[0]
    assert [d.target_name for d in result.dispatches] == ["crm.note"]


def test_idempotency_keys_are_stable_per_event_route_and_target(pipeline: Pipeline) -> None:
    event = _sale("cancel")
    first = {d.target_name: d.idempotency_key for d in pipeline.process(event)[0].dispatches}
    redelivered = Event.decode(event.encode())
    again = {d.target_name: d.idempotency_key for d in pipeline.process(redelivered)[0].dispatches}
    assert first == again
    assert first["scm.update"] == f"{event.id}:sale-to-order:scm.update"  # event x route x target
    assert len(set(first.values())) == 2
    other = {d.target_name: d.idempotency_key for d in pipeline.process(_sale("cancel"))[0].dispatches}
    assert set(other.values()).isdisjoint(first.values())


def test_follow_up_event_carries_correlation_and_causation(pipeline: Pipeline) -> None:
    event = _sale("cancel")
    dispatches = {d.target_name: d for d in pipeline.process(event)[0].dispatches}
    note = dispatches["crm.note"]
    follow = pipeline.follow_up(note, {"reference": "N-5", "order": "SO-1", "noise": True})
    assert follow is not None
    assert (follow.type, follow.source) == ("note.added", "ironbus/crm")
    assert follow.data == {"note_id": "N-5", "order": "SO-1"}
    assert (follow.correlationid, follow.causationid, follow.key) == (event.correlationid, event.id, "SO-1")
    assert follow.id != event.id
    assert pipeline.follow_up(dispatches["scm.update"], {"anything": 1}) is None


def _buying(tmp_path: Path, emit_when: str) -> Path:
    """A route whose target emits purchase_order.created under ``emit_when``."""
    _write(tmp_path / "routes.yaml", f"""
        systems:
          srm: {{adapter: stub}}
        routes:
          - name: buy
            from: need.raised
            to:
              - operation: srm.create_purchase
                emit: purchase_order.created
                emit_when: "{emit_when}"
        """)
    return tmp_path / "routes.yaml"


def test_emit_when_lets_a_follow_up_out_only_when_the_result_says_so(tmp_path: Path) -> None:
    # an operation that found its record already there (created: false) reports nothing new downstream
    pipeline = Pipeline(load_config(_buying(tmp_path, "created && state != 'cancelled'"), env={}))
    [dispatch] = pipeline.process(Event(type="need.raised", source="scm", data={"id": 1}))[0].dispatches
    made = pipeline.follow_up(dispatch, {"id": 7, "created": True, "state": "processing"})
    assert made is not None and made.data == {"id": 7, "created": True, "state": "processing"}
    assert pipeline.follow_up(dispatch, {"id": 7, "created": False, "state": "processing"}) is None
    assert pipeline.follow_up(dispatch, {"id": 7, "created": True, "state": "cancelled"}) is None
    assert pipeline.follow_up(dispatch, {"id": 7}) is None


def test_a_broken_emit_when_is_a_config_error_naming_the_target(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="route 'buy' target srm.create_purchase emit_when"):
        Pipeline(load_config(_buying(tmp_path, "created &&"), env={}))


def test_follow_up_of_a_follow_up_keeps_the_root_correlation(pipeline: Pipeline) -> None:
    root = _sale("cancel")
    note = next(d for d in pipeline.process(root)[0].dispatches if d.target_name == "crm.note")
    first = pipeline.follow_up(note, {"reference": "N-1", "order": "SO-1"})
    assert first is not None
    second = first.caused("note.seen", "ironbus/test", {})
    assert (second.correlationid, second.causationid) == (root.id, first.id)


def test_assign_key_fills_the_ordering_key_before_any_worker_runs(pipeline: Pipeline) -> None:
    keyed = pipeline.assign_key(_sale())
    assert keyed.key == "SO-1"
    assert pipeline.assign_key(_sale().with_(key="given")).key == "given"
    unmappable = _sale(party=99)  # the mapping fails: not an error here, the worker dead-letters it later
    assert pipeline.assign_key(unmappable).key is None
    assert pipeline.assign_key(Event(type="nobody.listens", source="x", data={})).key is None


def test_routes_for_and_unknown_route(pipeline: Pipeline) -> None:
    assert [r.name for r in pipeline.routes_for("crm.sale")] == ["sale-to-order", "raw-copy"]
    assert pipeline.routes_for("nothing.here") == []
    assert pipeline.process(Event(type="nothing.here", source="x", data={})) == []
    with pytest.raises(UnknownNameError, match="did you mean 'raw-copy'"):
        pipeline.routes_for("crm.sale", route="raw-cpy")


def test_a_route_that_does_not_compile_stops_the_pipeline_with_its_location(tmp_path: Path) -> None:
    _write(tmp_path / "routes.yaml", ROUTES)
    _write(tmp_path / "mappings" / "sale.yaml", SALE_MAPPING)
    _write(tmp_path / "mappings" / "note.yaml", "fields:\n  order: id\n")
    _write(tmp_path / "mappings" / "note_result.yaml", "fields:\n  note_id: reference\n")
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "thing.changed.json").write_bytes(orjson.dumps(SCHEMA))
    config = load_config(tmp_path / "routes.yaml", env={})
    schemas = SchemaRegistry(tmp_path / "schemas")
    with pytest.raises(ConfigError) as caught:
        Pipeline(config, schemas=schemas)
    assert str(caught.value) == (f"{tmp_path / 'routes.yaml'}:25:5: route 'loose' key: expression "
                                 "'missing_function(x)' does not compile: unknown function missing_function()")
    problems = Pipeline(replace(config, routes=()), schemas=schemas).check_route(config.route("loose"))
    assert [str(p) for p in problems] == [str(caught.value)]
