"""The B2B demo's scenario as a test: live Tryton, examples/suppliers/routes.yaml and the simulated suppliers.

Given one order per supplier, when BOLT confirms a week late by X12 855 and ACME ten days late by cXML, then each
delay moves the SRM purchase, and flow 2 brings the new promised date to the CRM sale and a notice to the customer.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from demo.b2b import SUPPLIERS, B2bDemo
from demo.stack import wait_for
from tests.helpers.services import skip_or_fail
from tests.helpers.stacks import environment
from tryton import tryton_env

pytestmark = [pytest.mark.tryton, pytest.mark.slow]

TIMEOUT = 180.0  # a deadline, not a sleep: the machine may be shared (2 cores)
ENV = ("TRYTON_URL", "IRONBUS_OUTBOX", "IRONBUS_B2B", "ACME_CXML_URL")


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[B2bDemo]:
    if not tryton_env.installed():
        skip_or_fail("trytond is not installed (pip install -e '.[tryton]')")
    with environment(ENV):
        running = B2bDemo(tmp_path)
        try:
            running.start()
            yield running
        finally:
            running.stop()


def test_supplier_delays_by_edi_and_by_cxml_reach_the_crm_and_the_customer(demo: B2bDemo) -> None:
    sales = {s.partner: demo.order(s.material, 10) for s in SUPPLIERS}
    assert demo.simulator is not None
    sim = demo.simulator
    wait_for("every supplier's order", lambda: any(x.startswith("BOLT: 850") for x in sim.said)
             and any(x.startswith("NUTS: ORDERS") for x in sim.said) and sim.acme_orders, TIMEOUT)
    for partner in ("BOLT", "ACME"):
        sale = sales[partner]
        line = wait_for(f"{partner}'s delay in the CRM", lambda s=sale: demo.promised(s), TIMEOUT)  # type: ignore
        notices = wait_for(f"{partner}'s customer notice", lambda s=sale: [  # type: ignore[misc]
            n for n in demo.notices(s.order_id) if n.get("kind") == "order_delayed"], TIMEOUT)
        promised = str(notices[0]["promised_date"])
        assert f"promised date {promised}" in line
        assert str(notices[0]["body"]).endswith(f"is now expected on {promised}.")
    assert [(doc, status, code) for doc, status, code in sim.acme_posted][:1] == [("ConfirmationRequest", 200, "200")]
    # NUTS confirmed 6 of the 10 by EDIFACT ORDRSP: the SRM purchase line is amended down to 6, and flow 2 tells
    # the customer of the shortfall; nothing is dead-lettered
    nuts = sales["NUTS"]
    assert wait_for("NUTS's partial confirmation in the SRM", lambda: demo.purchased(nuts) == [6.0] or None,
                    TIMEOUT)
    short = wait_for("NUTS's shortfall notice to the customer", lambda: [
        n for n in demo.notices(nuts.order_id) if n.get("kind") == "order_partial"], TIMEOUT)
    assert "only part of the goods" in str(short[0]["body"])
    assert demo.runtime is not None and demo.runtime.journal.dead_letters(limit=5) == []
    # BOLT's delay moved the CRM sale's date, the SCM re-planned and re-reported the purchase request: the SRM
    # finds the purchase it placed for it, and no second purchase order goes to BOLT (nor a second notice)
    bolt = sales["BOLT"].order_id
    wait_for("BOLT's re-planned request answered by the SRM", lambda: len(_asked(demo, bolt)) >= 2, TIMEOUT)
    assert _events(demo, bolt, "purchase_order.created") == 1


def _events(demo: B2bDemo, order_id: str, type_: str) -> int:
    assert demo.runtime is not None
    return sum(1 for e in demo.runtime.journal.events_for(key=order_id) if e.type == type_)


def _asked(demo: B2bDemo, order_id: str) -> list[str]:
    """The deliveries of the order's purchase requests to the SRM (scm-procurement-requested, delivered)."""
    assert demo.runtime is not None
    journal = demo.runtime.journal
    requests = [e.id for e in journal.events_for(key=order_id) if e.type == "scm.purchase_requests_changed"]
    return [d.idempotency_key for d in journal.deliveries_for_events(requests)
            if d.route == "scm-procurement-requested" and d.status == "delivered"]
