"""A dead letter of an event its route could not map says what was attempted (`target: *`, attempts), and `dlq
retry` of it, once the cause is fixed, gives the event the business key its route computes now: the retried hop is
found by `trace --key`.
"""

from __future__ import annotations

import contextlib
import io
import textwrap
from pathlib import Path

import cli
from adapters.base import Adapter
from adapters.stub import StubAdapter
from bus.config import load_config
from bus.envelope import Event
from bus.journal import Journal
from bus.runtime import Runtime, RuntimeOptions, open_adapters

ROUTES = """\
systems:
  crm: {adapter: stub}
  scm: {adapter: stub}
routes:
  - name: order
    from: crm.sales_changed
    map: map.yaml
    key: order_id
    retry: {max_parks: 0}
    to: [scm.update_demand]
"""
MAP = """\
fields:
  order_id: "concat('SO-', number)"
  customer: "xref('customer', 'crm', party)"
"""


def run(routes: Path, journal: str, adapters: dict[str, Adapter], events: list[Event]) -> None:
    runtime = Runtime(routes, journal=journal, adapters=adapters,
                      options=RuntimeOptions(workers=1, port=None, triggers=False, lease_seconds=10))
    runtime.start()
    try:
        runtime.ingest([(e, "poll") for e in events])
        assert runtime.wait_idle(timeout=30)
    finally:
        runtime.stop()


def test_a_retried_letter_keeps_its_route_and_attempts_and_gets_its_key(tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text(textwrap.dedent(ROUTES))
    (tmp_path / "map.yaml").write_text(textwrap.dedent(MAP))
    url = f"sqlite:///{tmp_path}/j.sqlite"
    adapters: dict[str, Adapter] = open_adapters(load_config(routes))
    # Given a polled sale of a customer nobody linked: its route cannot map it, so it has no key
    sale = Event(type="crm.sales_changed", source="test", data={"number": "7", "party": 3})
    run(routes, url, adapters, [sale])
    journal = Journal(url)
    try:
        [letter] = journal.dead_letters()
        assert (letter.route, letter.target, letter.attempts) == ("order", "*", 1)
        assert journal.get_event(sale.id).key is None
        journal.xref.link("customer", "C-GLOBEX", "crm", "3")
    finally:
        journal.close()
    # When the operator retries it after linking the customer
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli.main(["dlq", "retry", "--route", "order", "--journal", url, "--routes", str(routes)]) == 0
    run(routes, url, adapters, [])
    # Then it is delivered, and trace --key finds it with the hop that succeeded
    scm = adapters["scm"]
    assert isinstance(scm, StubAdapter) and [c.payload["order_id"] for _, c in scm.calls] == ["SO-7"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["trace", "--key", "SO-7", "--journal", url]) == 0
    assert "order → scm.update_demand: DELIVERED" in out.getvalue(), out.getvalue()
