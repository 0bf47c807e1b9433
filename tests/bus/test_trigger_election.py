"""One runner per poll trigger across processes that share a journal, with fail-over (issue 12, item 10).

Two real runtimes (two processes, or two hosts) on one PostgreSQL journal, both with triggers on, poll a file
inbox: only one of them polls; every dropped file becomes one event; when the runner dies without handing
over, the other takes the trigger once the lease has run out; a graceful stop hands it over at once.
"""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from bus.election import Leases, leaders
from bus.journal import Journal
from bus.runtime import Runtime, RuntimeOptions
from tests.helpers.pg import pg_schema_url
from tests.helpers.wait import wait_until


@pytest.fixture
def journal(postgres_url: str) -> Iterator[str]:
    yield from pg_schema_url(postgres_url, prefix="ibh_elect")


def polls(runtime: Runtime) -> int:
    return int(runtime.triggers.status()["files.dropped"]["polls"])


def test_one_runner_polls_and_another_takes_over_when_it_dies(tmp_path: Path, journal: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bus.election.LEASE_SECONDS", 1.0)
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    routes = tmp_path / "routes.yaml"
    routes.write_text(textwrap.dedent(f"""\
        systems:
          files:
            adapter: file
            settings: {{inbox: {inbox}, triggers: {{dropped: {{interval: 0.2}}}}}}
          out: {{adapter: file, settings: {{outbox: {outbox}, format: json}}}}
        routes:
          - {{name: copy, from: files.dropped, to: [out.write]}}
        """))
    hosts = [Runtime(routes, journal=journal, options=RuntimeOptions(workers=1, port=None, triggers=True))
             for _ in range(2)]
    for host in hosts:
        host.start()
    try:
        for n in range(3):
            (inbox / f"order-{n}.json").write_text(json.dumps({"n": n}))
        wait_until(lambda: len(list(outbox.glob("*.json"))) == 3, timeout=30, what="three files copied")
        wait_until(lambda: polls(hosts[0]) + polls(hosts[1]) >= 5, timeout=30, what="several polls")
        runner = 0 if polls(hosts[0]) else 1
        standby = 1 - runner
        assert polls(hosts[standby]) == 0  # one runner for the trigger, not one per process
        # the runner dies without handing over: its lease runs out (two intervals + 5 s) and the standby takes over
        hosts[runner].triggers.stop()
        died = time.monotonic()
        wait_until(lambda: polls(hosts[standby]) > 0, timeout=30, what="the standby to take over")
        failover = time.monotonic() - died
        (inbox / "order-late.json").write_text(json.dumps({"n": 99}))
        wait_until(lambda: len(list(outbox.glob("*.json"))) == 4, timeout=30, what="the late file copied")
        print(f"\ntrigger fail-over after its runner died: {failover:.1f}s")
        assert failover < 15
    finally:
        for host in hosts:
            host.stop()


def test_a_lease_is_exclusive_renewable_and_released(journal: str) -> None:
    store = Journal(journal)
    try:
        a, b = Leases(store.leases, ttl=30, holder="a"), Leases(store.leases, ttl=30, holder="b")
        assert a.hold("crm.poll") and not b.hold("crm.poll") and a.hold("crm.poll")
        assert leaders(store.leases)["crm.poll"][0] == "a"
        a.release_all()
        assert b.hold("crm.poll") and not a.hold("crm.poll")
        expired = Leases(store.leases, ttl=1.0, holder="c")  # long enough for the write itself
        assert expired.hold("other")
        wait_until(lambda: b.hold("other"), timeout=5, what="an expired lease to be taken")
    finally:
        store.close()


def test_a_renewal_answered_after_the_lease_ran_out_is_not_leadership(journal: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A host cut off from the database (a network partition) gets the answer to its renewal only once the link
    is back: by then its lease has run out and another host may poll the trigger, so it must not poll too."""
    import bus.election

    store = Journal(journal)
    try:
        leases = Leases(store.leases, ttl=5, holder="cut-off")
        assert leases.hold("crm.poll")
        started = time.time()
        clock = iter([started])  # read before the write; every later read: the write took 6 s, past the 5 s lease
        monkeypatch.setattr(bus.election, "time", SimpleNamespace(time=lambda: next(clock, started + 6)))
        assert not leases.hold("crm.poll")
        monkeypatch.setattr(bus.election, "time", time)
        assert leases.hold("crm.poll")  # a timely answer is leadership again
    finally:
        store.close()
