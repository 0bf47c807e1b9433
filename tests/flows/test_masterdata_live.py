"""Master data kept consistent by the bus, live on three Tryton databases and the shipped routes.yaml.

Given the demo's stack with its master data created once in each owner (the supplier in the SRM, the material
in the SCM, the customer in the CRM) and synced and linked by the bus itself, then: a new customer's first order
waits for the customer instead of being dead-lettered; a rename or a deactivation in the owner reaches the
other databases; drift made by hand is reported by `ironbus xref check` and repaired through the sync routes;
and `ironbus xref match` links the same records from a cold start.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from demo.actors import SalesRep
from demo.stack import Stack, wait_for
from tests.helpers.inprocess_cli import ironbus
from tests.helpers.services import skip_or_fail
from tests.helpers.stacks import environment
from tryton import tryton_env

pytestmark = [pytest.mark.tryton, pytest.mark.slow]

TIMEOUT = 120.0  # a deadline on a condition, not a sleep: generous for the loaded 2-core CI machine


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if not tryton_env.installed():
        skip_or_fail("trytond is not installed (pip install -e '.[tryton]')")
    with environment(("TRYTON_URL", "IRONBUS_OUTBOX")):
        triangle = Stack(tmp_path_factory.mktemp("masterdata"), workers=3)
        try:
            triangle.start_tryton()
            triangle.start_bus()
            triangle.provision_through_bus(timeout=TIMEOUT)
            yield triangle
        finally:
            triangle.stop()


def party(stack: Stack, system: str, code: str) -> dict[str, Any] | None:
    rows = stack.adapters[system].client.search_read(
        "party.party", [["code", "=", code], ["active", "in", [True, False]]], ["name", "active"])
    return rows[0] if rows else None


def linked(stack: Stack, entity: str, canonical: str, system: str) -> str | None:
    assert stack.runtime is not None
    return stack.runtime.journal.xref.reverse(entity, system, canonical)


def test_the_demo_master_data_came_through_the_bus(stack: Stack) -> None:
    # every record exists once per system that holds it, linked, and the SRM's lead time reached the SCM
    for entity, canonical, systems in (("customer", "C-ACME", ("crm", "scm")), ("supplier", "S-BOLT", ("scm", "srm")),
                                       ("material", "W-100", ("crm", "scm", "srm"))):
        for system in systems:
            assert linked(stack, entity, canonical, system), (entity, system)
    scm = stack.adapters["scm"].client
    lead = wait_for("the SRM's lead time in the SCM", lambda: [
        r for r in scm.search_read("purchase.product_supplier", [], ["lead_time"])
        if r.get("lead_time") and r["lead_time"].days == 3], TIMEOUT)
    assert lead


def test_a_new_customer_and_its_first_order_arrive_in_any_order(stack: Stack) -> None:
    crm = stack.adapters["crm"]
    # Given a customer created in the CRM and quoted at once, before any poll could sync it
    created = crm.call("upsert_party", _call({"code": "C-NEW", "name": "Newcomer Ltd"})).result
    sale = SalesRep(crm.client).create_sale(int(created["id"]), stack.system_id("material", "crm"), 4,
                                            dt.date.today() + dt.timedelta(days=12))
    # Then the SCM gets the customer, linked, and the order's demand for it — and nothing is dead-lettered
    wait_for("C-NEW linked in the SCM", lambda: linked(stack, "customer", "C-NEW", "scm"), TIMEOUT)
    scm_party = party(stack, "scm", "C-NEW")
    assert scm_party is not None and scm_party["name"] == "Newcomer Ltd"
    assert linked(stack, "customer", "C-NEW", "crm") == str(created["id"])
    assert linked(stack, "customer", "C-NEW", "scm") == str(scm_party["id"])
    scm = stack.adapters["scm"].client
    demand = wait_for(f"the SCM demand of {sale.order_id}", lambda: scm.search_read(
        "sale.sale", [["reference", "=", sale.order_id]], ["party"]), TIMEOUT)
    assert demand[0]["party"] == scm_party["id"]
    code, text = ironbus("dlq", "list", "--journal", stack.journal_url, "--json")
    assert code == 0 and not [d for d in json.loads(text) if d.get("route") == "crm-order-changed"], text


def test_renames_and_deactivations_in_the_owner_reach_every_system(stack: Stack) -> None:
    crm, scm, srm = (stack.adapters[s] for s in ("crm", "scm", "srm"))
    crm.call("upsert_party", _call({"code": "C-ACME", "name": "ACME Group"}))
    wait_for("the rename in the SCM", lambda: (party(stack, "scm", "C-ACME") or {}).get("name") == "ACME Group",
             TIMEOUT)
    scm.call("upsert_product", _call({"code": "W-100", "name": "Widget W-100 Mk II"}))
    for other in (crm, srm):
        wait_for(f"the material's new name in {other.system}", lambda o=other: o.client.search_read(  # type: ignore
            "product.product", [["code", "=", "W-100"]], ["name"])[0]["name"] == "Widget W-100 Mk II", TIMEOUT)
    srm.call("upsert_party", _call({"code": "S-BOLT", "name": "Bolt & Nut Supplies", "active": False}))
    # (Tryton on SQLite answers 0/1 for this Boolean)
    wait_for("the supplier deactivated in the SCM", lambda: (party(stack, "scm", "S-BOLT") or {}).get("active")
             in (False, 0), TIMEOUT)
    srm.call("upsert_party", _call({"code": "S-BOLT", "name": "Bolt & Nut Supplies", "active": True}))
    wait_for("the supplier active again in the SCM", lambda: (party(stack, "scm", "S-BOLT") or {}).get("active")
             in (True, 1), TIMEOUT)


def test_drift_made_by_hand_is_reported_then_repaired_through_the_sync_route(stack: Stack) -> None:
    scm = stack.adapters["scm"].client
    assert stack.runtime is not None and stack.runtime.wait_idle(30)
    # Given someone renames the customer in the SCM by hand (the CRM owns customers)
    scm_id = int(linked(stack, "customer", "C-ACME", "scm") or 0)
    owner_name = party(stack, "crm", "C-ACME")["name"]  # type: ignore[index]
    scm.write("party.party", [scm_id], {"name": "Acme (typo by hand)"})
    base = ("--journal", stack.journal_url, "--routes", str(stack.routes))
    # Then xref check reports the drift by entity, system and field
    code, text = ironbus("xref", "check", "--json", *base)
    report = json.loads(text)
    drift = [p for p in report["problems"] if p["kind"] == "drift"]
    assert code == 1 and drift == [{
        "entity": "customer", "kind": "drift", "canonical_id": "C-ACME", "system": "scm", "system_id": str(scm_id),
        "field": "name", "expected": owner_name, "found": "Acme (typo by hand)", "owner": "crm",
        "detail": f"name is 'Acme (typo by hand)' in scm, {owner_name!r} in its owner crm"}]
    # And --repair is a dry run first, naming the route and target
    code, text = ironbus("xref", "check", "--repair", *base)
    assert "would push customer C-ACME through route 'customer-sync' to scm.upsert_party" in text
    assert party(stack, "scm", "C-ACME")["name"] == "Acme (typo by hand)"  # type: ignore[index]
    # When it is applied, the owner's name comes back through the sync route, journaled and traceable
    code, text = ironbus("xref", "check", "--repair", "--apply", *base)
    assert code == 0, text
    wait_for("the repaired name in the SCM", lambda: party(stack, "scm", "C-ACME")["name"] == owner_name,  # type: ignore
             TIMEOUT)
    assert stack.runtime.wait_idle(30)
    code, text = ironbus("xref", "check", "--json", *base)
    assert [p for p in json.loads(text)["problems"] if p["kind"] == "drift"] == [], text
    assert "customer-sync → scm.upsert_party: DELIVERED" in stack.trace("C-ACME")


def test_xref_match_links_the_demo_records_from_a_cold_start(stack: Stack, tmp_path: Path) -> None:
    cold = f"sqlite:///{tmp_path / 'cold.sqlite'}"
    code, text = ironbus("xref", "match", "--apply", "--json", "--journal", cold, "--routes", str(stack.routes))
    assert code == 0, text
    applied = {(p["entity"], p["canonical_id"], p["system"], p["system_id"]) for p in json.loads(text) if p["applied"]}
    assert stack.runtime is not None
    bus_links = {(r.entity, r.canonical_id, r.system, r.system_id) for r in stack.runtime.journal.xref_rows()
                 if r.canonical_id in ("C-ACME", "S-BOLT", "W-100")}
    non_owner = {("customer", "scm"), ("supplier", "scm"), ("material", "crm"), ("material", "srm")}
    assert {link for link in bus_links if (link[0], link[2]) in non_owner} <= applied
    code, text = ironbus("xref", "export", "--format", "json", "--journal", cold)
    assert bus_links <= {(r["entity"], r["canonical_id"], r["system"], r["system_id"]) for r in json.loads(text)}


def _call(payload: dict[str, Any]) -> Any:
    from demo.masterdata import call

    return call(payload)


def test_the_scheduled_check_files_a_report_an_operator_can_read(stack: Stack) -> None:
    from bus.masterdatajob import MasterDataCheck

    runtime = stack.runtime
    assert runtime is not None and runtime.config.master_data_check is not None
    schedule, _ = runtime.config.master_data_check
    # Given a material renamed by hand in the CRM (the SCM owns materials)
    crm = stack.adapters["crm"].client
    crm_id = int(linked(stack, "material", "W-100", "crm") or 0)
    crm.write("product.template", [crm.read("product.product", [crm_id], ["template"])[0]["template"]],
              {"name": "Widget (renamed in the CRM)"})
    # When the scheduled check runs (here: now, as the shipped schedule would at 06:00)
    job = MasterDataCheck(schedule, runtime.adapters, runtime.journal.xref_rows, runtime.config.master_data,
                          lambda events: runtime.ingest([(e, "schedule") for e in events]), runtime.stop_event)
    event = job.run_once()
    # Then its report lands in the outbox through the master-data-report route, readable as text
    report_id = event.data["report_id"]
    path = wait_for("the report in the outbox", lambda: [p for p in stack.notifications()
                                                          if p.name == f"{report_id}.json"], TIMEOUT)[0]
    report = json.loads(path.read_text())
    assert report["problems_total"] >= 1
    assert "- material drift W-100 crm" in report["text"]
    assert "name is 'Widget (renamed in the CRM)' in crm" in report["text"]
