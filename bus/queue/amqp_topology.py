"""The RabbitMQ queue's topology: exchanges, partition queues, delay tiers, and the broker's errors at the edge.

All durable. Exchange ``NAME`` (direct) routes key ``p<i>`` to queue ``NAME.p<i>``, declared
``x-single-active-consumer``; one fanout exchange + queue per delay tier (``NAME.delay.5s`` …) holds messages for
the tier's TTL and dead-letters them back to ``NAME`` under their original routing key (a queue-wide TTL keeps
expiry in FIFO order). See :mod:`bus.queue.amqp` for how the pieces are used.
"""

from __future__ import annotations

import math
import socket
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import amqp.exceptions
import kombu as _kombu
import kombu.exceptions as kombu_errors

from bus.errors import ConfigError, TransientError

# kombu ships partial, untyped annotations; treat it as dynamic rather than scatter ignores.
kb: Any = _kombu

__all__ = ["BROKER_ERRORS", "DELAY_TIERS", "HEADERS", "Topology", "broker_errors", "partition_for"]

#: Delay tiers in seconds, smallest first.
DELAY_TIERS: tuple[int, ...] = (1, 5, 30, 120, 600, 3600)
#: Header names of the bus's own fields (key, route, target, parks, delivery count, due time).
H_KEY, H_ROUTE, H_TARGET, H_PARKS, H_COUNT, H_DUE = (
    "x-ib-key", "x-ib-route", "x-ib-target", "x-ib-parks", "x-ib-count", "x-ib-due")
HEADERS = frozenset({H_KEY, H_ROUTE, H_TARGET, H_PARKS, H_COUNT, H_DUE})
BROKER_ERRORS = (kombu_errors.OperationalError, kombu_errors.ConnectionError, amqp.exceptions.ConnectionError,
                 amqp.exceptions.RecoverableConnectionError, ConnectionError, OSError, socket.timeout)


def tier_label(seconds: int) -> str:
    return f"{seconds // 3600}h" if seconds % 3600 == 0 else f"{seconds // 60}m" if seconds % 60 == 0 \
        else f"{seconds}s"


def partition_for(key: str, partitions: int) -> int:
    """The partition of a business key: crc32, not hash(), because every process must agree (hash() is
    salted per process)."""
    return zlib.crc32(key.encode()) % partitions


@contextmanager
def broker_errors(doing: str) -> Iterator[None]:
    """Broker failures as the bus's errors: a declaration clash is a ConfigError, anything else transient."""
    try:
        yield
    except amqp.exceptions.PreconditionFailed as exc:
        raise ConfigError(f"RabbitMQ refused to {doing}: {exc}; a queue or exchange of that name exists with "
                          "other arguments (delete it, or choose another queue name)") from None
    except BROKER_ERRORS as exc:
        raise TransientError(f"RabbitMQ unavailable while trying to {doing}: {exc}; check that RabbitMQ is running "
                             "and the URL (--broker or $IRONBUS_BROKER) is right") from None


class Topology:
    """The exchanges and queues of one bus queue ``name`` (declared by :meth:`declare`)."""

    def __init__(self, name: str, partitions: int, delay_tiers: Sequence[int]) -> None:
        if partitions < 1:
            raise ConfigError(f"queue partitions must be at least 1, got {partitions}")
        self.name, self.partitions = name, partitions
        self.delay_tiers = tuple(sorted(int(t) for t in delay_tiers))
        self.exchange = kb.Exchange(name, type="direct", durable=True, delivery_mode=2)
        self.work_queues = [
            kb.Queue(f"{name}.p{i}", self.exchange, routing_key=f"p{i}", durable=True,
                     queue_arguments={"x-single-active-consumer": True}) for i in range(partitions)]
        self.delay_exchanges: dict[int, Any] = {}
        self.delay_queues: list[Any] = []
        for tier in self.delay_tiers:
            ex = kb.Exchange(f"{name}.delay.{tier_label(tier)}", type="fanout", durable=True, delivery_mode=2)
            self.delay_exchanges[tier] = ex
            self.delay_queues.append(kb.Queue(ex.name, ex, durable=True, queue_arguments={
                "x-message-ttl": tier * 1000, "x-dead-letter-exchange": name}))
        self._round_robin = 0

    def declare(self, channel: Any) -> None:
        for q in [*self.work_queues, *self.delay_queues]:
            q.bind(channel).declare()

    def delete(self, channel: Any) -> None:
        for q in [*self.work_queues, *self.delay_queues]:
            bound = q.bind(channel)
            bound.delete()
            bound.exchange.delete()

    def routing_key(self, key: str | None) -> str:
        """The partition's routing key for a business key; keyless messages go round-robin."""
        if key is None:
            self._round_robin = (self._round_robin + 1) % self.partitions
            return f"p{self._round_robin}"
        return f"p{partition_for(key, self.partitions)}"

    def delay_exchange(self, remaining: float) -> str:
        """The delay tier that covers ``remaining`` seconds (rounded up; the largest when none does)."""
        tier = next((t for t in self.delay_tiers if t >= math.ceil(remaining)), self.delay_tiers[-1])
        return str(self.delay_exchanges[tier].name)

    def own_partitions(self, home: tuple[int, int] | None) -> tuple[list[str], list[str]]:
        """The names of this process's partition queues (subscribed first) and of the rest (subscribed later,
        as standby)."""
        names = [q.name for q in self.work_queues]
        if home is None:
            return names, []
        index, count = home
        own = [n for i, n in enumerate(names) if i % count == index]
        others = [n for i, n in enumerate(names) if i % count != index]
        return (own, others) if own else (others, [])
