"""Publishing to RabbitMQ with publisher confirms, awaited once per batch.

One connection and one confirmed channel, serialised by a lock, publishing through a kombu ``Producer``. The
broker's acks are counted by delivery sequence and awaited at the end of each batch, not after every message
(kombu's ``confirm_publish`` option waits a round trip per message: ~1,300 msg/s here). While RabbitMQ is down, a
publish fails at once for :data:`PUBLISH_BACKOFF` seconds after a failed connection attempt, so webhook requests
are answered 503 (Retry-After) in milliseconds instead of each waiting for its own attempt.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import kombu as _kombu

from bus.errors import TransientError
from bus.queue.amqp_topology import BROKER_ERRORS, broker_errors

kb: Any = _kombu

__all__ = ["CONFIRM_TIMEOUT", "PUBLISH_BACKOFF", "ConfirmedPublisher", "Sender"]

CONFIRM_TIMEOUT = 30.0
PUBLISH_BACKOFF = 1.0
PUBLISH_CONNECT_TIMEOUT = 2.0
#: Socket read/write timeout of the publishing connection. Without one, a broker that accepts the TCP connection
#: but stops answering (seen while ``rabbitmqctl stop_app`` shuts a loaded node down) holds the publisher's lock,
#: and with it the ingest thread and every webhook request behind it, for as long as the socket stays open.
PUBLISH_SOCKET_TIMEOUT = 3.0


class Sender:
    """Sends persistent messages on the confirmed channel (inside :meth:`ConfirmedPublisher.sending`)."""

    def __init__(self, publisher: ConfirmedPublisher, producer: Any) -> None:
        self._publisher = publisher
        self.producer = producer
        self.channel = producer.channel

    def send(self, body: bytes, exchange: str, routing_key: str, headers: dict[str, Any], *,
             content_type: str = "application/octet-stream") -> None:
        self._publisher.sent()
        self.producer.publish(body, exchange=exchange, routing_key=routing_key, headers=headers, delivery_mode=2,
                              content_type=content_type, content_encoding="binary", serializer=None)


class ConfirmedPublisher:
    """The publishing connection of one queue. Thread-safe."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.Lock()
        self._conn: Any | None = None
        self._sender: Sender | None = None
        self._down_until = 0.0  # monotonic time before which a publish fails fast (see PUBLISH_BACKOFF)
        self._down_reason = ""
        self._unconfirmed: set[int] = set()
        self._nacked = 0
        self._seq = 0

    @contextmanager
    def sending(self, doing: str = "publish") -> Iterator[Sender]:
        """A :class:`Sender`; every message sent through it is confirmed by the broker when the block ends."""
        with self._lock, broker_errors(doing):
            try:
                if self._sender is None:
                    self._connect()
                assert self._sender is not None
                yield self._sender
                self._await_confirms()
            except BaseException:
                self.drop()
                raise

    def _connect(self) -> None:
        if time.monotonic() < self._down_until:
            raise TransientError(f"RabbitMQ unavailable ({self._down_reason}); retry later")
        self._conn = kb.Connection(self.url, connect_timeout=PUBLISH_CONNECT_TIMEOUT,
                                   transport_options={"read_timeout": PUBLISH_SOCKET_TIMEOUT,
                                                      "write_timeout": PUBLISH_SOCKET_TIMEOUT})
        try:
            # One attempt: the caller (a webhook answering 503, a worker's retry) is the one that tries again.
            self._conn.ensure_connection(max_retries=0)
            channel = self._conn.channel()
            channel.confirm_select()
        except BROKER_ERRORS as exc:
            self._down_until, self._down_reason = time.monotonic() + PUBLISH_BACKOFF, str(exc)[:200]
            raise
        channel.events["basic_ack"].add(self._confirmed)
        channel.events["basic_nack"].add(self._refused)
        self._unconfirmed, self._nacked, self._seq = set(), 0, 0
        self._sender = Sender(self, kb.Producer(channel, auto_declare=False))

    def sent(self) -> None:
        """Count one message published on the confirmed channel (its delivery sequence number)."""
        self._seq += 1
        self._unconfirmed.add(self._seq)

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
                conn: Any = self._conn
                conn.drain_events(timeout=min(remaining, 1.0))
        if self._nacked:
            count, self._nacked = self._nacked, 0
            raise TransientError(f"RabbitMQ refused (nacked) {count} published message(s)")

    def drop(self) -> None:
        """Close the connection (a broken one, or at the end); the next publish connects again."""
        conn, self._conn, self._sender = self._conn, None, None
        if conn is not None:
            try:
                conn.release()
            except Exception:  # noqa: BLE001 - the connection is already broken; closing is best effort
                pass

    def close(self) -> None:
        with self._lock:
            self.drop()
