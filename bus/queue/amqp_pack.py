"""The RabbitMQ queue's wire format: one bus message per AMQP message, or several of one partition in a *pack*.

RabbitMQ's cost (and kombu's publish, py-amqp's consume) is per AMQP message, so :meth:`AmqpQueue.publish
<bus.queue.amqp.AmqpQueue.publish>` puts the messages of one call that go to one partition into packs of up to
``pack`` parts and :data:`PACK_BYTES` of bodies, in publish order. A single message keeps the plain format (body
= the event, the bus's fields in ``x-ib-*`` headers), byte for byte what older versions publish and consume.

A pack is an AMQP message with content type :data:`CONTENT_TYPE` and header :data:`H_PACK` = its number of parts;
its body is::

    b"IBP1" | uint32 big-endian n | n bytes of JSON [[key, route, target, parks, headers, body_len], ...] | bodies

One JSON document for the pack's fields (one parse per pack rather than one per part) and the bodies
concatenated raw. A pack never carries ``x-ib-due`` or ``x-ib-count``: a released or delayed message is
republished on its own, in the plain format.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import orjson

from bus.errors import ConfigError
from bus.queue.amqp_topology import H_COUNT, H_KEY, H_PARKS, H_ROUTE, H_TARGET, HEADERS
from bus.queue.base import Message

__all__ = ["CONTENT_TYPE", "H_PACK", "PACK_BYTES", "PACK_DEFAULT", "PACK_MAX", "PackError", "check_pack", "encode",
           "groups", "unpack"]

#: Content type and header (number of parts) that mark a pack.
CONTENT_TYPE = "application/x-ironbus-pack"
H_PACK = "x-ib-pack"
#: Most parts a pack may be configured to hold (``pack=`` in the broker URL), and the default. 16 parts take
#: about 94% of the per-message cost off, 64 about 98%; but prefetch counts AMQP messages, so what a process
#: buffers grows with the pack size (see :mod:`bus.queue.amqp`).
PACK_MAX = 64
PACK_DEFAULT = 16
#: Most bytes of bodies in one pack (a longer group is split; a single larger message goes alone).
PACK_BYTES = 256 * 1024

_MAGIC = b"IBP1"
_LEN = struct.Struct(">I")
_START = len(_MAGIC) + _LEN.size


class PackError(ValueError):
    """A pack whose framing or fields cannot be read."""


def check_pack(pack: int) -> None:
    """Refuse a pack size outside 1 … :data:`PACK_MAX` (:class:`~bus.errors.ConfigError`)."""
    if not 1 <= pack <= PACK_MAX:
        raise ConfigError(f"queue pack={pack}: expected 1 (every message on its own) to {PACK_MAX} messages "
                          "per AMQP message")


def encode(messages: Sequence[Message]) -> bytes:
    """The body of a pack of ``messages`` (in order)."""
    fields = orjson.dumps([[m.key, m.route, m.target, m.parks, m.headers or None, len(m.body)] for m in messages])
    return b"".join([_MAGIC, _LEN.pack(len(fields)), fields, *(m.body for m in messages)])


def groups(messages: Sequence[Message], routing_key: Callable[[str | None], str], partitions: int,
           pack: int) -> Iterator[tuple[str, list[Message]]]:
    """``messages`` as (routing key, messages) groups to publish as one AMQP message each: per partition in
    publish order, at most ``pack`` parts and :data:`PACK_BYTES` of bodies (a group of one is sent plain).
    Keyless messages are spread evenly over packs that go round-robin (``routing_key(None)``): at least one
    per partition while there are enough messages, as many as ``pack`` requires."""
    by_partition: dict[str, list[Message]] = {}
    keyless: list[Message] = []
    for m in messages:
        if m.key is None:
            keyless.append(m)
        else:
            by_partition.setdefault(routing_key(m.key), []).append(m)
    for key, group in by_partition.items():
        yield from _split(key, group, pack)
    if keyless:
        count = max(-(-len(keyless) // pack), min(partitions, len(keyless)))
        size, extra = divmod(len(keyless), count)
        start = 0
        for i in range(count):
            end = start + size + (1 if i < extra else 0)
            yield from _split(routing_key(None), keyless[start:end], pack)
            start = end


def _split(key: str, group: list[Message], pack: int) -> Iterator[tuple[str, list[Message]]]:
    if len(group) <= pack and sum(len(m.body) for m in group) <= PACK_BYTES:
        yield key, group
        return
    current: list[Message] = []
    size = 0
    for m in group:
        if current and (len(current) >= pack or size + len(m.body) > PACK_BYTES):
            yield key, current
            current, size = [], 0
        current.append(m)
        size += len(m.body)
    if current:
        yield key, current


def delivery_count(raw: Any) -> int:
    """The delivery count of an AMQP delivery (1 on first delivery): the republished count plus a redelivery."""
    h = raw.headers or {}
    return int(h.get(H_COUNT, 0)) + 1 + (1 if raw.delivery_info.get("redelivered") else 0)


def unpack(raw: Any) -> list[Message]:
    """The bus messages of an AMQP delivery: its parts if it is a pack, else the one message it is.
    Raises :class:`PackError` for a pack that cannot be read."""
    h = raw.headers or {}
    parts = h.get(H_PACK)
    if parts is None:
        return [Message(body=raw.body, key=h.get(H_KEY), route=h.get(H_ROUTE), target=h.get(H_TARGET),
                        parks=int(h.get(H_PARKS, 0)),
                        headers={k: str(v) for k, v in h.items() if k not in HEADERS and not k.startswith("x-")})]
    try:
        return _parts(raw.body, int(parts))
    except PackError:
        raise
    except (ValueError, TypeError, struct.error) as exc:  # orjson.JSONDecodeError is a ValueError
        raise PackError(f"{type(exc).__name__}: {exc}") from None


def _parts(body: bytes, parts: int) -> list[Message]:
    if body[:len(_MAGIC)] != _MAGIC:
        raise PackError("not a pack (bad magic)")
    (length,) = _LEN.unpack_from(body, len(_MAGIC))
    offset = _START + length
    fields = orjson.loads(memoryview(body)[_START:offset])
    if not isinstance(fields, list) or len(fields) != parts or parts < 1:
        raise PackError(f"pack header says {parts} part(s), its fields list {_count(fields)}")
    messages = []
    for key, route, target, parks, headers, size in fields:
        if not (_str_or_none(key) and _str_or_none(route) and _str_or_none(target) and type(parks) is int
                and type(size) is int and size >= 0 and (headers is None or isinstance(headers, dict))):
            raise PackError("pack part with fields of the wrong type")
        end = offset + size
        if end > len(body):
            raise PackError("pack shorter than its parts' lengths")
        messages.append(Message(body=body[offset:end], key=key, route=route, target=target, parks=parks,
                                headers={str(k): str(v) for k, v in headers.items()} if headers else {}))
        offset = end
    if offset != len(body):
        raise PackError(f"{len(body) - offset} byte(s) after the pack's last part")
    return messages


def _str_or_none(value: object) -> bool:
    return value is None or type(value) is str


def _count(fields: object) -> str:
    return str(len(fields)) if isinstance(fields, list) else type(fields).__name__
