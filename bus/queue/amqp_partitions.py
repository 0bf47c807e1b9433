"""How many partition queues a RabbitMQ topology has: chosen once, recorded in the journal, the same for every process.

Every process that publishes must hash a key to the partition the others consume it from, so the count is one
fact of the topology, not a setting of each process. :func:`partitions_for` settles it:

* a count recorded in the journal (``ib_adapter_state``, system ``rabbitmq:NAME``) is the count. A URL that asks
  for another one is refused: it would send a key's later events to another partition than its earlier ones;
* else the partition queues that exist on the broker (a topology made before the count was recorded) are
  counted and that count is recorded;
* else (a new topology) the URL's ``partitions``, or one partition per bus process: ``--processes`` of this
  host times the hosts of ``home=I/N``, or this machine's cores, at least 2. The broker's and the client's work
  is per AMQP message, and the messages of one publish travel together only where they go to one partition
  (packs, :mod:`bus.queue.amqp_pack`): with webhooks answered one by one a group commit holds a few events, and
  spread over more partitions than processes they went out as one AMQP message each;
* two processes creating one topology at once both record theirs only if none is recorded yet
  (``INSERT … ON CONFLICT DO NOTHING``) and then both read the one that was.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import amqp.exceptions
import kombu as _kombu

from bus.errors import ConfigError
from bus.layout import usable_cpus
from bus.queue.amqp_topology import broker_errors

if TYPE_CHECKING:
    from bus.journal import Journal

kb: Any = _kombu

__all__ = ["MAX_NEW", "default_partitions", "existing_partitions", "partitions_for"]

#: A new topology's count is at most this (above it a process buffers partitions x prefetch x pack events).
MAX_NEW = 32
_STATE_NAME = "partitions"


def default_partitions(home: tuple[int, int] | None) -> int:
    """One partition per bus process: ``home``'s count of places (processes of all hosts), else this machine's
    cores (``ironbus run``'s default, one process per core); at least 2, at most :data:`MAX_NEW`."""
    places = home[1] if home is not None else usable_cpus()
    return max(2, min(places, MAX_NEW))


def existing_partitions(url: str, name: str) -> int:
    """How many partition queues ``NAME.p0``, ``NAME.p1`` … the broker has, in a row from ``p0`` (0: none)."""
    count = 0
    with broker_errors("look up the existing partition queues"), kb.Connection(url, connect_timeout=10) as conn:
        channel = conn.channel()
        while True:
            try:
                channel.queue_declare(queue=f"{name}.p{count}", passive=True)
            except amqp.exceptions.NotFound:  # the broker closes the channel: this one was the last
                return count
            count += 1


def partitions_for(journal: Journal, url: str, name: str, asked: int | None, home: tuple[int, int] | None) -> int:
    """The partition count of the topology ``name`` (see the module's docstring); raises :class:`ConfigError`
    when ``asked`` (the URL's ``partitions``) is not the topology's."""
    from bus.journal.adapterstate import JournalAdapterStore

    store = JournalAdapterStore(journal.engine, f"rabbitmq:{name}")
    recorded = store.get(_STATE_NAME)
    origin = "recorded in the journal"
    if recorded is None:
        found = existing_partitions(url, name)
        if found:
            chosen, origin = found, "found on the broker"
        else:
            chosen, origin = (asked, "asked") if asked is not None else (default_partitions(home), "chosen")
        recorded = store.put_once(_STATE_NAME, str(chosen))
    if not recorded.isdigit() or int(recorded) < 1:
        raise ConfigError(f"the journal's ib_adapter_state row (system 'rabbitmq:{name}', name 'partitions') holds "
                          f"{recorded!r}, not a partition count; delete that row and the bus reads the count off the "
                          "broker again")
    count = int(recorded)
    if asked is not None and asked != count:
        raise ConfigError(
            f"broker URL: partitions={asked}, but queue {name!r} has {count} partitions ({origin}); a key would go to "
            f"another partition than its earlier events. Leave partitions out to use {count}, or give the queue "
            f"another name (name=…) for a new topology once {name!r} is drained (ironbus status shows its depth)")
    return count
