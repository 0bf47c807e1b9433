"""RabbitMQ packs: the messages of one publish and one partition travel as one AMQP message, and come out as
leases of their own (bus/queue/amqp_pack.py)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import kombu
import pytest
from structlog.testing import capture_logs

from bus.errors import ConfigError
from bus.journal import Journal
from bus.queue.amqp import AmqpQueue, partition_for
from bus.queue.amqp_consumer import AmqpConsumer
from bus.queue.amqp_pack import CONTENT_TYPE, H_PACK, PACK_BYTES, PackError, encode, groups, unpack
from bus.queue.amqp_topology import Topology
from bus.queue.base import Lease, Message
from bus.queue.open import open_queue


@pytest.fixture
def name() -> str:
    return f"ibtest-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def queues(rabbitmq_url: str, name: str) -> Iterator[list[AmqpQueue]]:
    """Queues a test opens (on ``name``): closed, and the topology deleted, at the end."""
    opened: list[AmqpQueue] = []
    yield opened
    for queue in opened:
        queue.close()
    if opened:
        opened[0].delete_topology()


def _open(queues: list[AmqpQueue], url: str, name: str, **kw: Any) -> AmqpQueue:
    queue = AmqpQueue(url, name=name, **kw)
    queues.append(queue)
    return queue


def _drain(queue: AmqpQueue, want: int, *, ack: bool, timeout: float = 10.0) -> list[Lease]:
    """Consume until ``want`` leases came (acking each batch if ``ack``: a key's next message waits for it)."""
    leases: list[Lease] = []
    deadline = time.monotonic() + timeout
    while len(leases) < want and time.monotonic() < deadline:
        got = queue.consume(want - len(leases), 0.2)
        if ack:
            queue.ack_many(got)
        leases += got
    return leases


def _ready(queue: AmqpQueue, want: int, timeout: float = 5.0) -> int:
    """``depth()['ready']`` once it reached ``want`` (the broker counts a confirmed message within moments)."""
    deadline = time.monotonic() + timeout
    ready = queue.depth()["ready"]
    while ready != want and time.monotonic() < deadline:
        time.sleep(0.05)
        ready = queue.depth()["ready"]
    return ready


def _nothing_left(queue: AmqpQueue) -> None:
    assert queue.consume(10, 1.0) == []
    assert queue.depth()["ready"] == 0


def _fields(m: Message) -> tuple[Any, ...]:
    return m.body, m.key, m.route, m.target, m.parks, m.headers


# -- the format, without a broker -------------------------------------------------------------------------------
def _raw(body: bytes, headers: dict[str, Any]) -> Any:
    return SimpleNamespace(body=body, headers=headers, delivery_info={"redelivered": False})


def test_a_pack_round_trips_every_field_of_its_parts() -> None:
    messages = [Message(b"a", key="K1", route="r", target="s.op", parks=2, headers={"h": "v"}),
                Message(b"", key=None), Message(bytes(range(256)), key="K2")]
    assert unpack(_raw(encode(messages), {H_PACK: 3})) == messages


@pytest.mark.parametrize("body, parts", [(b"garbage", 2), (b"IBP1", 1), (b"IBP1\x00\x00\x00\x02[]", 1),
                                         (encode([Message(b"a"), Message(b"b")]), 3),
                                         (encode([Message(b"a"), Message(b"b")])[:-1], 2),
                                         (encode([Message(b"a"), Message(b"b")]) + b"x", 2),
                                         (b'IBP1\x00\x00\x00\x13[[1,0,0,0,null,0]]', 1)])
def test_a_malformed_pack_is_a_pack_error(body: bytes, parts: int) -> None:
    with pytest.raises(PackError):
        unpack(_raw(body, {H_PACK: parts}))


def test_groups_keep_a_partitions_order_and_split_at_the_count_and_byte_limits() -> None:
    topology = Topology("t", 4, (1,))
    keyed = [Message(f"{i}".encode(), key=f"K{i % 7}") for i in range(100)]
    out = list(groups(keyed, topology.routing_key, 4, 16))
    assert all(1 <= len(g) <= 16 for _, g in out)
    for p in range(4):  # each partition's messages, in publish order, exactly once
        mine = [m for m in keyed if partition_for(m.key or "", 4) == p]
        assert [m for key, g in out if key == f"p{p}" for m in g] == mine
    big = [Message(b"x" * (PACK_BYTES // 2), key="K")] * 5
    assert [len(g) for _, g in groups(big, topology.routing_key, 4, 16)] == [2, 2, 1]


def test_keyless_messages_are_spread_over_the_partitions_in_packs() -> None:
    topology = Topology("t", 4, (1,))
    out = list(groups([Message(b"n")] * 10, topology.routing_key, 4, 16))
    assert sorted(len(g) for _, g in out) == [2, 2, 3, 3]  # one pack per partition
    assert {key for key, _ in out} == {"p0", "p1", "p2", "p3"}
    assert [len(g) for _, g in groups([Message(b"n")] * 100, topology.routing_key, 4, 16)] == [15] * 2 + [14] * 5


def test_a_packs_delivery_is_acked_with_its_last_part_and_coalesced_with_the_settled_run() -> None:
    consumer = AmqpConsumer("amqp://unused", "t", ([], []), 64, 3.0)
    acks: list[tuple[int, bool]] = []
    channel = SimpleNamespace(basic_ack=lambda delivery_tag, multiple: acks.append((delivery_tag, multiple)))
    for tag, parts in ((1, 3), (2, 1), (3, 2), (4, 2)):
        messages = [Message(f"{tag}.{i}".encode(), key=f"K{tag}.{i}") for i in range(parts)]
        raw = _raw(encode(messages), {H_PACK: parts}) if parts > 1 else _raw(b"1", {})
        raw.delivery_tag = tag
        consumer._arrived(raw)
    parts = consumer._take(100)
    assert len(parts) == 8 and consumer.counts() == (0, 8)

    def settle(*indexes: int) -> list[tuple[int, bool]]:
        consumer.settle([(parts[i][0], 0, parts[i][3]) for i in indexes])
        acks.clear()
        consumer._flush_acks(0, channel)
        return list(acks)

    assert settle(0, 1) == []  # delivery 1 (a pack of 3) has a part in work: not acked
    assert settle(3) == [(2, False)]  # the single delivery 2, settled behind 1: acked on its own
    assert settle(4) == []  # delivery 3 has a part in work
    assert settle(5) == [(3, False)]  # and now none: acked on its own, behind 1
    assert settle(2) == [(1, True)]  # 1's last part: 1 to 3 are settled (2 and 3 acked already)
    assert settle(6, 7) == [(4, True)]
    assert consumer.counts() == (0, 0)


# -- on RabbitMQ ----------------------------------------------------------------------------------------------
def test_a_publish_packs_each_partitions_messages_and_each_part_comes_out_once(
        rabbitmq_url: str, name: str, queues: list[AmqpQueue]) -> None:
    queue = _open(queues, rabbitmq_url, name, partitions=3)
    sent = [Message(f"m{i}".encode(), key=f"K{i % 10}", route=f"r{i % 2}", target="erp.post" if i % 3 else None,
                    parks=i % 2, headers={"n": str(i)}) for i in range(40)]
    queue.publish(sent)
    per_partition = [sum(1 for m in sent if partition_for(m.key or "", 3) == p) for p in range(3)]
    packs = sum(-(-n // 16) for n in per_partition)  # packs of at most 16, per partition
    assert packs <= 40 / 8  # far fewer broker messages than bus messages
    assert _ready(queue, packs) == packs
    got = _drain(queue, 40, ack=True)
    assert sorted(map(_fields, (lease.message for lease in got))) == sorted(map(_fields, sent))
    assert {lease.delivery_count for lease in got} == {1}
    for k in range(10):  # per key in publish order
        assert [lease.message.body for lease in got if lease.message.key == f"K{k}"] == \
               [m.body for m in sent if m.key == f"K{k}"]
    _nothing_left(queue)


def test_one_keys_order_holds_across_packs_and_publishes(rabbitmq_url: str, name: str,
                                                         queues: list[AmqpQueue]) -> None:
    queue = _open(queues, rabbitmq_url, name, partitions=2)
    queue.publish([Message(f"a{i}".encode(), key="K") for i in range(40)])  # packs of 16, 16, 8
    queue.publish([Message(f"b{i}".encode(), key="K") for i in range(20)])  # 16, 4
    assert _ready(queue, 5) == 5
    leases = []
    deadline = time.monotonic() + 10
    while len(leases) < 60 and time.monotonic() < deadline:
        got = queue.consume(10, 0.2)
        assert len(got) <= 1  # never two of one key leased at once
        queue.ack_many(got)
        leases += got
    assert [lease.message.body for lease in leases] == [f"a{i}".encode() for i in range(40)] + \
           [f"b{i}".encode() for i in range(20)]
    _nothing_left(queue)


def test_a_pack_with_unsettled_parts_comes_back_whole_and_a_settled_one_does_not(
        rabbitmq_url: str, name: str, queues: list[AmqpQueue]) -> None:
    first = _open(queues, rabbitmq_url, name, partitions=1)
    first.publish([Message(f"m{i}".encode(), key=f"K{i}") for i in range(10)])
    first.publish([Message(f"n{i}".encode(), key=f"N{i}") for i in range(5)])
    leases = _drain(first, 15, ack=False)
    assert len(leases) == 15
    first.ack_many(leases[:6] + leases[7:10])  # the first pack but m6: unsettled; the second pack: untouched
    first.ack_many(leases[10:][::-1])  # the second pack settled: acked on its own (behind the first)
    first.close()  # m6 is unsettled: the broker requeues its whole pack
    again = _open(queues, rabbitmq_url, name, partitions=1)
    back = _drain(again, 10, ack=True)
    assert [lease.message.body for lease in back] == [f"m{i}".encode() for i in range(10)]  # at-least-once
    assert {lease.delivery_count for lease in back} == {2}
    _nothing_left(again)


def test_releasing_one_part_brings_only_it_back_later(rabbitmq_url: str, name: str,
                                                     queues: list[AmqpQueue]) -> None:
    queue = _open(queues, rabbitmq_url, name, partitions=1, delay_tiers=(1,))
    queue.publish([Message(f"m{i}".encode(), key=f"K{i}", headers={"n": str(i)}) for i in range(5)])
    leases = _drain(queue, 5, ack=False)
    released = time.monotonic()
    leases[2].release(1.0)
    queue.ack_many(leases[:2] + leases[3:])
    assert queue.depth()["delayed"] == 1
    [back] = _drain(queue, 1, ack=True, timeout=10)
    assert time.monotonic() - released >= 0.9
    assert (back.message.body, back.message.key, back.message.headers, back.delivery_count) == \
           (b"m2", "K2", {"n": "2"}, 2)
    queue.close()
    again = _open(queues, rabbitmq_url, queue.name, partitions=1, delay_tiers=(1,))
    _nothing_left(again)  # the pack was acked once its last part (the released one) was settled


def _get(url: str, queue: str) -> Any:
    with kombu.Connection(url) as conn:
        channel = conn.channel()
        deadline = time.monotonic() + 5
        while (raw := channel.basic_get(queue=queue, no_ack=True)) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return raw


def test_a_single_message_keeps_the_plain_format_and_several_make_a_pack(rabbitmq_url: str, name: str,
                                                                          queues: list[AmqpQueue]) -> None:
    queue = _open(queues, rabbitmq_url, name, partitions=1)
    queue.publish([Message(b"alone", key="K", route="r", headers={"h": "v"})])
    raw = _get(rabbitmq_url, f"{name}.p0")
    assert raw.body == b"alone" and raw.content_type == "application/octet-stream"
    assert raw.headers == {"x-ib-key": "K", "x-ib-route": "r", "h": "v"}  # as before packs: no x-ib-pack
    queue.publish([Message(b"a", key="K"), Message(b"b", key="L")])
    raw = _get(rabbitmq_url, f"{name}.p0")
    assert raw.content_type == CONTENT_TYPE and raw.headers == {H_PACK: 2}
    assert [m.body for m in unpack(raw)] == [b"a", b"b"]


def test_a_malformed_pack_is_handed_out_whole_and_the_consumer_goes_on(rabbitmq_url: str, name: str,
                                                                       queues: list[AmqpQueue]) -> None:
    queue = _open(queues, rabbitmq_url, name, partitions=1)
    with kombu.Connection(rabbitmq_url) as conn:
        producer = conn.Producer()
        producer.publish(b"not a pack", exchange=name, routing_key="p0", headers={H_PACK: 3},
                         content_type=CONTENT_TYPE, content_encoding="binary", serializer=None, delivery_mode=2)
    queue.publish([Message(b"a", key="K"), Message(b"b", key="L")])
    with capture_logs() as logs:
        leases = _drain(queue, 3, ack=True)
    # as one message without key whose body (the raw bytes) the worker cannot decode: it dead-letters it
    assert [(lease.message.body, lease.message.key) for lease in leases] == \
           [(b"not a pack", None), (b"a", "K"), (b"b", "L")]
    warnings = [e for e in logs if e["event"] == "queue.amqp_unreadable_message"]
    assert len(warnings) == 1 and warnings[0]["queue"] == name and warnings[0]["log_level"] == "warning"
    _nothing_left(queue)


def test_a_malformed_pack_is_dead_lettered_by_the_worker_and_the_events_behind_it_flow(
        rabbitmq_url: str, name: str, tmp_path: Path) -> None:
    from bus.envelope import Event
    from bus.runtime import Runtime, RuntimeOptions
    from tests.helpers.routes import write_routes
    from tests.helpers.sink import Sink

    with Sink("ok") as sink:
        routes = write_routes(tmp_path, sink.url)
        journal = f"sqlite:///{tmp_path}/journal.sqlite"
        runtime = Runtime(routes, journal=journal, broker=f"{rabbitmq_url}?name={name}&partitions=1",
                          options=RuntimeOptions(workers=1, port=None, triggers=False, lease_seconds=5))
        try:
            with kombu.Connection(rabbitmq_url) as conn:  # a pack whose framing is broken, ahead of good events
                conn.Producer().publish(b"IBP1\xff", exchange=name, routing_key="p0", headers={H_PACK: 2},
                                        content_type=CONTENT_TYPE, content_encoding="binary", serializer=None)
            runtime.start()
            runtime.ingest([(Event(type="crm.order_changed", source="t", data={"number": f"SO-{i}", "qty": "1",
                                                                               "rev": 1}), "send") for i in range(3)])
            assert runtime.wait_idle(timeout=60)
        finally:
            runtime.stop()
            runtime.queue.delete_topology()  # type: ignore[attr-defined]
        assert len(sink.keys()) == 6  # 3 demands and their 3 follow-ups
    found = Journal(journal)
    try:
        [letter] = found.dead_letters()
        assert letter.body == b"IBP1\xff" and letter.reason.startswith("undecodable")
    finally:
        found.close()


def test_pack_1_in_the_broker_url_publishes_every_message_on_its_own(rabbitmq_url: str, name: str,
                                                                     tmp_path: Path) -> None:
    journal = Journal(f"sqlite:///{tmp_path}/ironbus.sqlite")
    plain = open_queue(f"{rabbitmq_url}?name={name}&partitions=1&pack=1", journal)
    packed = open_queue(f"{rabbitmq_url}?name={name}&partitions=1&pack=4", journal)
    try:
        assert isinstance(plain, AmqpQueue) and isinstance(packed, AmqpQueue)
        assert (plain.pack, packed.pack) == (1, 4)
        plain.publish([Message(f"m{i}".encode(), key=f"K{i}") for i in range(5)])
        assert _ready(plain, 5) == 5
        packed.publish([Message(f"n{i}".encode(), key=f"K{i}") for i in range(10)])  # 4 + 4 + 2
        assert _ready(plain, 8) == 8
        got = _drain(packed, 15, ack=True)  # both formats, consumed by one queue
        assert sorted(lease.message.body for lease in got) == sorted([f"m{i}".encode() for i in range(5)] +
                                                                     [f"n{i}".encode() for i in range(10)])
        _nothing_left(plain)
    finally:
        plain.close()
        packed.close()
        plain.delete_topology()
        journal.close()


@pytest.mark.parametrize("value, error", [("0", "pack=0: expected 1"), ("65", "pack=65: expected 1"),
                                          ("some", "must be integers")])
def test_a_bad_pack_in_the_broker_url_is_a_config_error(value: str, error: str, tmp_path: Path) -> None:
    journal = Journal(f"sqlite:///{tmp_path}/ironbus.sqlite")
    try:
        with pytest.raises(ConfigError, match=error):
            open_queue(f"amqp://guest:guest@127.0.0.1:1//?pack={value}", journal)
        with pytest.raises(ConfigError, match="known: name, partitions, prefetch, home, heartbeat, pack"):
            open_queue("amqp://guest:guest@127.0.0.1:1//?packs=2", journal)
    finally:
        journal.close()
