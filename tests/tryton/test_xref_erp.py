"""``ironbus xref check`` across a live Tryton database and the ERPs of issue 15 (Odoo and ERPNext on the wire).

The SCM is the live Tryton ``scm`` database; the SRM is Odoo and the CRM is ERPNext (their local servers,
tests/helpers/fake_odoo.py and fake_frappe.py). Each system lists its customers, materials and suppliers through
its adapter's ``master_data``; the check compares them with the cross reference in the journal.
"""

from __future__ import annotations

import json
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

import cli
from adapters.tryton import TrytonAdapter
from bus.journal import Journal
from tests.helpers.fake_frappe import FakeFrappe
from tests.helpers.fake_odoo import FakeOdoo
from tests.tryton.tryton_helpers import call
from tryton import tryton_env

ODOO_KEY = "odoo-test-key-0001"
FRAPPE_KEY, FRAPPE_SECRET = "a1b2c3d4e5f6a7b", "0f9e8d7c6b5a4f3"


@pytest.fixture(autouse=True)
def logs_outlive_capsys(monkeypatch: pytest.MonkeyPatch) -> None:
    """``cli.main`` points structlog at the captured stderr; keep later tests' threads logging somewhere open."""
    from bus import logs

    configure = logs.configure_logging

    def configure_logging(level: str = "info", fmt: str = "console") -> None:
        configure(level, fmt)
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.__stderr__))

    monkeypatch.setattr(logs, "configure_logging", configure_logging)


@pytest.fixture
def erps() -> Iterator[tuple[FakeOdoo, FakeFrappe]]:
    odoo = FakeOdoo(api_key=ODOO_KEY).start()
    frappe = FakeFrappe(api_key=FRAPPE_KEY, api_secret=FRAPPE_SECRET).start()
    yield odoo, frappe
    odoo.stop()
    frappe.stop()


def routes_file(tmp_path: Path, server: tryton_env.TrytonServer, odoo: FakeOdoo, frappe: FakeFrappe,
                tag: str) -> Path:
    path = tmp_path / "routes.yaml"
    path.write_text(textwrap.dedent(f"""\
        version: 1
        systems:
          crm:
            adapter: erpnext
            settings:
              url: {frappe.url}
              api_key: {FRAPPE_KEY}
              api_secret: {FRAPPE_SECRET}
              master_data:
                customer: {{filters: [[name, like, "C{tag}%"]]}}
                material: {{filters: [[item_code, like, "W{tag}%"]]}}
          scm:
            adapter: tryton
            settings:
              url: {server.url}
              database: scm
              user: {tryton_env.ADMIN_USER}
              password: {tryton_env.ADMIN_PASSWORD}
              master_data:
                customer: {{model: party.party, domain: [[code, like, "C{tag}%"]], name_field: name}}
                supplier: {{model: party.party, domain: [[code, like, "S{tag}%"]], name_field: name}}
                material: {{model: product.product, domain: [[code, like, "W{tag}%"]], name_field: name}}
          srm:
            adapter: odoo
            settings:
              url: {odoo.url}
              database: acme
              api_key: {ODOO_KEY}
              master_data:
                supplier: {{domain: [[ref, "=like", "S{tag}%"]]}}
                material: {{domain: [[default_code, "=like", "W{tag}%"]]}}
        routes: []
        """))
    return path


def check(routes: Path, journal: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    code = cli.main(["xref", "check", "--routes", str(routes), "--journal", journal, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_xref_check_across_tryton_odoo_and_erpnext(make_adapter: Callable[..., TrytonAdapter],
                                                  tryton_server: tryton_env.TrytonServer,
                                                  erps: tuple[FakeOdoo, FakeFrappe], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    odoo, frappe = erps
    tag = uuid.uuid4().hex[:6].upper()
    customer, supplier, material = f"C{tag}-ACME", f"S{tag}-BOLT", f"W{tag}-100"
    scm = make_adapter("scm")
    t_customer = scm.call("upsert_party", call({"name": "ACME Corporation", "code": customer})).result["id"]
    t_supplier = scm.call("upsert_party", call({"name": "Bolt & Nut Supplies", "code": supplier})).result["id"]
    t_material = scm.call("upsert_product", call({"code": material, "name": "Widget"})).result["id"]
    o_supplier = odoo.add("res.partner", name="Bolt & Nut Supplies", ref=supplier, supplier_rank=1)
    o_material = odoo.add("product.product", name="Widget", default_code=material)
    frappe.add("Customer", customer_name="ACME Corporation", __newname=customer)
    frappe.add("Item", item_code=material, item_name="Widget")

    journal_url = f"sqlite:///{tmp_path}/ironbus.sqlite"
    journal = Journal(journal_url)
    for entity, canonical, system, system_id in [
            ("customer", customer, "scm", t_customer), ("customer", customer, "crm", customer),
            ("supplier", supplier, "scm", t_supplier), ("supplier", supplier, "srm", o_supplier),
            ("material", material, "scm", t_material), ("material", material, "srm", o_material),
            ("material", material, "crm", material)]:
        journal.xref.link(entity, canonical, system, str(system_id))
    journal.close()
    routes = routes_file(tmp_path, tryton_server, odoo, frappe, tag)

    code, report = check(routes, journal_url, capsys)
    assert (code, report["problems"]) == (0, []), report["problems"]
    assert report["summary"]["material"] == {"systems": 3, "records": 3, "canonical": 1, "problems": 0}
    assert report["summary"]["customer"]["systems"] == 2 and report["summary"]["supplier"]["systems"] == 2

    # The ERPs drift: ERPNext renames the item, Odoo gains a supplier nobody linked.
    frappe.docs["Item"][material]["item_name"] = "Widget (old)"
    stray = odoo.add("res.partner", name="Stray Supplier", ref=f"S{tag}-STRAY", supplier_rank=1)
    code, report = check(routes, journal_url, capsys)
    assert code == 1
    kinds = {(p["entity"], p["kind"], p.get("system"), p.get("system_id")) for p in report["problems"]}
    assert kinds == {("material", "inconsistent", None, None), ("supplier", "unlinked", "srm", str(stray))}
