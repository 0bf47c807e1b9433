"""The RabbitMQ work queue, through kombu: for scale-out across processes and hosts.

Topology (all durable; messages persistent; publisher confirms; manual acks):

* exchange ``NAME`` (direct) with ``partitions`` queues ``NAME.p0`` … bound by routing key ``p0`` …, each
  declared ``x-single-active-consumer`` — every process consumes every partition, the broker lets exactly one
  consumer at a time receive from each, so a key (hashed to one partition) is processed by one process, in
  order. Keyless messages are spread round-robin.
* spreading partitions over processes: the broker makes the *first* consumer of a partition its active one, so
  a process that knows its place among N (``home=(index, N)``, set by ``ironbus run --processes``) subscribes
  to its own share of the partitions at once and to the others only ``standby_after`` seconds later, as a
  standby that takes over when the owner goes away. Without ``home`` it subscribes to all at once.
* delayed redelivery without a plugin: one fanout exchange + queue per delay tier (``NAME.delay.5s`` …) with
  a per-queue TTL that dead-letters back to ``NAME`` under the message's original routing key. A queue-wide
  TTL keeps expiry in FIFO order. A delay is rounded *up* to the next tier; one longer than the largest tier
  passes through that tier repeatedly until due (header ``x-ib-due``).

Within one process, a message whose key is already leased (or has an earlier message waiting) is held back
until that lease is settled, so the per-key ordering promise of :class:`bus.queue.base.Queue` holds for
concurrent worker threads too. Unlike the embedded queue, a *released* message goes to the back of its
partition, so later messages of its key may overtake it while it waits out its delay.

A crashed consumer's unacked messages are requeued by the broker. kombu/amqp connection failures surface
as :class:`bus.errors.TransientError`; a topology clash (a queue declared with other arguments) as
:class:`bus.errors.ConfigError`.
"""

from __future__ import annotations

import contextlib
import math
import socket
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import amqp.exceptions
import kombu as _kombu
import kombu.exceptions as kombu_errors
import structlog

from bus.backoff import Backoff
from bus.errors import ConfigError, TransientError
from bus.journal.unit import UnitOfWork
from bus.queue.base import Lease, Message

# kombu ships partial, untyped annotations; treat it as dynamic rather than scatter ignores.
kb: Any = _kombu

__all__ = ["DELAY_TIERS", "AmqpLease", "AmqpQueue", "partition_for"]

log = structlog.get_logger(__name__)

#: Delay tiers in seconds, smallest first.
DELAY_TIERS: tuple[int, ...] = (1, 5, 30, 120, 600, 3600)
CONFIRM_TIMEOUT = 30.0
#: While RabbitMQ is down, a publish fails at once for this long after a failed connection attempt, so webhook
#: requests are answered 503 (Retry-After) in milliseconds instead of each waiting for its own attempt.
PUBLISH_BACKOFF = 1.0
PUBLISH_CONNECT_TIMEOUT = 2.0
_DUE_SLACK = 0.05  # a message back from its delay tier this close to due is handed out
_H_KEY, _H_ROUTE, _H_TARGET, _H_PARKS, _H_COUNT, _H_DUE = (
    "x-ib-key", "x-ib-route", "x-ib-target", "x-ib-parks", "x-ib-count", "x-ib-due")
_OURS = {_H_KEY, _H_ROUTE, _H_TARGET, _H_PARKS, _H_COUNT, _H_DUE}
_BROKER_ERRORS = (kombu_errors.OperationalError, kombu_errors.ConnectionError, amqp.exceptions.ConnectionError,
                  amqp.exceptions.RecoverableConnectionError, ConnectionError, OSError, socket.timeout)


# Ack state of a delivery tag on the consuming channel (see AmqpQueue._flush_acks).
_OUTSTANDING, _SETTLED, _ACKED_ALONE = 0, 1, 2


def _tier_label(seconds: int) -> str:
    return f"{seconds // 3600}h" if seconds % 3600 == 0 else f"{seconds // 60}m" if seconds % 60 == 0 \
        else f"{seconds}s"


def partition_for(key: str, partitions: int) -> int:
    """The partition of a business key: crc32, not hash(), because every process must agree (hash() is
    salted per process)."""
    return zlib.crc32(key.encode()) % partitions


