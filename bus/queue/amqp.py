"""The RabbitMQ work queue: for scale-out across processes and hosts.

This module is the queue as the bus sees it (publish, consume, ack, release, depth); its parts are modules of
their own: the topology and the broker's errors (:mod:`bus.queue.amqp_topology`), the confirmed publisher
(:mod:`bus.queue.amqp_publisher`) and the consuming I/O thread (:mod:`bus.queue.amqp_consumer`).

Topology (all durable; messages persistent; publisher confirms; manual acks):

* exchange ``NAME`` (direct) with ``partitions`` queues ``NAME.p0`` … bound by routing key ``p0`` …, each
  declared ``x-single-active-consumer`` — every process consumes every partition, the broker lets exactly one
  consumer at a time receive from each, so a key (hashed to one partition) is processed by one process, in
  order. Keyless messages are spread round-robin. How many partitions a topology has is settled once, by
  :mod:`bus.queue.amqp_partitions` (one per process for a new one, recorded in the journal).
* spreading partitions over processes: the broker makes the *first* consumer of a partition its active one, so
  a process that knows its place among N (``home=(index, N)``, set by ``ironbus run --processes``) subscribes
  to its own share of the partitions at once and to the others only ``standby_after`` seconds later, as a
  standby that takes over when the owner goes away. Without ``home`` it subscribes to all at once.
* delayed redelivery without a plugin: one fanout exchange + queue per delay tier (``NAME.delay.5s`` …) with
  a per-queue TTL that dead-letters back to ``NAME`` under the message's original routing key. A queue-wide
  TTL keeps expiry in FIFO order. A delay is rounded *up* to the next tier; one longer than the largest tier
  passes through that tier repeatedly until due (header ``x-ib-due``).

Packs: the messages of one ``publish`` call that go to one partition travel as one AMQP message, a *pack* of up
to ``pack`` parts (default :data:`~bus.queue.amqp_pack.PACK_DEFAULT`, ``pack=1`` switches packing off; format in
:mod:`bus.queue.amqp_pack`), because the broker's cost and the client's are per AMQP message. A single message
keeps the plain format, so versions with and without packs interoperate. Each part is a lease of its own; the
pack's delivery is acked once all its parts are settled, so a crash before that redelivers the whole pack (its
settled parts too: at-least-once, the journal drops the repeats). A released part is republished alone.

Memory: ``prefetch`` counts AMQP messages per partition, so a process buffers up to partitions x prefetch x pack
messages (64 x 16 = 1,024 per partition by default, against 64 without packs) and at most partitions x prefetch x
:data:`~bus.queue.amqp_pack.PACK_BYTES` of bodies. Packs of 16 take ~94% of the per-message cost off already (64
would take ~98% for 4x the buffer), and a prefetch lowered to match would starve the single-message traffic
(webhooks publish one event at a time), so the pack size is kept small rather than the prefetch lowered.

Within one process, a message whose key is already leased (or has an earlier message waiting) is held back
until that lease is settled, so the per-key ordering promise of :class:`bus.queue.base.Queue` holds for
concurrent worker threads too. Unlike the embedded queue, a *released* message goes to the back of its
partition, so later messages of its key may overtake it while it waits out its delay.

A crashed consumer's unacked messages are requeued by the broker. kombu/amqp connection failures surface
as :class:`bus.errors.TransientError`; a topology clash (a queue declared with other arguments) as
:class:`bus.errors.ConfigError`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from bus.errors import ConfigError
from bus.journal.unit import UnitOfWork
from bus.queue.amqp_consumer import AmqpConsumer
from bus.queue.amqp_pack import CONTENT_TYPE, H_PACK, PACK_DEFAULT, check_pack, encode, groups
from bus.queue.amqp_publisher import ConfirmedPublisher, Sender
from bus.queue.amqp_topology import (
    DELAY_TIERS,
    H_COUNT,
    H_DUE,
    H_KEY,
    H_PARKS,
    H_ROUTE,
    H_TARGET,
    Topology,
    partition_for,
)
from bus.queue.base import Lease, Message

__all__ = ["DELAY_TIERS", "AmqpLease", "AmqpQueue", "partition_for"]

log = structlog.get_logger(__name__)

_DUE_SLACK = 0.05  # a message back from its delay tier this close to due is handed out


@dataclass(eq=False)
class AmqpLease:
    """A delivered message. Settle it exactly once with :meth:`ack` or :meth:`release`."""

    message: Message
    delivery_count: int
    _raw: Any = field(repr=False)
    _generation: int = field(repr=False)
    _queue: AmqpQueue = field(repr=False)
    settled: bool = False

    def ack(self) -> None:
        self._queue.ack_many([self])

    def release(self, delay: float = 0.0, *, park: bool = False) -> None:
        self._queue.release_many([self], delay, park=park)


class AmqpQueue:
    """A work queue on RabbitMQ. Thread-safe: publishing is serialised on one confirmed channel; one I/O
    thread owns the consuming channel, and acks are handed to it."""

    def __init__(self, url: str, name: str = "ironbus", partitions: int = 8, prefetch: int = 64,
                 delay_tiers: Sequence[int] = DELAY_TIERS, *, home: tuple[int, int] | None = None,
                 standby_after: float = 3.0, heartbeat: int = 30, pack: int = PACK_DEFAULT) -> None:
        if home is not None and not 0 <= home[0] < home[1]:
            raise ConfigError(f"queue home {home!r}: expected (index, count) with 0 <= index < count")
        check_pack(pack)
        self.topology = Topology(name, partitions, delay_tiers)
        self.url, self.name, self.partitions, self.prefetch = url, name, partitions, prefetch
        self.home, self.standby_after, self.heartbeat, self.pack = home, standby_after, heartbeat, pack
        self.delay_tiers = self.topology.delay_tiers
        self._publisher = ConfirmedPublisher(url)
        self._consumer = AmqpConsumer(url, name, self.topology.own_partitions(home), prefetch, standby_after,
                                      heartbeat)
        with self._publisher.sending("declare the queues") as sender:
            self.topology.declare(sender.channel)

    @property
    def standby_subscribed(self) -> bool:
        """True once this process also listens (as standby) on the other processes' partitions."""
        return self._consumer.standby_subscribed

    # -- publishing ----------------------------------------------------------------------------------------
    def publish(self, messages: Sequence[Message]) -> None:
        """Publish persistently; each message is confirmed by the broker before this returns. Messages of one
        partition go in packs (see :mod:`bus.queue.amqp_pack`), in publish order."""
        with self._publisher.sending() as sender:
            if self.pack == 1 or len(messages) == 1:
                for m in messages:
                    self._send(sender, m, self.name, self.topology.routing_key(m.key), count=0, due=None)
                return
            for routing_key, group in groups(messages, self.topology.routing_key, self.partitions, self.pack):
                if len(group) == 1:
                    self._send(sender, group[0], self.name, routing_key, count=0, due=None)
                else:
                    sender.send(encode(group), self.name, routing_key, {H_PACK: len(group)},
                                content_type=CONTENT_TYPE)

    @staticmethod
    def _send(sender: Sender, m: Message, exchange: str, routing_key: str, *, count: int, due: float | None) -> None:
        headers: dict[str, Any] = dict(m.headers)
        for name, value in ((H_KEY, m.key), (H_ROUTE, m.route), (H_TARGET, m.target), (H_DUE, due)):
            if value is not None:
                headers[name] = value
        if m.parks:
            headers[H_PARKS] = m.parks
        if count:
            headers[H_COUNT] = count
        sender.send(m.body, exchange, routing_key, headers)

    def held(self) -> int:
        """Messages received from RabbitMQ and waiting in this process for their key to be free (bus messages:
        each part of a pack counts)."""
        return self._consumer.counts()[0]

    # -- consuming -----------------------------------------------------------------------------------------
    def consume(self, max_messages: int, timeout: float) -> list[Lease]:
        """Up to ``max_messages`` leases, waiting at most ``timeout`` seconds for the first one (fewer, or
        none, when some that came back from a delay tier are not due yet: those go round again)."""
        parts, generation = self._consumer.take(max_messages, timeout)
        leases = [AmqpLease(message=message, delivery_count=count, _raw=raw, _generation=generation, _queue=self)
                  for _, message, count, raw in parts]
        now = time.time()
        early = [lease for lease in leases if float((lease._raw.headers or {}).get(H_DUE) or 0) > now + _DUE_SLACK]
        if not early:
            return list(leases)
        # a delay longer than the largest tier: back through a tier, not handed out and not counted as a delivery
        # (only plain messages carry x-ib-due: a pack is never republished as one)
        self._republish(early, lambda lease: float(lease._raw.headers[H_DUE]), count_delivery=False)
        return [lease for lease in leases if lease not in early]

    # -- settling ------------------------------------------------------------------------------------------
    @staticmethod
    def _own(leases: Sequence[Lease]) -> list[AmqpLease]:
        for lease in leases:
            if not isinstance(lease, AmqpLease):
                raise TypeError(f"not a lease of a RabbitMQ queue: {lease!r}")
        return list(leases)  # type: ignore[arg-type]

    def _settle(self, leases: Sequence[AmqpLease]) -> None:
        todo = []
        for lease in leases:
            if lease.settled:
                log.warning("queue.settled_twice", key=lease.message.key)
                continue
            lease.settled = True
            todo.append((lease.message.key, lease._generation, lease._raw))
        self._consumer.settle(todo)

    def ack_many(self, leases: Sequence[Lease]) -> None:
        """Acknowledge (the I/O thread sends the acks within milliseconds; a lost ack means redelivery)."""
        self._settle(self._own(leases))

    def publish_within(self, unit: UnitOfWork, messages: Sequence[Message]) -> None:
        """Publish now (confirmed), before ``unit`` commits: the broker cannot join the journal's transaction."""
        self.publish(messages)

    def ack_within(self, unit: UnitOfWork, leases: Sequence[Lease]) -> None:
        """Ack once ``unit`` committed: a batch is acked only after its outcomes are journaled."""
        owned = self._own(leases)

        def settle() -> None:
            self._settle(owned)

        unit.after_commit(settle)

    def release_many(self, leases: Sequence[Lease], delay: float = 0.0, *, park: bool = False) -> None:
        """Republish a copy to the delay tier covering ``delay`` (confirmed), then ack the original."""
        due = time.time() + delay if delay > 0 else None
        self._republish([lease for lease in self._own(leases) if not lease.settled], lambda lease: due, park=park)

    def _republish(self, leases: list[AmqpLease], due_of: Callable[[AmqpLease], float | None], *,
                   park: bool = False, count_delivery: bool = True) -> None:
        with self._publisher.sending() as sender:
            for lease in leases:
                m = lease.message
                if park:
                    m = Message(body=m.body, key=m.key, route=m.route, target=m.target, parks=m.parks + 1,
                                headers=m.headers)
                count = lease.delivery_count if count_delivery else lease.delivery_count - 1
                routing_key = lease._raw.delivery_info.get("routing_key") or self.topology.routing_key(m.key)
                due = due_of(lease)
                remaining = 0.0 if due is None else due - time.time()
                if remaining <= 0.05:
                    self._send(sender, m, self.name, routing_key, count=count, due=None)
                else:
                    self._send(sender, m, self.topology.delay_exchange(remaining), routing_key, count=count, due=due)
        self._settle(leases)

    # -- operations ----------------------------------------------------------------------------------------
    def depth(self) -> dict[str, int]:
        """``ready`` in the partition queues, ``delayed`` in the delay tiers, and ``leased`` by *this* process
        (handed out or prefetched; RabbitMQ does not count other consumers' unacked messages per queue).

        ``ready`` and ``delayed`` are the broker's counts of AMQP messages: a pack counts once, however many
        bus messages it holds. ``leased`` and ``buffered`` (this process) count bus messages."""
        ready = delayed = 0
        with self._publisher.sending("count messages") as sender:
            for q in self.topology.work_queues:
                ready += q.bind(sender.channel).queue_declare(passive=True).message_count
            for q in self.topology.delay_queues:
                delayed += q.bind(sender.channel).queue_declare(passive=True).message_count
        # prefetched-but-not-yet-handed-out messages are unacked at the broker, so not "ready" there
        buffered, in_flight = self._consumer.counts()
        return {"ready": ready, "leased": in_flight + buffered, "delayed": delayed, "buffered": buffered}

    def partition_depths(self) -> dict[str, int]:
        """Messages ready in each partition queue, by queue name (the console's Queue view, metrics): AMQP
        messages, a pack counting once (as in :meth:`depth`)."""
        with self._publisher.sending("count messages") as sender:
            return {q.name: int(q.bind(sender.channel).queue_declare(passive=True).message_count)
                    for q in self.topology.work_queues}

    def delete_topology(self) -> None:
        """Delete this queue's exchanges and queues with their messages (tests, decommissioning)."""
        with self._publisher.sending("delete the queues") as sender:
            self.topology.delete(sender.channel)

    def close(self) -> None:
        """Stop consuming (unsettled leases go back to the broker) and close both connections."""
        self._consumer.close()
        self._publisher.close()

