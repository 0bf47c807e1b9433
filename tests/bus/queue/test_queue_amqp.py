"""RabbitMQ specifics: partitioning, delay tiers, error translation at the edge."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from typing import Any

import pytest

from bus.errors import ConfigError, TransientError
from bus.queue.amqp import AmqpQueue, partition_for
from bus.queue.base import Message


@pytest.fixture
def name() -> str:
    return f"ibtest-{uuid.uuid4().hex[:10]}"


def test_a_key_maps_to_the_same_partition_in_every_process() -> None:
    keys = [f"SO-{n}" for n in range(300)]
    mine = [partition_for(k, 8) for k in keys]
    script = f"from bus.queue.amqp import partition_for; print([partition_for(k, 8) for k in {keys!r}])"
    theirs = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONHASHSEED": "12345"}).stdout
    assert json.loads(theirs) == mine
    assert set(mine) == set(range(8))  # and keys spread over every partition


def test_long_delays_wait_in_the_largest_tier_until_due(rabbitmq_url: str, name: str) -> None:
    queue = AmqpQueue(rabbitmq_url, name=name, partitions=2, delay_tiers=(1, 2))
    try:
        queue.publish([Message(b"later", key="K")])
        [lease] = queue.consume(1, 5)
        released = time.monotonic()
        lease.release(2.5)  # longer than the largest tier: goes round the 2 s tier twice
        assert queue.depth()["delayed"] == 1
        leases = []
        for _ in range(20):
            leases = queue.consume(1, 0.5)
            if leases:
                break
        assert [x.message.body for x in leases] == [b"later"]
        assert time.monotonic() - released >= 2.5  # not after one pass of the 2 s tier: when due
        leases[0].ack()
    finally:
        queue.close()
        queue.delete_topology()


def test_an_unreachable_broker_is_a_transient_error(name: str) -> None:
    with pytest.raises(TransientError, match="RabbitMQ unavailable"):
        AmqpQueue("amqp://guest:guest@127.0.0.1:1//", name=name)


def test_a_clashing_queue_declaration_is_a_config_error(rabbitmq_url: str, name: str) -> None:
    import kombu

    with kombu.Connection(rabbitmq_url) as conn:  # a queue of our name without single-active-consumer
        kombu.Queue(f"{name}.p0", kombu.Exchange(name, type="direct"), routing_key="p0").bind(conn.channel()).declare()
    try:
        with pytest.raises(ConfigError, match="exists with other arguments"):
            AmqpQueue(rabbitmq_url, name=name, partitions=1)
    finally:
        with kombu.Connection(rabbitmq_url) as conn:
            channel = conn.channel()
            channel.queue_delete(f"{name}.p0")
            channel.exchange_delete(name)


def _drain(queue: AmqpQueue, want: int, timeout: float = 10.0) -> list[Any]:
    leases: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(leases) < want and time.monotonic() < deadline:
        leases += queue.consume(want - len(leases), 0.5)
    return leases


def test_acks_out_of_order_settle_exactly_the_acked_messages(rabbitmq_url: str, name: str) -> None:
    # The consumer acks the settled run at the front of the channel with one `multiple` ack and anything
    # settled behind an unsettled message on its own: whatever the order, exactly the acked messages leave
    # the broker, and the one still in work comes back when the consumer goes away. Plain messages (pack=1):
    # one delivery per message (packs: tests/bus/queue/test_queue_amqp_packs.py).
    queue = AmqpQueue(rabbitmq_url, name=name, partitions=1, pack=1)
    try:
        queue.publish([Message(f"m{i}".encode(), key=f"K{i}") for i in range(12)])
        leases = _drain(queue, 12)
        assert [lease.message.body for lease in leases] == [f"m{i}".encode() for i in range(12)]
        held = leases[5]
        queue.ack_many(leases[6:])  # behind the unsettled m0..m5: acked one by one
        queue.ack_many(leases[:5][::-1])  # the front run, in reverse: one multiple ack up to m4
    finally:
        queue.close()  # m5 is unacked: the broker requeues it
    again = AmqpQueue(rabbitmq_url, name=name, partitions=1)
    try:
        back = _drain(again, 1)
        assert [lease.message.body for lease in back] == [held.message.body]
        again.ack_many(back)
        assert again.consume(5, 1.0) == []  # nothing else was left unacked or acked twice
    finally:
        again.close()
        again.delete_topology()


def test_processes_with_a_home_share_the_partitions_and_cover_for_each_other(rabbitmq_url: str, name: str) -> None:
    # Single-active-consumer makes the first subscriber of a partition its consumer. Two processes that know
    # their place (home 0/2 and 1/2) each take half of the partitions at once; the other half they join only
    # later, as standby, and take over when the owner goes away.
    first = AmqpQueue(rabbitmq_url, name=name, partitions=4, home=(0, 2), standby_after=0.5)
    second = AmqpQueue(rabbitmq_url, name=name, partitions=4, home=(1, 2), standby_after=0.5)
    try:
        keys = {p: next(f"K{i}" for i in range(1000) if partition_for(f"K{i}", 4) == p) for p in range(4)}
        first.consume(1, 0.1)  # starts both consumers
        second.consume(1, 0.1)
        deadline = time.monotonic() + 10  # until each also listens on the other's partitions, as standby
        while not (first.standby_subscribed and second.standby_subscribed) and time.monotonic() < deadline:
            first.consume(1, 0.05)
        assert first.standby_subscribed and second.standby_subscribed
        first.publish([Message(f"p{p}".encode(), key=keys[p]) for p in range(4)])
        got_first = {lease.message.key: lease for lease in _drain(first, 2)}
        got_second = {lease.message.key: lease for lease in _drain(second, 2)}
        assert set(got_first) == {keys[0], keys[2]}  # its home partitions 0 and 2
        assert set(got_second) == {keys[1], keys[3]}
        first.ack_many(list(got_first.values()))
        second.ack_many(list(got_second.values()))
        second.close()  # the owner of partitions 1 and 3 goes away: the standby takes them over
        first.publish([Message(b"after", key=keys[1])])
        [lease] = _drain(first, 1)
        assert lease.message.body == b"after"
        lease.ack()
    finally:
        first.close()
        second.close()
        first.delete_topology()
