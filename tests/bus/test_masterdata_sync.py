"""Master-data sync in the worker: a ``link:`` route writes the xref links itself, and an event that needs a link
not made yet waits (parked) instead of being dead-lettered, then goes through once the link exists.

Given a CRM that reports parties and orders, and an SCM that stores them (stub adapters recording every call),
over each bus backend.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from adapters.stub import StubAdapter
from bus.envelope import Event
from bus.journal import Journal
from bus.runtime import Runtime, RuntimeOptions
from tests.helpers.backends import Backend
from tests.helpers.wait import wait_until


def write_routes(tmp_path: Path, max_parks: int = 50) -> Path:
    (tmp_path / "mappings").mkdir()
    (tmp_path / "mappings" / "party.yaml").write_text(textwrap.dedent("""\
        fields:
          customer_id: code
          source_system: "'crm'"
          changed_at: "'2026-12-07T00:00:00Z'"
          name: name
          system_ids: "{crm: to_string(id)}"
        """))
    (tmp_path / "mappings" / "order.yaml").write_text(textwrap.dedent("""\
        fields:
          order_id: number
          customer_id: "xref('customer', 'crm', party)"
        """))
    routes = tmp_path / "routes.yaml"
    routes.write_text(textwrap.dedent(f"""\
        systems:
          crm: {{adapter: stub}}
          scm: {{adapter: stub}}
        master_data:
          customer: {{owner: crm, systems: [crm, scm]}}
        routes:
          - name: customer-sync
            from: crm.party_changed
            map: mappings/party.yaml
            validate: customer
            key: customer_id
            link: customer
            to: [scm.upsert_party]
          - name: order
            from: crm.order_changed
            map: mappings/order.yaml
            key: order_id
            retry: {{attempts: 1, initial_delay: 0.01, max_delay: 0.05, park: 0.2, max_parks: {max_parks}}}
            to: [scm.update_demand]
        """))
    return routes


def start(routes: Path, backend: Backend) -> Runtime:
    runtime = Runtime(routes, journal=backend.journal, broker=backend.broker,
                      options=RuntimeOptions(workers=2, port=None, triggers=False, lease_seconds=5))
    runtime.start()
    return runtime


def statuses(journal: Journal, route: str) -> dict[str, int]:
    return dict(journal.status_counts()["deliveries"].get(route, {}).get("*", {}))


def calls(runtime: Runtime, system: str, operation: str) -> list[object]:
    adapter = runtime.adapters[system]
    assert isinstance(adapter, StubAdapter)
    return [c.payload for name, c in list(adapter.calls) if name == operation]


def test_an_order_waits_for_its_customer_and_the_sync_links_it(tmp_path: Path, backend: Backend) -> None:
    runtime = start(write_routes(tmp_path), backend)
    try:
        # Given an order of a customer the bus has never seen
        runtime.ingest([(Event(type="crm.order_changed", source="t", data={"number": "SO-1", "party": 42}), "send")])
        wait_until(lambda: statuses(runtime.journal, "order").get("parked"), 20, "the order to wait for its customer")
        assert not calls(runtime, "scm", "update_demand")
        assert runtime.journal.count("dead") == 0
        # When the CRM reports the customer
        runtime.ingest([(Event(type="crm.party_changed", source="t",
                               data={"id": 42, "code": "C-ACME", "name": "ACME"}), "send")])
        # Then the SCM gets the customer, both records are linked, and the order goes through with it
        wait_until(lambda: calls(runtime, "scm", "update_demand"), 30, "the order to reach the SCM")
        assert calls(runtime, "scm", "update_demand") == [{"order_id": "SO-1", "customer_id": "C-ACME"}]
        assert runtime.journal.xref.lookup("customer", "crm", "42") == "C-ACME"
        assert runtime.journal.xref.reverse("customer", "scm", "C-ACME") == "stub-1"
        assert runtime.wait_idle(20)
        assert runtime.journal.count("dead") == 0 and statuses(runtime.journal, "order") == {"mapped": 1}
    finally:
        runtime.stop()


def test_a_link_that_never_comes_is_dead_lettered_after_max_parks(tmp_path: Path) -> None:
    backend = Backend("embedded-sqlite", f"sqlite:///{tmp_path}/j.sqlite", None)
    runtime = start(write_routes(tmp_path, max_parks=2), backend)
    try:
        runtime.ingest([(Event(type="crm.order_changed", source="t", data={"number": "SO-9", "party": 7}), "send")])
        wait_until(lambda: runtime.journal.dead_letters(limit=5), 30, "the order to be dead-lettered")
        [letter] = runtime.journal.dead_letters(limit=5)
        assert letter.route == "order" and "no cross-reference for customer crm:7" in letter.reason
        assert not calls(runtime, "scm", "update_demand")
    finally:
        runtime.stop()
    journal = Journal(backend.journal)
    try:
        assert "parked" not in statuses(journal, "order")
    finally:
        journal.close()
