"""Choosing the work queue from a URL."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit, urlunsplit

from bus.errors import ConfigError
from bus.queue.base import Queue

if TYPE_CHECKING:
    from bus.journal import Journal

__all__ = ["broker_url", "open_queue"]


def open_queue(url: str | None, journal: Journal, *, lease_seconds: float = 30.0,
               home: tuple[int, int] | None = None) -> Queue:
    """The queue named by ``url``.

    * ``None`` or ``"embedded"`` — the crash-safe lease queue in the journal's own database (SQLite file or
      PostgreSQL), no server needed;
    * ``amqp://user:pass@host:5672/vhost`` (or ``amqps://``) — RabbitMQ. Query parameters ``name``,
      ``partitions`` and ``prefetch`` tune it, e.g. ``amqp://host//?name=ironbus&partitions=16``; without
      ``partitions`` a new topology gets one partition per process, and an existing one keeps its count
      (:mod:`bus.queue.amqp_partitions`); ``home=I/N``
      says this is host I (0-based) of N separate ``ironbus run`` processes (hosts), so the partitions are
      spread over them as ``--processes`` spreads them over its own (without it the first host to start is the
      active consumer of every partition and the others only stand by). With ``--processes M`` too, process j
      of host I takes place ``I*M + j`` among ``N*M``. ``heartbeat`` (seconds, default 30): a host cut off
      by the network holds its partitions' messages until the broker gives up on it, about twice this.
      ``pack`` (1 to 64, default 16): most messages of one publish and one partition carried in one AMQP message;
      ``pack=1`` publishes every message on its own (any version consumes both).

    ``home`` is this process's ``(index, count)`` among the processes of one ``ironbus run --processes``:
    RabbitMQ partitions are spread over them (see :class:`bus.queue.amqp.AmqpQueue`); the embedded queue needs
    no such thing (every consumer claims from one table).

    Raises :class:`ConfigError` for any other scheme or a malformed parameter.
    """
    if url is None or url == "embedded":
        from bus.queue.embedded import EmbeddedQueue

        return EmbeddedQueue(journal.engine, lease_seconds=lease_seconds)
    parts = urlsplit(url)
    if parts.scheme not in ("amqp", "amqps", "pyamqp"):
        raise ConfigError(f"broker URL {url!r}: unsupported scheme {parts.scheme!r}; "
                          "expected 'embedded' (default) or amqp://user:password@host:5672/vhost")
    from bus.queue.amqp_pack import PACK_DEFAULT, check_pack

    params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = sorted(set(params) - {"name", "partitions", "prefetch", "home", "heartbeat", "pack"})
    if unknown:
        raise ConfigError(f"broker URL: unknown parameter(s) {', '.join(unknown)}; "
                          "known: name, partitions, prefetch, home, heartbeat, pack")
    if "home" in params:
        index, _, count = params["home"].partition("/")
        if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
            raise ConfigError(f"broker URL: home={params['home']!r}: expected I/N, this host's place among N "
                              "hosts, 0 <= I < N (e.g. home=0/3)")
        # process j of M on host i of N is place i*M + j among N*M
        home = (int(index) * home[1] + home[0], int(count) * home[1]) if home else (int(index), int(count))
    try:
        asked = int(params["partitions"]) if "partitions" in params else None
        prefetch = int(params.get("prefetch", 64))
        heartbeat = int(params.get("heartbeat", 30))
        pack = int(params.get("pack", PACK_DEFAULT))
    except ValueError as exc:
        raise ConfigError(f"broker URL: partitions, prefetch, heartbeat and pack must be integers ({exc})") from None
    check_pack(pack)
    if asked is not None and asked < 1:
        raise ConfigError(f"broker URL: partitions={asked}; expected at least 1")
    from bus.queue.amqp import AmqpQueue
    from bus.queue.amqp_partitions import partitions_for

    server, name = urlunsplit(parts._replace(query="")), params.get("name", "ironbus")
    return AmqpQueue(server, name=name, partitions=partitions_for(journal, server, name, asked, home),
                     prefetch=prefetch, home=home, heartbeat=heartbeat, pack=pack)


def broker_url(explicit: str | None) -> str | None:
    """The broker URL: the flag, else ``$IRONBUS_BROKER``, else None (the embedded queue)."""
    return explicit or os.environ.get("IRONBUS_BROKER") or None
