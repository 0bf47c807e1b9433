"""A two-hop routes.yaml against a local HTTP sink, order events for it, and a run-until-idle helper.

Shared by the runtime, ordering, bulk and crash tests.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from bus.envelope import Event
from bus.runtime import Runtime, RuntimeOptions
from tests.helpers.backends import Backend


def write_routes(tmp_path: Path, sink_url: str, *, mode: str = "live", attempts: int = 3,
                 extra_route: str = "") -> Path:
    (tmp_path / "mappings").mkdir(exist_ok=True)
    (tmp_path / "mappings" / "order.yaml").write_text(textwrap.dedent("""\
        fields:
          order_id: number
          quantity: "number(qty)"
          revision: rev
        """))
    routes = tmp_path / "routes.yaml"
    routes.write_text(textwrap.dedent(f"""\
        systems:
          crm: {{adapter: stub}}
          scm:
            adapter: http
            settings:
              base_url: {sink_url}
              timeout: {{connect: 1, read: 0.3}}
              operations:
                update_demand: {{method: POST, path: /demand}}
          srm:
            adapter: http
            settings:
              base_url: {sink_url}
              timeout: {{connect: 1, read: 0.3}}
              operations:
                create_po: {{method: POST, path: /po}}
        routes:
          - name: demand
            from: crm.order_changed
            map: mappings/order.yaml
            key: order_id
            sequence: revision
            mode: {mode}
            to:
              - {{operation: scm.update_demand, emit: procurement.requested}}
            retry: {{attempts: {attempts}, initial_delay: 0.01, max_delay: 0.05, park: 0.1, max_parks: 30}}
          - name: procurement
            from: procurement.requested
            to: [srm.create_po]
            retry: {{attempts: {attempts}, initial_delay: 0.01, max_delay: 0.05, park: 0.1, max_parks: 30}}
        {extra_route}"""))
    return routes


def orders(n: int, start: int = 0) -> list[tuple[Event, str]]:
    return [(Event(type="crm.order_changed", source="ironbus/test",
                   data={"number": f"SO-{i}", "qty": f"{i},5", "rev": 1}), "send") for i in range(start, start + n)]


def enqueue(journal_url: str, broker: str | None, events: list[tuple[Event, str]]) -> None:
    """Journal and queue ``events`` the way ``ironbus send`` does, for a bus started afterwards."""
    from bus.ingest import Ingestor
    from bus.journal import Journal
    from bus.queue.open import open_queue

    journal = Journal(journal_url)
    queue = open_queue(broker, journal)
    ingestor = Ingestor(journal, queue)
    try:
        ingestor.ingest(events)
    finally:
        ingestor.close()
        queue.close()
        journal.close()


def run_until_idle(routes: Path, backend: Backend, events: list[tuple[Event, str]], timeout: float = 60.0,
                   workers: int = 4) -> Runtime:
    runtime = Runtime(routes, journal=backend.journal, broker=backend.broker,
                      options=RuntimeOptions(workers=workers, port=None, triggers=False, lease_seconds=5))
    runtime.start()
    try:
        runtime.ingest(events)
        assert runtime.wait_idle(timeout=timeout), f"bus not idle after {timeout}s: {runtime.queue.depth()}"
    finally:
        runtime.stop()
    return runtime
