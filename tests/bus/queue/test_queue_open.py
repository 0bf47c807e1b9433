from __future__ import annotations

from pathlib import Path

import pytest

from bus.errors import ConfigError
from bus.journal import Journal
from bus.queue.amqp import AmqpQueue
from bus.queue.base import Message
from bus.queue.embedded import EmbeddedQueue
from bus.queue.open import open_queue


def test_default_is_the_embedded_queue_in_the_journal_database(tmp_path: Path) -> None:
    journal = Journal(f"sqlite:///{tmp_path}/ironbus.sqlite")
    for url in (None, "embedded"):
        queue = open_queue(url, journal)
        assert isinstance(queue, EmbeddedQueue)
    queue.publish([Message(b"x")])
    # the message lives in the journal's own file: a second journal on that file sees it
    other = Journal(f"sqlite:///{tmp_path}/ironbus.sqlite")
    assert open_queue(None, other).depth()["ready"] == 1
    journal.close()
    other.close()


def test_bad_broker_urls_are_config_errors(tmp_path: Path) -> None:
    journal = Journal(f"sqlite:///{tmp_path}/ironbus.sqlite")
    with pytest.raises(ConfigError, match="unsupported scheme 'redis'"):
        open_queue("redis://localhost:6379/0", journal)
    with pytest.raises(ConfigError, match="unknown parameter"):
        open_queue("amqp://guest:guest@127.0.0.1:5672//?colour=blue", journal)
    with pytest.raises(ConfigError, match="must be integers"):
        open_queue("amqp://guest:guest@127.0.0.1:5672//?partitions=many", journal)
    for home in ("3/3", "one/3", "1"):
        with pytest.raises(ConfigError, match=f"home='{home}': expected I/N"):
            open_queue(f"amqp://guest:guest@127.0.0.1:5672//?home={home}", journal)
    journal.close()


def test_amqp_url_opens_rabbitmq_with_parameters(rabbitmq_url: str, tmp_path: Path) -> None:
    import uuid

    journal = Journal(f"sqlite:///{tmp_path}/ironbus.sqlite")
    name = f"ibtest-{uuid.uuid4().hex[:10]}"
    queue = open_queue(f"{rabbitmq_url}?name={name}&partitions=2&prefetch=5&home=1/3&heartbeat=7", journal)
    assert isinstance(queue, AmqpQueue)
    assert (queue.name, queue.partitions, queue.prefetch, queue.home, queue.heartbeat) == (name, 2, 5, (1, 3), 7)
    queue.close()
    queue.delete_topology()
    journal.close()
