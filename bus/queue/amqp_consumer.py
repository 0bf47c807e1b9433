"""Consuming from RabbitMQ: one I/O thread owns the consuming connection; worker threads take from its buffer.

The I/O thread subscribes to the partition queues (with ``home``: its own share at once and the others after
``standby_after`` seconds, as a standby that the broker activates only when their owner is gone), reads
deliveries into a buffer, sends the acks workers hand back, and answers heartbeats. It consumes through py-amqp
directly, and reads the socket a buffer at a time: py-amqp reads each frame in three exact ``recv`` calls and a
delivery is three frames, so a message cost nine system calls, each of them a hand-over of the GIL to a busy
worker thread and back.

The buffer holds bus messages (*parts*): a pack (:mod:`bus.queue.amqp_pack`) is unpacked by the I/O thread as it
arrives, into one buffer entry per part, and its delivery tag is acked once the last of its parts is settled.

Per-key order within the process: a message whose key is already leased, or has an earlier message waiting, is
held back in the buffer until that lease is settled. A broken connection is reconnected with back-off; its
unacked messages go back to the broker, and leases of it can no longer be acked (their *generation* is old).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, TypeAlias

import kombu as _kombu
import structlog

from bus.backoff import Backoff
from bus.errors import TransientError
from bus.queue.amqp_pack import PackError, delivery_count, unpack
from bus.queue.base import Message

kb: Any = _kombu

__all__ = ["AmqpConsumer", "Part"]

#: A buffered bus message: (key, message, delivery count, the AMQP delivery it came in — one pack's parts share it)
Part: TypeAlias = tuple[str | None, Message, int, Any]

log = structlog.get_logger(__name__)

#: Bytes asked of the socket per read (py-amqp keeps what is beyond the frame it wanted for the next one).
READ_CHUNK = 1 << 16
#: How long the I/O thread waits for a frame before it sends the acks handed to it.
DRAIN_TIMEOUT = 0.01
#: Connect timeout, and the socket's read and write timeout outside the I/O thread's own short reads: a broker
#: that accepts the connection but never answers its channel and consume requests (seen once while a loaded node
#: was starting up again after ``rabbitmqctl stop_app``) would otherwise hold the I/O thread, and with it every
#: delivery of the process, for good. A timeout raises, and the thread reconnects.
CONSUMER_TIMEOUT = 10.0

# Ack state of a delivery tag on the consuming channel (see AmqpConsumer._flush_acks): a positive state is the
# number of its parts not settled yet.
_SETTLED, _ACKED_ALONE = 0, -1


def _buffered_reads(connection: Any) -> None:
    """Make py-amqp read the socket ``READ_CHUNK`` bytes at a time instead of exactly one frame part at a time.
    Its ``_read(n)`` loops ``recv(n - len(buffer))`` and keeps whatever arrives beyond ``n`` for the next read,
    so asking for more is safe."""
    transport: Any = getattr(connection.connection, "transport", None)
    recv = getattr(transport, "_quick_recv", None)
    if transport is None or recv is None:
        return

    def read(n: int) -> Any:
        return recv(max(n, READ_CHUNK))

    transport._quick_recv = read


class AmqpConsumer:
    """The consuming side of one :class:`~bus.queue.amqp.AmqpQueue`. Thread-safe."""

    def __init__(self, url: str, name: str, queues: tuple[list[str], list[str]], prefetch: int,
                 standby_after: float, heartbeat: int = 30) -> None:
        self.url, self.name, self.prefetch, self.standby_after = url, name, prefetch, standby_after
        #: AMQP heartbeat (s): the broker takes a consumer cut off by the network for dead after about twice
        #: this, and only then gives its unacked messages and its partitions to a standby
        self.heartbeat = heartbeat
        self.own, self.others = queues
        #: True once this process also listens (as standby) on the other processes' partitions
        self.standby_subscribed = False
        self.cond = threading.Condition()
        self.buffer: deque[Part] = deque()
        self.leased_keys: dict[str, int] = {}
        self.in_flight = 0
        self.generation = 0
        self._acks: deque[tuple[int, Any]] = deque()
        # I/O thread only: delivery tags of the consuming channel in arrival order, and their ack state
        self._tags: deque[int] = deque()
        self._tag_state: dict[int, int] = {}
        self._io: threading.Thread | None = None
        self._stopping = threading.Event()
        self._io_error: str | None = None

    # -- worker side (callers hold no lock) ------------------------------------------------------------------
    def take(self, limit: int, timeout: float) -> tuple[list[Part], int]:
        """Up to ``limit`` buffered messages whose key is free, waiting at most ``timeout`` seconds for the
        first; with the generation they belong to."""
        self.start()
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                if self._io_error is not None and self._io is not None and not self._io.is_alive():
                    raise TransientError(f"RabbitMQ consumer stopped: {self._io_error}")
                taken = self._take(limit)
                remaining = deadline - time.monotonic()
                if taken or remaining <= 0:
                    return taken, self.generation
                self.cond.wait(remaining)

    def _take(self, limit: int) -> list[Part]:
        taken: list[Part] = []
        kept: list[Part] = []
        waiting: set[str] = set()
        buffer, leased = self.buffer, self.leased_keys
        # Stop at the limit: what is behind it stays as it is, rather than being walked on every take (the
        # buffer holds up to partitions x prefetch x pack messages).
        while buffer and len(taken) < limit:
            part = buffer.popleft()
            key = part[0]
            if key is not None and (key in waiting or key in leased):
                kept.append(part)
                waiting.add(key)
                continue
            if key is not None:
                leased[key] = leased.get(key, 0) + 1
            self.in_flight += 1
            taken.append(part)
        buffer.extendleft(reversed(kept))
        return taken

    def settle(self, settled: Sequence[tuple[str | None, int, Any]]) -> None:
        """Free the keys of settled messages ``(key, generation, raw)`` and hand their acks to the I/O thread
        (a message of a dead channel is not acked: the broker has requeued it already). ``raw`` is the delivery
        the message came in; for a part of a pack, the I/O thread acks it once every part is settled."""
        with self.cond:
            for key, generation, raw in settled:
                if generation != self.generation:
                    continue
                if key is not None and key in self.leased_keys:
                    self.leased_keys[key] -= 1
                    if self.leased_keys[key] <= 0:
                        del self.leased_keys[key]
                self.in_flight -= 1
                self._acks.append((generation, raw))
            self.cond.notify_all()

    def counts(self) -> tuple[int, int]:
        """(buffered, handed out and not settled) in this process."""
        with self.cond:
            return len(self.buffer), self.in_flight

    # -- the I/O thread --------------------------------------------------------------------------------------
    def start(self) -> None:
        with self.cond:
            if self._io is None or not self._io.is_alive():
                self._stopping.clear()
                self._io_error = None
                self._io = threading.Thread(target=self._io_loop, name=f"amqp-consumer-{self.name}", daemon=True)
                self._io.start()

    def close(self) -> None:
        self._stopping.set()
        if self._io is not None:
            self._io.join(timeout=5)

    def _io_loop(self) -> None:
        backoff = Backoff(0.2, 10.0)
        while not self._stopping.is_set():
            try:
                self._consume_connection()
                backoff.reset()
            except Exception as exc:  # noqa: BLE001 - the consumer must outlive any broker hiccup; it reconnects
                pause = backoff.next()
                log.warning("queue.amqp_reconnect", error=f"{type(exc).__name__}: {exc}", retry_in=pause)
                with self.cond:
                    self._io_error = str(exc)
                    self.generation += 1  # leases of the dead channel cannot be acked; the broker requeues them
                    self.buffer.clear()
                    self.leased_keys.clear()
                    self.in_flight = 0
                    self._acks.clear()
                    self.cond.notify_all()
                self._tags.clear()
                self._tag_state.clear()
                self._stopping.wait(pause)

    def _subscribe(self, channel: Any, queues: list[str]) -> None:
        channel.basic_qos(0, self.prefetch, False)  # per consumer: each partition gets its own prefetch
        for queue in queues:
            channel.basic_consume(queue=queue, callback=self._arrived, no_ack=False)

    def _consume_connection(self) -> None:
        with kb.Connection(self.url, heartbeat=self.heartbeat, connect_timeout=CONSUMER_TIMEOUT,
                           transport_options={"read_timeout": CONSUMER_TIMEOUT,
                                              "write_timeout": CONSUMER_TIMEOUT}) as conn:
            conn.ensure_connection(max_retries=1)
            _buffered_reads(conn)
            channel = conn.channel()
            with self.cond:
                generation = self.generation
            self.standby_subscribed = False
            self._subscribe(channel, self.own)  # cancelled when the connection closes
            last_heartbeat = time.monotonic()
            standby_at = time.monotonic() + self.standby_after if self.others else math.inf
            while not self._stopping.is_set():
                self._flush_acks(generation, channel)
                try:
                    conn.drain_events(timeout=DRAIN_TIMEOUT)
                except TimeoutError:
                    pass
                now = time.monotonic()
                if now >= standby_at:
                    # the other processes' partitions: active here only if their owner is missing
                    self._subscribe(channel, self.others)
                    standby_at = math.inf
                    self.standby_subscribed = True
                if now - last_heartbeat > min(5.0, self.heartbeat / 4):
                    conn.heartbeat_check()
                    last_heartbeat = now
            self._flush_acks(generation, channel)

    def _arrived(self, raw: Any) -> None:
        try:
            messages = unpack(raw)
            count = delivery_count(raw)
        except (PackError, ValueError, TypeError) as exc:
            # Not lost, and not a crash of this thread (which would reconnect and get it again, for ever): handed
            # out whole, as one message without key whose body the worker cannot decode, so it is dead-lettered.
            log.warning("queue.amqp_unreadable_message", queue=self.name,
                        partition=raw.delivery_info.get("routing_key"), error=str(exc))
            body = raw.body  # py-amqp decodes a body whose content_encoding names a text codec
            messages, count = [Message(body=body if isinstance(body, bytes) else str(body or "").encode())], 1
        tag = raw.delivery_tag
        self._tags.append(tag)
        self._tag_state[tag] = len(messages)
        with self.cond:
            if len(messages) == 1:
                self.buffer.append((messages[0].key, messages[0], count, raw))
            else:
                self.buffer.extend([(m.key, m, count, raw) for m in messages])
            self.cond.notify_all()

    def _flush_acks(self, generation: int, channel: Any) -> None:
        """Send the acks workers handed over. A delivery is settled when the last of its parts is (a plain
        message is one part). Deliveries are mostly settled in the order they arrived, so one ``multiple`` ack
        covers the settled run at the front of the channel's deliveries (one frame per batch instead of one per
        message); a delivery settled out of order is acked on its own at once."""
        if not self._acks:
            return
        handed: list[int] = []
        with self.cond:
            while self._acks:
                gen, raw = self._acks.popleft()
                if gen == generation:
                    handed.append(raw.delivery_tag)
        if not handed:
            return
        state = self._tag_state
        settled: list[int] = []
        for tag in handed:
            left = state.get(tag, _SETTLED)
            if left > 0:
                state[tag] = left - 1
                if left == 1:
                    settled.append(tag)
        if not settled:
            return
        tags = self._tags
        upto = None
        while tags and state[tags[0]] <= _SETTLED:
            tag = tags.popleft()
            if state.pop(tag) == _SETTLED:
                upto = tag  # every delivery up to here is settled, or acked on its own already
        if upto is not None:
            channel.basic_ack(delivery_tag=upto, multiple=True)
        for tag in settled:
            if state.get(tag) == _SETTLED:  # behind a delivery still in work: ack it alone now
                channel.basic_ack(delivery_tag=tag, multiple=False)
                state[tag] = _ACKED_ALONE
