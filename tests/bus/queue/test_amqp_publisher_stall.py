"""The publishing connection gives up on a broker that accepts TCP connections and never answers."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from bus.errors import TransientError
from bus.queue import amqp_publisher
from bus.queue.amqp_publisher import ConfirmedPublisher


@pytest.fixture
def mute_broker() -> Iterator[tuple[int, list[socket.socket]]]:
    """A listening socket that accepts connections and never sends a byte (a node stalled while stopping)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            held.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1], held
    server.close()
    for conn in held:
        conn.close()


def test_a_mute_broker_fails_the_publish_after_one_attempt_then_fast(
        mute_broker: tuple[int, list[socket.socket]], monkeypatch: pytest.MonkeyPatch) -> None:
    port, held = mute_broker
    monkeypatch.setattr(amqp_publisher, "PUBLISH_CONNECT_TIMEOUT", 0.3)
    monkeypatch.setattr(amqp_publisher, "PUBLISH_BACKOFF", 60.0)
    publisher = ConfirmedPublisher(f"amqp://guest:guest@127.0.0.1:{port}//")
    outcome: list[BaseException] = []

    def publish() -> None:
        try:
            with publisher.sending():
                pass
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)

    worker = threading.Thread(target=publish, daemon=True)
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), "the publish hung on a broker that never answers"
    assert len(outcome) == 1 and isinstance(outcome[0], TransientError)
    assert len(held) == 1  # one attempt: the caller (a 503'd vendor, a worker's retry) is the one that retries
    with pytest.raises(TransientError, match="RabbitMQ unavailable"):  # within the backoff: no new attempt
        with publisher.sending():
            pass
    assert len(held) == 1
