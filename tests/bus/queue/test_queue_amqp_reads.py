"""The RabbitMQ consumer's buffered socket reads (no broker needed): py-amqp must keep what a read brings beyond
the frame it asked for, or frames would be lost."""

from __future__ import annotations

import struct
from types import SimpleNamespace

from amqp.transport import TCPTransport

from bus.queue.amqp_consumer import READ_CHUNK, _buffered_reads


class _Socket:
    """A socket whose recv hands out at most what is asked, from one byte stream, counting the calls."""

    def __init__(self, data: bytes) -> None:
        self.data, self.calls = data, 0

    def sendall(self, data: bytes) -> None:  # pragma: no cover - nothing is written here
        raise AssertionError("no writes expected")

    def recv(self, n: int) -> bytes:
        self.calls += 1
        out, self.data = self.data[:n], self.data[n:]
        return out


def _frame(channel: int, payload: bytes) -> bytes:
    return struct.pack(">BHI", 1, channel, len(payload)) + payload + b"\xce"


def test_buffered_reads_parse_every_frame_with_one_recv_instead_of_three_per_frame() -> None:
    payloads = [bytes([n]) * (100 + n) for n in range(30)]
    sock = _Socket(b"".join(_frame(n, p) for n, p in enumerate(payloads)))
    transport = TCPTransport.__new__(TCPTransport)
    transport.sock = sock
    transport._setup_transport()
    _buffered_reads(SimpleNamespace(connection=SimpleNamespace(transport=transport)))
    frames = [transport.read_frame() for _ in payloads]
    assert [(channel, bytes(payload)) for _, channel, payload in frames] == list(enumerate(payloads))
    assert sock.calls == 1  # 30 frames of ~120 bytes in one read of up to READ_CHUNK bytes (unbuffered: 90)
    assert len(sock.data) == 0 and READ_CHUNK > 30 * 140
