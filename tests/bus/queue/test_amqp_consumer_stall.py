"""The consuming connection gives up on a broker that stops answering while it subscribes, and reconnects.

A proxy in front of the real RabbitMQ passes everything, except that on the consumer's first connection it stops
passing the broker's frames once the client opens its first channel: the client's "open a channel" and "consume"
requests go unanswered. A CI run most likely met this once, in tests/test_faults.py, while a loaded node started
again after ``rabbitmqctl stop_app``: without a socket timeout the consumer's I/O thread waited for that answer for
good, and the process delivered nothing more.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

from bus.queue import amqp_consumer
from bus.queue.amqp import AmqpQueue
from bus.queue.base import Message


class MutingProxy:
    """Forwards TCP to ``target``; on its ``nth`` connection, mutes the broker once the client sends a frame on a
    channel other than 0 (the connection's own channel, used for the handshake)."""

    def __init__(self, target: tuple[str, int], nth: int) -> None:
        self.target, self.nth = target, nth
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(8)
        self.port = self.server.getsockname()[1]
        self.connections = 0
        self.muted = threading.Event()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            broker = socket.create_connection(self.target)
            self._sockets += [client, broker]
            muting = self.connections == self.nth
            mute = threading.Event()
            threading.Thread(target=self._client_to_broker, args=(client, broker, mute if muting else None),
                             daemon=True).start()
            threading.Thread(target=self._broker_to_client, args=(broker, client, mute), daemon=True).start()

    def _client_to_broker(self, client: socket.socket, broker: socket.socket, mute: threading.Event | None) -> None:
        seen = b""
        while chunk := _recv(client):
            if mute is not None and not mute.is_set():
                seen += chunk
                if _opens_a_channel(seen):
                    mute.set()
                    self.muted.set()
            if not _send(broker, chunk):
                return

    @staticmethod
    def _broker_to_client(broker: socket.socket, client: socket.socket, mute: threading.Event) -> None:
        while chunk := _recv(broker):
            if not mute.is_set() and not _send(client, chunk):
                return

    def close(self) -> None:
        self.server.close()
        for sock in self._sockets:
            sock.close()


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def _send(sock: socket.socket, data: bytes) -> bool:
    try:
        sock.sendall(data)
    except OSError:  # the other side closed (the test is over, or the consumer gave up on it)
        return False
    return True


def _opens_a_channel(stream: bytes) -> bool:
    """Whether the client's bytes so far (protocol header, then frames) hold a frame on a channel above 0."""
    offset = 8  # b"AMQP\x00\x00\x09\x01"
    while len(stream) >= offset + 7:
        _kind, channel, size = struct.unpack_from(">BHI", stream, offset)
        if channel != 0:
            return True
        offset += 7 + size + 1
    return False


@pytest.fixture
def proxy(rabbitmq_url: str) -> Iterator[MutingProxy]:
    parts = urlsplit(rabbitmq_url)
    # the queue's publishing connection comes first (it declares the topology); the consumer's is the second
    found = MutingProxy((parts.hostname or "127.0.0.1", parts.port or 5672), nth=2)
    yield found
    found.close()


def test_a_consumer_whose_subscription_goes_unanswered_reconnects_and_consumes(
        rabbitmq_url: str, proxy: MutingProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(amqp_consumer, "CONSUMER_TIMEOUT", 1.0)
    name = f"ibtest-{uuid.uuid4().hex[:10]}"
    direct = AmqpQueue(rabbitmq_url, name=name, partitions=1)
    parts = urlsplit(rabbitmq_url)
    via_proxy = urlunsplit(parts._replace(netloc=f"{parts.username}:{parts.password}@127.0.0.1:{proxy.port}"))
    consumer = AmqpQueue(via_proxy, name=name, partitions=1)
    try:
        direct.publish([Message(b"waiting", key="K")])
        deadline = time.monotonic() + 30
        leases = []
        while not leases and time.monotonic() < deadline:
            leases = consumer.consume(1, 0.5)
        assert proxy.muted.is_set(), "the proxy never muted a connection: the test did not test the stall"
        assert [lease.message.body for lease in leases] == [b"waiting"]
        assert proxy.connections >= 3  # the publisher's, the muted consumer's, and the consumer's second
        leases[0].ack()
    finally:
        consumer.close()
        direct.close()
        direct.delete_topology()
