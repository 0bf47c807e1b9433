"""The error tree: what each error promises its caller (one-line text with a location, did-you-mean)."""

from __future__ import annotations

import pytest

from bus.errors import (
    ConfigError,
    DeliveryError,
    IronbusError,
    Location,
    MappingError,
    PermanentError,
    SchemaViolation,
    TransientError,
    UnknownNameError,
    closest,
)


@pytest.mark.parametrize(
    ("location", "text"),
    [
        (Location("routes.yaml"), "routes.yaml"),
        (Location("routes.yaml", 7), "routes.yaml:7"),
        (Location("routes.yaml", 7, 3), "routes.yaml:7:3"),
    ],
)
def test_location_prints_as_much_as_it_knows(location: Location, text: str) -> None:
    assert str(location) == text


def test_config_error_is_one_line_prefixed_with_its_location() -> None:
    error = ConfigError("expected a list", Location("routes.yaml", 4, 9))
    assert str(error) == "routes.yaml:4:9: expected a list"
    assert error.message == "expected a list"
    assert error.location == Location("routes.yaml", 4, 9)
    assert str(ConfigError("no location")) == "no location"


def test_unknown_name_suggests_close_names() -> None:
    error = UnknownNameError("adapter", "hubspto", ["hubspot", "salesforce", "stub"], Location("r.yaml", 3, 14))
    assert error.suggestions == ["hubspot"]
    assert str(error) == "r.yaml:3:14: unknown adapter 'hubspto'; did you mean 'hubspot'?"
    assert isinstance(error, ConfigError)


def test_unknown_name_lists_a_short_known_set_when_nothing_is_close() -> None:
    error = UnknownNameError("schema", "zzz", ["order.changed", "supplier.issue"])
    assert error.suggestions == []
    assert error.message == "unknown schema 'zzz'; known: order.changed, supplier.issue"


def test_unknown_name_stays_short_when_the_known_set_is_long() -> None:
    known = [f"name{i:02d}" for i in range(20)]
    assert UnknownNameError("field", "completely-different", known).message == "unknown field 'completely-different'"


def test_closest_returns_at_most_three_candidates_best_first() -> None:
    found = closest("route", ["routing", "xyz", "routes", "router", "routed"])
    assert len(found) == 3 and "xyz" not in found and "routing" not in found
    assert closest("order", ["orders", "border", "ordering"])[0] == "orders"
    assert closest("abc", []) == []


def test_delivery_errors_split_into_transient_and_permanent() -> None:
    transient = TransientError("HTTP 429", retry_after=12.5)
    assert isinstance(transient, DeliveryError) and isinstance(transient, IronbusError)
    assert transient.retry_after == 12.5
    assert TransientError("timeout").retry_after is None
    assert not isinstance(PermanentError("HTTP 400"), TransientError)


def test_mapping_error_names_file_and_field() -> None:
    error = MappingError("mappings/sale.yaml", "customer.id", "no cross-reference for customer crm:42")
    assert str(error) == "mappings/sale.yaml: field 'customer.id': no cross-reference for customer crm:42"


def test_schema_violation_shows_the_first_three_errors_and_counts_the_rest() -> None:
    errors = [("$.a", "missing"), ("", "not an object"), ("$.c", "too long"), ("$.d", "bad"), ("$.e", "bad")]
    text = str(SchemaViolation("order.changed", errors))
    assert text == "does not match schema 'order.changed': $.a: missing; $: not an object; $.c: too long (+2 more)"
    assert SchemaViolation("x", errors[:1]).errors == [("$.a", "missing")]
