"""The canonical schemas and the registry that validates documents against them."""

from __future__ import annotations

import copy
import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from bus.errors import ConfigError, SchemaViolation, UnknownNameError
from bus.schemas import SCHEMA_DIR, SchemaRegistry, default_registry, json_path

DOCS = Path(__file__).resolve().parents[2] / "docs" / "schemas.md"

NAMES = [
    "customer", "customer.notification", "material", "order.change.confirmed", "order.change.refused", "order.changed",
    "procurement.requested", "purchase_order.changed", "purchase_order.created", "shipment.notice", "supplier",
    "supplier.issue",
]

EXAMPLES: dict[str, dict[str, Any]] = {
    "customer": {
        "customer_id": "CUST-0001", "source_system": "crm", "changed_at": "2024-05-02T09:30:00Z", "revision": 7,
        "system_ids": {"crm": "512", "scm": "C-77"}, "name": "Zinc GmbH", "email": "orders@zinc.example",
        "language": "de", "vat_id": "DE123456789",
        "addresses": [{"kind": "billing", "name": "Zinc GmbH", "street": ["An den Eichen 18"], "postal_code": "42699",
                       "city": "Solingen", "country": "DE"}],
        "active": True,
    },
    "supplier": {
        "supplier_id": "SUP-0042", "source_system": "srm", "changed_at": "2024-05-02T09:30:00+02:00",
        "name": "Bolt & Nut Inc.", "duns": "802661173", "currency": "USD", "lead_time_days": 10,
        "system_ids": {"srm": "17"},
    },
    "material": {
        "material_id": "MAT-261950", "source_system": "scm", "changed_at": "2024-05-02T09:30:00Z",
        "code": "261950", "name": "Nut M8", "kind": "goods", "unit": "EA", "gtin": "4006381333931",
        "list_price": {"amount": "0.50", "currency": "EUR"},
        "suppliers": [{"supplier": {"id": "SUP-0042"}, "supplier_part_id": "261950", "lead_time_days": 10,
                       "price": {"amount": "0.31", "currency": "USD"}}],
    },
    "order.changed": {
        "order_id": "SO-4000043", "source_system": "crm", "changed_at": "2005-10-24T15:36:52Z", "revision": 3,
        "change_kind": "updated", "status": "confirmed",
        "customer": {"id": "CUST-0001", "system_ids": {"crm": "4502"}, "name": "Zinc GmbH"},
        "customer_reference": "16306", "order_date": "2005-10-24", "requested_date": "2005-10-28",
        "currency": "EUR", "totals": {"net": "2656.24"},
        "lines": [{"line_no": 10, "material_id": "MAT-SETVMIN0", "description": "MINIDAT OEDA 80 HH R22",
                   "quantity": 1, "unit": "PCE", "requested_date": "2005-10-28",
                   "price": {"amount": "2656.24", "currency": "EUR"}}],
    },
    "procurement.requested": {
        "request_id": "PR-1001", "source_system": "scm", "changed_at": "2024-05-02T10:00:00Z", "status": "requested",
        "material": {"id": "MAT-261950", "name": "Nut M8"}, "quantity": 400, "unit": "EA", "needed_by": "2024-05-20",
        "supplier": {"id": "SUP-0042"}, "origin_order_ids": ["SO-4000043"],
    },
    "purchase_order.created": {
        "po_id": "PO-6112", "source_system": "srm", "changed_at": "2024-05-02T10:05:00Z", "status": "sent",
        "supplier": {"id": "SUP-0042"}, "order_date": "2024-05-02", "currency": "USD",
        "lines": [{"line_no": 1, "material_id": "MAT-261950", "supplier_part_id": "261950", "quantity": 400,
                   "unit": "EA", "requested_date": "2024-05-20", "price": {"amount": "0.31", "currency": "USD"},
                   "request_ids": ["PR-1001"]}],
        "request_ids": ["PR-1001"], "origin_order_ids": ["SO-4000043"],
    },
    "purchase_order.changed": {
        "po_id": "PO-6112", "source_system": "srm", "changed_at": "2024-05-03T08:00:00Z", "revision": 2,
        "change_kind": "updated", "status": "confirmed", "supplier": {"id": "SUP-0042"},
        "lines": [{"line_no": 1, "material_id": "MAT-261950", "quantity": 400, "unit": "EA",
                   "confirmed_quantity": 400, "confirmed_date": "2024-05-18"}],
    },
    "supplier.issue": {
        "issue_id": "CONF-269765-1", "source_system": "srm", "changed_at": "2021-02-23T15:15:50Z",
        "po_id": "PO-269765", "supplier": {"id": "SUP-0042"}, "kind": "backordered",
        "lines": [{"line_no": 1, "supplier_part_id": "261950", "unit": "EA", "old_quantity": 10, "new_quantity": 6,
                   "old_date": "2021-03-01"}],
        "reason": "4 pieces backordered",
    },
    "shipment.notice": {
        "notice_id": "BOLT/SH-6112", "source_system": "suppliers_x12", "changed_at": "2024-05-05T08:00:00Z",
        "operation": "new", "supplier": {"id": "S-BOLT"}, "shipment_id": "SH-6112", "shipped_date": "2024-05-05",
        "expected_date": "2024-05-09", "carrier": "DHL", "tracking_id": "JD014600003828", "po_ids": ["PO-6112"],
        "lines": [{"po_id": "PO-6112", "line_no": 1, "supplier_part_id": "BOLT-100", "quantity": 120, "unit": "C62"}],
    },
    "order.change.confirmed": {
        "confirmation_id": "SO-4000043/PO-6112", "source_system": "srm", "changed_at": "2024-05-03T08:00:00Z",
        "order_id": "SO-4000043", "customer": {"id": "CUST-0001"}, "result": "confirmed", "po_ids": ["PO-6112"],
        "promised_date": "2024-05-21",
        "lines": [{"line_no": 10, "material_id": "MAT-261950", "quantity": 400, "unit": "EA",
                   "promised_date": "2024-05-21"}],
    },
    "order.change.refused": {
        "refusal_id": "SO-4000043@srm@PR-7@2024-05-04T10:00:00Z", "source_system": "srm",
        "changed_at": "2024-05-04T10:00:00Z", "order_id": "SO-4000043", "customer": {"id": "CUST-0001"},
        "lines": [{"material_id": "MAT-261950", "wanted": 250, "kept": 400, "unit": "EA",
                   "reason": "already_received"}],
        "over_procured": 150, "note": "400 already received",
    },
    "customer.notification": {
        "notification_id": "N-SO-4000043-1", "source_system": "crm", "changed_at": "2024-05-03T08:01:00Z",
        "kind": "order_delayed", "order_id": "SO-4000043",
        "customer": {"id": "CUST-0001", "name": "Zinc GmbH"}, "channels": {"email": ["orders@zinc.example"]},
        "language": "en", "subject": "Your order SO-4000043 will arrive later",
        "body": "Dear customer, your order SO-4000043 will now arrive on 2024-05-28.", "promised_date": "2024-05-28",
    },
}


