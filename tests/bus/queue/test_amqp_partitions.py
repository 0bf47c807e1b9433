"""A RabbitMQ topology's partition count: one per process when new, the broker's when it exists, recorded in the
journal and then the same for every process (bus.queue.amqp_partitions)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bus.errors import ConfigError
from bus.journal import Journal
from bus.journal.adapterstate import JournalAdapterStore
from bus.queue import amqp_partitions
from bus.queue.amqp import AmqpQueue
from bus.queue.amqp_partitions import default_partitions, existing_partitions
from bus.queue.open import open_queue


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal(f"sqlite:///{tmp_path}/ironbus.sqlite")
    yield j
    j.close()


@pytest.fixture
def name(rabbitmq_url: str) -> Iterator[str]:
    n = f"ibpart-{uuid.uuid4().hex[:10]}"
    yield n
    found = existing_partitions(rabbitmq_url, n)
    if found:
        queue = AmqpQueue(rabbitmq_url, name=n, partitions=found)
        queue.close()
        queue.delete_topology()


def _open(url: str, journal: Journal, home: tuple[int, int] | None = None) -> AmqpQueue:
    queue = open_queue(url, journal, home=home)
    assert isinstance(queue, AmqpQueue)
    queue.close()
    return queue


def test_a_new_topology_gets_one_partition_per_process_and_keeps_it(rabbitmq_url: str, name: str,
                                                                     journal: Journal) -> None:
    # host 1 of 2, each running 3 processes: 6 places
    first = _open(f"{rabbitmq_url}?name={name}&home=1/2", journal, home=(2, 3))
    assert first.partitions == 6
    assert existing_partitions(rabbitmq_url, name) == 6
    assert JournalAdapterStore(journal.engine, f"rabbitmq:{name}").get("partitions") == "6"
    # a later start with another layout keeps the topology's count: a key must stay on its partition
    again = _open(f"{rabbitmq_url}?name={name}", journal, home=(0, 2))
    assert again.partitions == 6


def test_a_url_asking_another_count_than_the_topologys_is_refused(rabbitmq_url: str, name: str,
                                                                  journal: Journal) -> None:
    assert _open(f"{rabbitmq_url}?name={name}&partitions=3", journal).partitions == 3
    with pytest.raises(ConfigError, match=r"partitions=5, but queue '.*' has 3 partitions \(recorded in the journal"):
        open_queue(f"{rabbitmq_url}?name={name}&partitions=5", journal)
    assert _open(f"{rabbitmq_url}?name={name}&partitions=3", journal).partitions == 3


def test_a_topology_made_before_the_count_was_recorded_keeps_the_brokers_count(rabbitmq_url: str, name: str,
                                                                                tmp_path: Path) -> None:
    older = AmqpQueue(rabbitmq_url, name=name, partitions=5)  # an earlier version's topology: nothing recorded
    older.close()
    journal = Journal(f"sqlite:///{tmp_path}/other.sqlite")
    try:
        with pytest.raises(ConfigError, match=r"has 5 partitions \(found on the broker\)"):
            open_queue(f"{rabbitmq_url}?name={name}&partitions=8", journal)
        assert _open(f"{rabbitmq_url}?name={name}", journal, home=(0, 2)).partitions == 5
        assert JournalAdapterStore(journal.engine, f"rabbitmq:{name}").get("partitions") == "5"
    finally:
        journal.close()


def test_processes_creating_one_topology_at_once_agree_on_its_count(rabbitmq_url: str, name: str,
                                                                    journal: Journal) -> None:
    counts: list[int] = []
    start = threading.Barrier(4)

    def one(places: int) -> None:
        start.wait()
        counts.append(amqp_partitions.partitions_for(journal, rabbitmq_url, name, None, (0, places)))

    threads = [threading.Thread(target=one, args=(places,)) for places in (2, 3, 4, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(counts) == 4 and len(set(counts)) == 1
    assert counts[0] in (2, 3, 4, 5)


def test_a_recorded_count_that_is_not_a_number_is_named(rabbitmq_url: str, name: str, journal: Journal) -> None:
    JournalAdapterStore(journal.engine, f"rabbitmq:{name}").put("partitions", "eight")
    with pytest.raises(ConfigError, match=r"holds 'eight', not a partition count; delete that row"):
        open_queue(f"{rabbitmq_url}?name={name}", journal)


def test_the_default_is_one_per_process_within_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_partitions((0, 6)) == 6
    assert default_partitions((0, 1)) == 2  # a second process can still take over, and be started later
    assert default_partitions((0, 500)) == amqp_partitions.MAX_NEW
    monkeypatch.setattr(amqp_partitions, "usable_cpus", lambda: 4)
    assert default_partitions(None) == 4
    monkeypatch.setattr(amqp_partitions, "usable_cpus", lambda: 1)
    assert default_partitions(None) == 2


def test_a_bad_partitions_value_is_refused_before_the_broker_is_asked(journal: Journal) -> None:
    for value in ("0", "-2"):  # port 1: nothing answers there, so reaching the broker would be a TransientError
        with pytest.raises(ConfigError, match=f"partitions={value}; expected at least 1"):
            open_queue(f"amqp://guest:guest@127.0.0.1:1//?partitions={value}", journal)