@contextmanager
def _broker_errors(doing: str) -> Iterator[None]:
    try:
        yield
    except amqp.exceptions.PreconditionFailed as exc:
        raise ConfigError(f"RabbitMQ refused to {doing}: {exc}; a queue or exchange of that name exists with "
                          "other arguments (delete it, or choose another queue name)") from None
    except _BROKER_ERRORS as exc:
        raise TransientError(f"RabbitMQ unavailable while trying to {doing}: {exc}; check that RabbitMQ is running "
                             "and the URL (--broker or $IRONBUS_BROKER) is right") from None


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
                 standby_after: float = 3.0, heartbeat: int = 30) -> None:
        if partitions < 1:
            raise ConfigError(f"queue partitions must be at least 1, got {partitions}")
        if home is not None and not 0 <= home[0] < home[1]:
            raise ConfigError(f"queue home {home!r}: expected (index, count) with 0 <= index < count")
        self.url, self.name, self.partitions, self.prefetch = url, name, partitions, prefetch
        self.home, self.standby_after = home, standby_after
        #: AMQP heartbeat (s): the broker takes a consumer cut off by the network for dead after about twice
        #: this, and only then gives its unacked messages and its partitions to a standby
        self.heartbeat = heartbeat
        #: True once this process also listens (as standby) on the other processes' partitions
        self.standby_subscribed = False
        self.delay_tiers = tuple(sorted(int(t) for t in delay_tiers))
        self.exchange = kb.Exchange(name, type="direct", durable=True, delivery_mode=2)
        self.work_queues = [
            kb.Queue(f"{name}.p{i}", self.exchange, routing_key=f"p{i}", durable=True,
                        queue_arguments={"x-single-active-consumer": True}) for i in range(partitions)]
        self.delay_exchanges: dict[int, Any] = {}
        self.delay_queues: list[Any] = []
        for tier in self.delay_tiers:
            ex = kb.Exchange(f"{name}.delay.{_tier_label(tier)}", type="fanout", durable=True, delivery_mode=2)
            self.delay_exchanges[tier] = ex
            self.delay_queues.append(kb.Queue(ex.name, ex, durable=True, queue_arguments={
                "x-message-ttl": tier * 1000, "x-dead-letter-exchange": name}))
        self._pub_lock = threading.Lock()
        self._pub_conn: Any | None = None
        self._producer: Any | None = None
        self._round_robin = 0
        self._down_until = 0.0  # monotonic time before which a publish fails fast (see PUBLISH_BACKOFF)
        self._down_reason = ""
        self._unconfirmed: set[int] = set()
        self._nacked = 0
        self._seq = 0
        # consumer side
        self._cond = threading.Condition()
        self._buffer: deque[Any] = deque()
        self._leased_keys: dict[str, int] = {}
        self._in_flight = 0
        self._acks: deque[tuple[int, Any]] = deque()
        # I/O thread only: delivery tags of the consuming channel in arrival order, and their ack state
        self._tags: deque[int] = deque()
        self._tag_state: dict[int, int] = {}
        self._generation = 0
        self._io: threading.Thread | None = None
        self._stopping = threading.Event()
        self._io_error: str | None = None
        with self._publisher() as producer:
            for q in [*self.work_queues, *self.delay_queues]:
                q.bind(producer.channel).declare()

    # -- publishing ----------------------------------------------------------------------------------------
    @contextmanager
    def _publisher(self) -> Iterator[Any]:
        with self._pub_lock, _broker_errors("publish"):
            try:
                if self._producer is None:
                    if time.monotonic() < self._down_until:
                        raise TransientError(f"RabbitMQ unavailable ({self._down_reason}); retry later")
                    self._pub_conn = kb.Connection(self.url, connect_timeout=PUBLISH_CONNECT_TIMEOUT)
                    try:
                        self._pub_conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0.2,
                                                         interval_max=0.2)
                    except _BROKER_ERRORS as exc:
                        self._down_until, self._down_reason = time.monotonic() + PUBLISH_BACKOFF, str(exc)[:200]
                        raise
                    channel = self._pub_conn.channel()
                    # Publisher confirms, awaited per batch rather than per message (kombu's confirm_publish
                    # transport option waits a round trip after every message: ~1,300 msg/s here).
                    channel.confirm_select()
                    channel.events["basic_ack"].add(self._confirmed)
                    channel.events["basic_nack"].add(self._refused)
                    self._unconfirmed, self._nacked, self._seq = set(), 0, 0
                    self._producer = kb.Producer(channel, exchange=self.exchange)
                yield self._producer
                self._await_confirms()
            except BaseException:
                self._drop_publisher()
                raise

    def _confirmed(self, tag: int, multiple: bool) -> None:
        if multiple:
            self._unconfirmed = {t for t in self._unconfirmed if t > tag}
        else:
            self._unconfirmed.discard(tag)

    def _refused(self, tag: int, multiple: bool) -> None:
        before = len(self._unconfirmed)
        self._confirmed(tag, multiple)
        self._nacked += before - len(self._unconfirmed)

    def _await_confirms(self) -> None:
        deadline = time.monotonic() + CONFIRM_TIMEOUT
        while self._unconfirmed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TransientError(f"RabbitMQ did not confirm {len(self._unconfirmed)} message(s) "
                                     f"within {CONFIRM_TIMEOUT:.0f}s")
            with contextlib.suppress(TimeoutError):
                conn: Any = self._pub_conn
                conn.drain_events(timeout=min(remaining, 1.0))
        if self._nacked:
            count, self._nacked = self._nacked, 0
            raise TransientError(f"RabbitMQ refused (nacked) {count} published message(s)")

    def _drop_publisher(self) -> None:
        conn, self._pub_conn, self._producer = self._pub_conn, None, None
        if conn is not None:
            try:
                conn.release()
            except Exception:  # noqa: BLE001 - the connection is already broken; closing is best effort
                pass

    def _partition(self, key: str | None) -> str:
        if key is None:
            self._round_robin = (self._round_robin + 1) % self.partitions
            return f"p{self._round_robin}"
        return f"p{partition_for(key, self.partitions)}"

    def publish(self, messages: Sequence[Message]) -> None:
        """Publish persistently; each message is confirmed by the broker before this returns."""
        with self._publisher() as producer:
            for m in messages:
                self._send(producer, m, self.exchange, self._partition(m.key), count=0, due=None)

    def _send(self, producer: Any, m: Message, exchange: Any, routing_key: str, *,
              count: int, due: float | None) -> None:
        headers: dict[str, Any] = dict(m.headers)
        for name, value in ((_H_KEY, m.key), (_H_ROUTE, m.route), (_H_TARGET, m.target), (_H_DUE, due)):
            if value is not None:
                headers[name] = value
        if m.parks:
            headers[_H_PARKS] = m.parks
        if count:
            headers[_H_COUNT] = count
        self._seq += 1
        self._unconfirmed.add(self._seq)
        producer.publish(m.body, exchange=exchange, routing_key=routing_key, headers=headers, delivery_mode=2,
                         content_type="application/octet-stream", content_encoding="binary", serializer=None)

    def held(self) -> int:
        """Messages received from RabbitMQ and waiting in this process for their key to be free."""
        with self._cond:
            return len(self._buffer)

    # -- consuming -----------------------------------------------------------------------------------------
    def consume(self, max_messages: int, timeout: float) -> list[Lease]:
        """Up to ``max_messages`` leases, waiting at most ``timeout`` seconds for the first one (fewer, or
        none, when some that came back from a delay tier are not due yet: those go round again)."""
        self._start_io()
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if self._io_error is not None and self._io is not None and not self._io.is_alive():
                    raise TransientError(f"RabbitMQ consumer stopped: {self._io_error}")
                leases = self._take(max_messages)
                remaining = deadline - time.monotonic()
                if leases or remaining <= 0:
                    break
                self._cond.wait(remaining)
        now = time.time()
        early = [lease for lease in self._own(leases) if float(lease._raw.headers.get(_H_DUE) or 0) > now + _DUE_SLACK]
        if not early:
            return list(leases)
        # a delay longer than the largest tier: back through a tier, not handed out and not counted as a delivery
        self._republish(early, lambda lease: float(lease._raw.headers[_H_DUE]), count_delivery=False)
        return [lease for lease in leases if lease not in early]

    def _take(self, limit: int) -> list[Lease]:
        """Hand out buffered messages whose key is free (caller holds the condition's lock)."""
        taken: list[Lease] = []
        kept: list[Any] = []
        waiting: set[str] = set()
        generation = self._generation
        buffer = self._buffer
        # Stop at the limit: what is behind it stays as it is, rather than being walked on every take (the
        # buffer holds up to partitions x prefetch messages).
        while buffer and len(taken) < limit:
            raw = buffer.popleft()
            key = raw.headers.get(_H_KEY)
            if key is not None and (key in waiting or key in self._leased_keys):
                kept.append(raw)
                waiting.add(key)
                continue
            if key is not None:
                self._leased_keys[key] = self._leased_keys.get(key, 0) + 1
            self._in_flight += 1
            taken.append(self._lease(raw, generation))
        buffer.extendleft(reversed(kept))
        return taken

    def _lease(self, raw: Any, generation: int) -> AmqpLease:
        h = raw.headers
        count = int(h.get(_H_COUNT, 0)) + 1 + (1 if raw.delivery_info.get("redelivered") else 0)
        message = Message(body=raw.body, key=h.get(_H_KEY), route=h.get(_H_ROUTE), target=h.get(_H_TARGET),
                          parks=int(h.get(_H_PARKS, 0)),
                          headers={k: str(v) for k, v in h.items() if k not in _OURS and not k.startswith("x-")})
        return AmqpLease(message=message, delivery_count=count, _raw=raw, _generation=generation, _queue=self)

    def _start_io(self) -> None:
        with self._cond:
            if self._io is None or not self._io.is_alive():
                self._stopping.clear()
                self._io_error = None
                self._io = threading.Thread(target=self._io_loop, name=f"amqp-consumer-{self.name}", daemon=True)
                self._io.start()

    def _io_loop(self) -> None:
        backoff = Backoff(0.2, 10.0)
        while not self._stopping.is_set():
            try:
                self._consume_connection()
                backoff.reset()
            except Exception as exc:  # noqa: BLE001 - the consumer must outlive any broker hiccup; it reconnects
                pause = backoff.next()
                log.warning("queue.amqp_reconnect", error=f"{type(exc).__name__}: {exc}", retry_in=pause)
                with self._cond:
                    self._io_error = str(exc)
                    self._generation += 1  # leases of the dead channel cannot be acked; the broker requeues them
                    self._buffer.clear()
                    self._leased_keys.clear()
                    self._in_flight = 0
                    self._acks.clear()
                    self._cond.notify_all()
                self._tags.clear()
                self._tag_state.clear()
                self._stopping.wait(pause)

    def _consume_connection(self) -> None:
        with kb.Connection(self.url, heartbeat=self.heartbeat) as conn:
            conn.ensure_connection(max_retries=1)
            channel = conn.channel()
            with self._cond:
                generation = self._generation
            on_message: Callable[[Any], None] = self._arrived
            own, others = self._own_partitions()
            self.standby_subscribed = False
            with kb.Consumer(channel, queues=own, on_message=on_message, no_ack=False,
                                prefetch_count=self.prefetch, auto_declare=False):
                last_heartbeat = time.monotonic()
                standby_at = time.monotonic() + self.standby_after if others else math.inf
                while not self._stopping.is_set():
                    self._flush_acks(generation, channel)
                    try:
                        conn.drain_events(timeout=0.01)
                    except TimeoutError:
                        pass
                    now = time.monotonic()
                    if now >= standby_at:
                        # the other processes' partitions: active here only if their owner is missing
                        standby = kb.Consumer(channel, queues=others, on_message=on_message, no_ack=False,
                                              prefetch_count=self.prefetch, auto_declare=False)
                        standby.consume()  # cancelled when the connection closes
                        standby_at = math.inf
                        self.standby_subscribed = True
                    if now - last_heartbeat > min(5.0, self.heartbeat / 4):
                        conn.heartbeat_check()
                        last_heartbeat = now
                self._flush_acks(generation, channel)

    def _own_partitions(self) -> tuple[list[Any], list[Any]]:
        """This process's partition queues (subscribed first) and the rest (subscribed later, as standby)."""
        if self.home is None:
            return list(self.work_queues), []
        index, count = self.home
        own = [q for i, q in enumerate(self.work_queues) if i % count == index]
        others = [q for i, q in enumerate(self.work_queues) if i % count != index]
        return (own, others) if own else (others, [])

    def _arrived(self, raw: Any) -> None:
        tag = raw.delivery_tag
        self._tags.append(tag)
        self._tag_state[tag] = _OUTSTANDING
        with self._cond:
            self._buffer.append(raw)
            self._cond.notify_all()

    def _flush_acks(self, generation: int, channel: Any) -> None:
        """Send the acks workers handed over. Messages are mostly settled in the order they arrived, so one
        ``multiple`` ack covers the settled run at the front of the channel's deliveries (one frame per batch
        instead of one per message); a message settled out of order is acked on its own at once."""
        settled: list[int] = []
        while self._acks:
            gen, raw = self._acks.popleft()
            if gen == generation:
                settled.append(raw.delivery_tag)
        if not settled:
            return
        state = self._tag_state
        for tag in settled:
            if tag in state:
                state[tag] = _SETTLED
        tags = self._tags
        upto = None
        while tags and state[tags[0]] != _OUTSTANDING:
            tag = tags.popleft()
            if state.pop(tag) == _SETTLED:
                upto = tag  # every delivery up to here is settled, or acked on its own already
        if upto is not None:
            channel.basic_ack(delivery_tag=upto, multiple=True)
        for tag in settled:
            if state.get(tag) == _SETTLED:  # behind a delivery still in work: ack it alone now
                channel.basic_ack(delivery_tag=tag, multiple=False)
                state[tag] = _ACKED_ALONE

    # -- settling ------------------------------------------------------------------------------------------
    @staticmethod
    def _own(leases: Sequence[Lease]) -> list[AmqpLease]:
        for lease in leases:
            if not isinstance(lease, AmqpLease):
                raise TypeError(f"not a lease of a RabbitMQ queue: {lease!r}")
        return list(leases)  # type: ignore[arg-type]

    def _settle(self, leases: Sequence[AmqpLease]) -> list[AmqpLease]:
        todo = []
        with self._cond:
            for lease in leases:
                if lease.settled:
                    log.warning("queue.settled_twice", key=lease.message.key)
                    continue
                lease.settled = True
                todo.append(lease)
                if lease._generation != self._generation:
                    continue  # its channel died: the broker has requeued it already
                key = lease.message.key
                if key is not None and key in self._leased_keys:
                    self._leased_keys[key] -= 1
                    if self._leased_keys[key] <= 0:
                        del self._leased_keys[key]
                self._in_flight -= 1
                self._acks.append((lease._generation, lease._raw))
            self._cond.notify_all()
        return todo

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
        with self._publisher() as producer:
            for lease in leases:
                m = lease.message
                if park:
                    m = Message(body=m.body, key=m.key, route=m.route, target=m.target, parks=m.parks + 1,
                                headers=m.headers)
                count = lease.delivery_count if count_delivery else lease.delivery_count - 1
                self._redeliver(producer, m, lease._raw.delivery_info.get("routing_key") or self._partition(m.key),
                                count, due_of(lease))
        self._settle(leases)

    def _redeliver(self, producer: Any, m: Message, routing_key: str, count: int,
                   due: float | None) -> None:
        remaining = 0.0 if due is None else due - time.time()
        if remaining <= 0.05:
            self._send(producer, m, self.exchange, routing_key, count=count, due=None)
            return
        tier = next((t for t in self.delay_tiers if t >= math.ceil(remaining)), self.delay_tiers[-1])
        self._send(producer, m, self.delay_exchanges[tier], routing_key, count=count, due=due)

    # -- operations ----------------------------------------------------------------------------------------
    def depth(self) -> dict[str, int]:
        """``ready`` in the partition queues, ``delayed`` in the delay tiers, and ``leased`` by *this* process
        (handed out or prefetched; RabbitMQ does not count other consumers' unacked messages per queue)."""
        ready = delayed = 0
        with self._publisher() as producer:
            for q in self.work_queues:
                ready += q.bind(producer.channel).queue_declare(passive=True).message_count
            for q in self.delay_queues:
                delayed += q.bind(producer.channel).queue_declare(passive=True).message_count
        with self._cond:
            # prefetched-but-not-yet-handed-out messages are unacked at the broker, so not "ready" there
            buffered = len(self._buffer)
            leased = self._in_flight + buffered
        return {"ready": ready, "leased": leased, "delayed": delayed, "buffered": buffered}

    def partition_depths(self) -> dict[str, int]:
        """Messages ready in each partition queue, by queue name (the console's Queue view, metrics)."""
        with self._publisher() as producer:
            return {q.name: int(q.bind(producer.channel).queue_declare(passive=True).message_count)
                    for q in self.work_queues}

    def delete_topology(self) -> None:
        """Delete this queue's exchanges and queues with their messages (tests, decommissioning)."""
        with self._publisher() as producer:
            for q in [*self.work_queues, *self.delay_queues]:
                bound = q.bind(producer.channel)
                bound.delete()
                bound.exchange.delete()

    def close(self) -> None:
        """Stop consuming (unsettled leases go back to the broker) and close both connections."""
        self._stopping.set()
        if self._io is not None:
            self._io.join(timeout=5)
        with self._pub_lock:
            self._drop_publisher()