def _set(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``doc`` with the dotted ``path`` (digits index lists) set to ``value``; ``...`` deletes it."""
    out = copy.deepcopy(doc)
    node: Any = out
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node[part]
    last: Any = int(parts[-1]) if parts[-1].isdigit() else parts[-1]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return out


@pytest.fixture(scope="module")
def registry() -> SchemaRegistry:
    return default_registry()


# -- the schema files themselves ---------------------------------------------------------------------------
def _schema_files() -> list[Path]:
    return sorted(p for p in SCHEMA_DIR.glob("*.json") if p.name != "routes.schema.json")


@pytest.mark.parametrize("path", _schema_files(), ids=lambda p: p.name)
def test_schema_file_is_valid_2020_12_with_identity(path: Path) -> None:
    schema = json.loads(path.read_text(encoding="utf-8"))
    # A second, independent implementation checks the meta-schema (the registry already used jsonschema_rs).
    jsonschema.Draft202012Validator.check_schema(schema)
    name = path.name.removesuffix(".json")
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"https://ironbus.dev/schemas/{name}/v1.json"
    assert schema["x-version"] == 1
    assert schema["title"] and schema["description"]


def _properties_without_description(node: Any, where: str) -> list[str]:
    missing: list[str] = []
    if isinstance(node, dict):
        for key, sub in (node.get("properties") or {}).items():
            if not isinstance(sub, dict) or not sub.get("description"):
                missing.append(f"{where}.properties.{key}")
        for key, sub in node.items():
            missing += _properties_without_description(sub, f"{where}.{key}")
    elif isinstance(node, list):
        for i, sub in enumerate(node):
            missing += _properties_without_description(sub, f"{where}[{i}]")
    return missing


@pytest.mark.parametrize("path", _schema_files(), ids=lambda p: p.name)
def test_every_property_has_a_description(path: Path) -> None:
    schema = json.loads(path.read_text(encoding="utf-8"))
    assert _properties_without_description(schema, "$") == []


@pytest.mark.parametrize("path", _schema_files(), ids=lambda p: p.name)
def test_refs_point_at_common_by_id_or_inside_the_file(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    refs = re.findall(r'"\$ref":\s*"([^"]+)"', text)
    assert refs or path.name == "common.json"
    for ref in refs:
        assert ref.startswith(("#/$defs/", "https://ironbus.dev/schemas/common/v1.json#/$defs/")), ref


# -- registry ----------------------------------------------------------------------------------------------
def test_names_are_the_canonical_documents_only(registry: SchemaRegistry) -> None:
    assert registry.names() == NAMES


def test_schema_id_is_the_files_id(registry: SchemaRegistry) -> None:
    assert registry.schema_id("order.changed") == "https://ironbus.dev/schemas/order.changed/v1.json"
    assert registry.schema("supplier.issue")["properties"]["kind"]["enum"] == [
        "rejected", "backordered", "delayed", "partial"]


def test_unknown_name_suggests_the_closest(registry: SchemaRegistry) -> None:
    with pytest.raises(UnknownNameError) as err:
        registry.validator("order.change")
    assert "order.changed" in err.value.suggestions
    with pytest.raises(UnknownNameError):
        registry.schema_id("routes.schema")


def test_validator_is_compiled_once(registry: SchemaRegistry) -> None:
    assert registry.validator("material") is registry.validator("material")


def test_concurrent_first_use_compiles_one_validator() -> None:
    registry = SchemaRegistry()
    barrier = threading.Barrier(8)

    def first_use() -> object:
        barrier.wait(timeout=10)
        return registry.validator("supplier.issue")

    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(lambda _: first_use(), range(8)))
    assert all(v is got[0] for v in got)


def test_default_registry_is_shared() -> None:
    assert default_registry() is default_registry()


@pytest.mark.parametrize("name", NAMES)
def test_example_document_is_valid(registry: SchemaRegistry, name: str) -> None:
    registry.validate(name, EXAMPLES[name])


def test_every_schema_has_an_example() -> None:
    assert sorted(EXAMPLES) == NAMES


# (schema, dotted path to change, new value or ... to delete, JSONPath the error must name)
BAD = [
    ("customer", "customer_id", ..., "$"),
    ("customer", "email", "not-an-address", "$.email"),
    ("customer", "addresses.0.country", "Germany", "$.addresses[0].country"),
    ("customer", "addresses.0.zip", "42699", "$.addresses[0]"),
    ("supplier", "duns", "80266117", "$.duns"),
    ("supplier", "changed_at", "2024-05-02 09:30", "$.changed_at"),
    ("material", "list_price.amount", 0.5, "$.list_price.amount"),
    ("material", "kind", "software", "$.kind"),
    ("material", "suppliers.0.supplier", {"name": "no id"}, "$.suppliers[0].supplier"),
    ("order.changed", "status", "closedwon", "$.status"),
    ("order.changed", "change_kind", ..., "$"),
    ("order.changed", "customer.id", 4502, "$.customer.id"),
    ("order.changed", "lines.0.quantity", "1.000", "$.lines[0].quantity"),
    ("order.changed", "lines.0.quantity", -1, "$.lines[0].quantity"),
    ("order.changed", "lines.0.line_no", "10", "$.lines[0].line_no"),
    ("order.changed", "lines.0.requested_date", "/Date(1130457600000)/", "$.lines[0].requested_date"),
    ("order.changed", "lines.0.price.amount", "2.656,24", "$.lines[0].price.amount"),
    ("order.changed", "lines.0.price.currency", "eur", "$.lines[0].price.currency"),
    ("order.changed", "totals.net", 2656.24, "$.totals.net"),
    ("order.changed", "revision", 1.5, "$.revision"),
    ("order.changed", "source_system", "CRM", "$.source_system"),
    ("procurement.requested", "needed_by", "2024-02-30", "$.needed_by"),
    ("procurement.requested", "origin_order_ids", ["SO-1", "SO-1"], "$.origin_order_ids"),
    ("procurement.requested", "extra", 1, "$"),
    ("purchase_order.created", "lines.0.confirmed_quantity", "400", "$.lines[0].confirmed_quantity"),
    ("purchase_order.created", "status", "approved", "$.status"),
    ("purchase_order.changed", "change_kind", "created", "$.change_kind"),
    ("supplier.issue", "kind", "accept", "$.kind"),
    ("supplier.issue", "lines.0.new_date", "2021-13-01", "$.lines[0].new_date"),
    ("supplier.issue", "lines.0.line_no", ..., "$.lines[0]"),
    ("order.change.confirmed", "result", "ok", "$.result"),
    ("customer.notification", "channels", {}, "$.channels"),
    ("customer.notification", "channels.email.0", "nobody", "$.channels.email[0]"),
    ("customer.notification", "body", "", "$.body"),
]


@pytest.mark.parametrize(("name", "path", "value", "where"), BAD, ids=[f"{b[0]}:{b[1]}" for b in BAD])
def test_bad_document_names_the_field(registry: SchemaRegistry, name: str, path: str, value: Any,
                                      where: str) -> None:
    doc = _set(EXAMPLES[name], path, value)
    with pytest.raises(SchemaViolation) as err:
        registry.validate(name, doc)
    assert err.value.schema == name
    assert where in [p for p, _ in err.value.errors], err.value.errors


def test_open_top_level_accepts_vendor_fields_but_nested_objects_stay_strict(registry: SchemaRegistry) -> None:
    registry.validate("order.changed", {**EXAMPLES["order.changed"], "hs_pipeline": "default"})
    with pytest.raises(SchemaViolation):
        registry.validate("order.changed", _set(EXAMPLES["order.changed"], "customer.vip", True))


def test_violation_lists_every_error_sorted_by_path(registry: SchemaRegistry) -> None:
    doc = _set(_set(EXAMPLES["order.changed"], "lines.0.unit", ""), "currency", "euro")
    with pytest.raises(SchemaViolation) as err:
        registry.validate("order.changed", doc)
    paths = [p for p, _ in err.value.errors]
    assert paths == sorted(paths) and {"$.currency", "$.lines[0].unit"} <= set(paths)
    assert "order.changed" in str(err.value) and "$.currency" in str(err.value)


def test_non_object_document_is_a_violation(registry: SchemaRegistry) -> None:
    with pytest.raises(SchemaViolation) as err:
        registry.validate("customer", ["not", "an", "object"])
    assert err.value.errors[0][0] == "$"


def test_json_path_quotes_keys_that_are_not_identifiers() -> None:
    assert json_path(["lines", 0, "unit"]) == "$.lines[0].unit"
    assert json_path(["x-y", 2]) == "$['x-y'][2]"
    assert json_path([]) == "$"


# -- broken schema directories ---------------------------------------------------------------------------
def _dir_with(tmp_path: Path, files: dict[str, str]) -> Path:
    for name in ("common.json",):
        (tmp_path / name).write_text((SCHEMA_DIR / name).read_text(encoding="utf-8"), encoding="utf-8")
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    return tmp_path


def test_malformed_json_names_file_line_and_column(tmp_path: Path) -> None:
    _dir_with(tmp_path, {"thing.json": '{\n  "$id": "https://x.example/thing.json",\n  "type": "object",,\n}\n'})
    with pytest.raises(ConfigError) as err:
        SchemaRegistry(tmp_path)
    assert err.value.location is not None
    assert err.value.location.file.endswith("thing.json")
    assert err.value.location.line == 3


def test_invalid_schema_names_the_file(tmp_path: Path) -> None:
    _dir_with(tmp_path, {"thing.json": '{"$id": "https://x.example/thing.json", "type": 5}'})
    with pytest.raises(ConfigError) as err:
        SchemaRegistry(tmp_path)
    assert "thing.json" in str(err.value) and "JSON Schema" in str(err.value)


def test_schema_without_id_is_refused(tmp_path: Path) -> None:
    _dir_with(tmp_path, {"thing.json": '{"type": "object"}'})
    with pytest.raises(ConfigError, match=r"thing\.json.*\$id"):
        SchemaRegistry(tmp_path)


def test_duplicate_id_is_refused(tmp_path: Path) -> None:
    same = '{"$id": "https://x.example/same.json"}'
    _dir_with(tmp_path, {"a.json": same, "b.json": same})
    with pytest.raises(ConfigError, match="also used by a.json"):
        SchemaRegistry(tmp_path)


def test_missing_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="schema directory not found"):
        SchemaRegistry(tmp_path / "nope")


def test_remote_ref_is_never_fetched(tmp_path: Path) -> None:
    # 192.0.2.0/24 is TEST-NET-1: if the registry tried the network this would hang or fail differently.
    _dir_with(tmp_path, {"thing.json": '{"$id": "https://x.example/thing.json", '
                                       '"$ref": "http://192.0.2.1/remote.json"}'})
    with pytest.raises(ConfigError) as err:
        SchemaRegistry(tmp_path)
    assert err.value.location is not None and err.value.location.file.endswith("thing.json")
    assert "not fetched" in str(err.value)


def test_local_registry_resolves_common_by_id(tmp_path: Path) -> None:
    _dir_with(tmp_path, {"thing.json": json.dumps({
        "$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "https://x.example/thing.json",
        "type": "object", "properties": {"price": {"$ref": "https://ironbus.dev/schemas/common/v1.json#/$defs/money"}},
    })})
    registry = SchemaRegistry(tmp_path)
    assert registry.names() == ["thing"]
    registry.validate("thing", {"price": {"amount": "1.50", "currency": "EUR"}})
    with pytest.raises(SchemaViolation):
        registry.validate("thing", {"price": {"amount": 1.5, "currency": "EUR"}})


# -- the reference doc's examples are real --------------------------------------------------------------
def _doc_examples() -> dict[str, Any]:
    text = DOCS.read_text(encoding="utf-8")
    found: dict[str, Any] = {}
    for match in re.finditer(r"^## `([a-z_.]+)`.*?```json\n(.*?)```", text, re.S | re.M):
        found[match.group(1)] = json.loads(match.group(2))
    return found


def test_docs_have_a_valid_example_for_every_schema(registry: SchemaRegistry) -> None:
    examples = _doc_examples()
    assert sorted(examples) == NAMES
    for name, doc in examples.items():
        registry.validate(name, doc)
