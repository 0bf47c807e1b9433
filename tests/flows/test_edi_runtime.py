"""The x12 adapter inside a running bus: a canonical purchase order goes out as an 850 with control numbers from
the journal; the simulated supplier's 997 and delayed 855 come back through the poll trigger; the 855 becomes a
supplier.issue; the interchange shows in `awaiting` until its 997 is read."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from bus.envelope import Event
from bus.journal.adapterstate import pending_items
from bus.runtime import Runtime, RuntimeOptions
from demo.suppliers import SimulatorSettings, SupplierSimulator
from tests.helpers.wait import wait_until

ROOT = Path(__file__).parents[2]


def test_an_order_and_its_confirmation_through_a_running_bus(tmp_path: Path) -> None:
    b2b, outbox = tmp_path / "b2b", tmp_path / "issues"
    routes = tmp_path / "routes.yaml"
    routes.write_text(textwrap.dedent(f"""\
        systems:
          suppliers_x12:
            adapter: x12
            settings:
              our_id: IRONBUYER
              our_qualifier: ZZ
              triggers: {{received: {{interval: 0.1s}}}}
              partners:
                BOLT:
                  id: BOLTCO
                  qualifier: ZZ
                  transport: {{kind: directory, outbox: "{b2b}/bolt/to-supplier", inbox: "{b2b}/bolt/from-supplier"}}
          issues:
            adapter: file
            settings: {{outbox: "{outbox}", format: json, name: "{{{{ po_id }}}}.json"}}
        routes:
          - name: po-out
            from: purchase_order.created
            key: po_id
            to:
              - operation: suppliers_x12.send
                map: {ROOT}/mappings/canonical_po_to_x12_850.yaml
          - name: confirmation-in
            from: suppliers_x12.received
            filter: "status == 'accepted' && document == '855'"
            map: {ROOT}/mappings/x12_855_to_supplier_issue.yaml
            validate: supplier.issue
            key: po_id
            to: [issues.write]
        """))
    journal = f"sqlite:///{tmp_path / 'journal.db'}"
    runtime = Runtime(routes, journal=journal, broker=None,
                      options=RuntimeOptions(workers=2, port=None, triggers=True, lease_seconds=5))
    runtime.journal.xref.link("supplier", "S-BOLT", "suppliers_x12", "BOLT")
    simulator = SupplierSimulator(SimulatorSettings(b2b_dir=b2b, acme_port=0))
    runtime.start()
    simulator.start()
    try:
        po = {"po_id": "PO-77", "source_system": "srm", "changed_at": "2024-05-01T10:00:00Z", "status": "confirmed",
              "supplier": {"id": "S-BOLT"}, "order_date": "2024-05-01",
              "lines": [{"line_no": 1, "material_id": "W-100", "quantity": 10, "unit": "C62"}]}
        runtime.ingest([(Event(type="purchase_order.created", source="test", data=po), "send")])
        sent = b2b / "bolt" / "to-supplier"
        wait_until(lambda: any(p.suffix == ".x12" for p in sent.glob("*")), 20, "the 850 to be written")
        wait_until(lambda: [(w["system"], w["name"]) for w in pending_items(runtime.journal.engine)] ==
                   [("suppliers_x12", "x12:BOLT:000000001")], 20, "the 850 to await its 997 in the journal")

        assert any("answered with 855" in line for line in simulator.step())
        wait_until(lambda: list(outbox.glob("*.json")), 20, "the supplier issue from the 855")
        (issue_file,) = outbox.glob("*.json")
        issue = json.loads(issue_file.read_text())
        assert issue["po_id"] == "PO-77" and issue["kind"] == "delayed" and issue["supplier"] == {"id": "S-BOLT"}
        wait_until(lambda: not pending_items(runtime.journal.engine), 20, "the 997 to settle the 850")
        # Read files are settled (moved to done/) once their watermark is stored.
        wait_until(lambda: list((b2b / "bolt" / "from-supplier" / "done").glob("*.x12")), 20, "settled files")
    finally:
        simulator.stop()
        runtime.stop()
