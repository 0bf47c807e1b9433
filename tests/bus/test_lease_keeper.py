"""A batch to a slow target never outlives its lease (issue 12, item 8).

A real runtime on the embedded queue (SQLite, then PostgreSQL) with a lease much shorter than one delivery to a
real, slow HTTP sink: without renewal the second worker took the same messages when the lease ran out and
delivered them again. Every delivery must arrive exactly once, and a killed process's leases still expire.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bus.envelope import Event
from bus.journal import Journal
from bus.queue.base import Message
from bus.queue.embedded import EmbeddedQueue
from bus.runtime import Runtime, RuntimeOptions
from tests.helpers.pg import pg_schema_url
from tests.helpers.sink import Sink
from tests.helpers.wait import wait_until


def routes_for(tmp_path: Path, url: str) -> Path:
    routes = tmp_path / "routes.yaml"
    routes.write_text(textwrap.dedent(f"""\
        systems:
          crm: {{adapter: stub}}
          slow:
            adapter: http
            settings:
              base_url: {url}
              timeout: {{connect: 1, read: 10}}
              operations: {{put: {{method: POST, path: /put}}}}
        routes:
          - {{name: slow, from: crm.changed, to: [slow.put]}}
        """))
    return routes


@pytest.fixture(params=["sqlite", "postgresql"])
def journal_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/j.sqlite"
    else:
        yield from pg_schema_url(request.getfixturevalue("postgres_url"), prefix="ibh_lease")


def test_slow_deliveries_longer_than_the_lease_arrive_once(tmp_path: Path, journal_url: str) -> None:
    with Sink("ok", slow=1.5) as sink:
        runtime = Runtime(routes_for(tmp_path, sink.url), journal=journal_url,
                          options=RuntimeOptions(workers=3, port=None, triggers=False, lease_seconds=0.5,
                                                 batch_size=2))
        runtime.start()
        try:
            runtime.ingest([(Event(type="crm.changed", source="test", data={"n": n}), "send") for n in range(6)])
            assert runtime.wait_idle(timeout=60), runtime.queue.depth()
        finally:
            runtime.stop()
        assert len(sink.delivered) == 6
        assert set(sink.delivered.values()) == {1}, sink.delivered


def test_a_killed_holder_renews_nothing_and_its_leases_expire(tmp_path: Path) -> None:
    journal = Journal(f"sqlite:///{tmp_path}/j.sqlite")
    holder = EmbeddedQueue(journal.engine, lease_seconds=0.4)
    other = EmbeddedQueue(journal.engine, lease_seconds=0.4)
    holder.publish([Message(body=b"{}", key="k")])
    taken = holder.consume(1, 1.0)
    assert len(taken) == 1
    started = time.monotonic()
    wait_until(lambda: holder._keeper.renewals >= 4, timeout=5, what="the holder to renew its lease")  # noqa: SLF001
    assert time.monotonic() - started > 0.4  # more than a lease has passed while the holder lives
    assert other.consume(1, 0.05) == []  # still renewed by its live holder
    holder._keeper.close()  # the holder "dies": nothing renews any more  # noqa: SLF001
    wait_until(lambda: other.consume(1, 0.05), timeout=5, what="the dead holder's lease to expire")
    holder.close()
    other.close()
    journal.close()
