"""Limits every inbound document and event must respect, checked at the edge before anything is stored.

A document the journal or the queue cannot store must be refused where it enters, with a 4xx and a reason,
and never reach a group commit: there it would fail every request committed with it. The checks are those
the stores would otherwise trip over later:

* a payload must encode as JSON (orjson refuses nesting deeper than 254 levels and non-JSON types);
* text attributes (id, type, source, subject, key) must not contain NUL, which PostgreSQL's ``text`` refuses;
* the business key is indexed, and a PostgreSQL b-tree entry is limited to about 2.7 kB, so it is bounded;
* a sequence must fit the journal's 64-bit integer column.

YAML and JSON files the bus reads (routes, mappings, tests, ``send`` and ``map`` inputs) are bounded by
:data:`MAX_FILE_BYTES`, :data:`MAX_DEPTH` and :data:`MAX_YAML_NODES` (nodes after alias expansion).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from bus.envelope import Event
from bus.errors import DecodeError

__all__ = [
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "MAX_KEY_BYTES",
    "MAX_YAML_NODES",
    "InputRejected",
    "check_event",
    "check_events",
    "check_payload",
    "check_payloads",
    "depth_exceeds",
]

#: Nesting levels a document may have (orjson stops encoding at 255; XML is cut at 200 too).
MAX_DEPTH = 200
#: Bytes of a YAML/JSON file the bus reads from disk or stdin.
MAX_FILE_BYTES = 16 * 1024 * 1024
#: Nodes a YAML document may expand to once its aliases are followed (a "billion laughs" stops here).
MAX_YAML_NODES = 1_000_000
#: Bytes of a business key in UTF-8.
MAX_KEY_BYTES = 1024
_INT64 = (-(2**63), 2**63 - 1)


class InputRejected(DecodeError):
    """An inbound document or event the bus refuses to store; ``reason`` is a fixed code, ``status`` the HTTP
    status a webhook answers."""

    def __init__(self, message: str, *, reason: str = "bad_request", status: int = 400) -> None:
        self.reason = reason
        self.status = status
        super().__init__(message)


def depth_exceeds(value: Any, limit: int = MAX_DEPTH) -> bool:
    """True when ``value`` nests dicts/lists deeper than ``limit`` levels (iterative: no recursion limit)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            children: Iterable[Any] = node.values()
        elif isinstance(node, list | tuple):
            children = node
        else:
            continue
        if level > limit:
            return True
        stack.extend((child, level + 1) for child in children if isinstance(child, dict | list | tuple))
    return False


def check_payload(value: Any, what: str = "payload") -> None:
    """Refuse a payload the stores cannot keep: not JSON-encodable or nested deeper than :data:`MAX_DEPTH`."""
    try:
        encoded = orjson.dumps(value)
    except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
        if "ecursion" in str(exc):
            raise InputRejected(f"{what} is nested deeper than {MAX_DEPTH} levels", reason="too_deep") from None
        raise InputRejected(f"{what} cannot be stored as JSON: {exc}", reason="unencodable") from None
    # orjson allows 254 levels; the bus promises the same limit everywhere (XML included). Every level opens a
    # bracket, so a document with no more openers than the limit cannot be deeper (brackets inside strings only
    # raise the count): the walk in Python, a cost per webhook request, runs only for documents that might be.
    if encoded.count(b"[") + encoded.count(b"{") > MAX_DEPTH and depth_exceeds(value, MAX_DEPTH):
        raise InputRejected(f"{what} is nested deeper than {MAX_DEPTH} levels", reason="too_deep")


def check_payloads(values: Iterable[Any], what: str = "payload") -> None:
    for value in values:
        check_payload(value, what)


def _text(name: str, value: Any) -> None:
    if value is not None and "\x00" in str(value):
        raise InputRejected(f"event attribute {name!r} contains a NUL character", reason="bad_attribute")


def check_event(event: Event) -> bytes:
    """Refuse an event the journal or the queue would fail on (see the module docstring); returns the event
    encoded (:meth:`Event.encode`), which the check needs anyway and ingest stores as it is."""
    for name in ("id", "type", "source", "subject", "correlationid", "causationid", "key"):
        _text(name, getattr(event, name))
    if event.key is not None and len(event.key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise InputRejected(f"business key is longer than {MAX_KEY_BYTES} bytes", reason="key_too_long")
    if event.sequence is not None and not (_INT64[0] <= event.sequence <= _INT64[1]):
        raise InputRejected("sequence does not fit a 64-bit integer", reason="bad_attribute")
    try:
        return event.encode()
    except TypeError as exc:
        if "ecursion" in str(exc):
            raise InputRejected(f"event data is nested deeper than {MAX_DEPTH} levels", reason="too_deep") from None
        raise InputRejected(f"event cannot be stored as JSON: {exc}", reason="unencodable") from None
    except UnicodeEncodeError as exc:
        raise InputRejected(f"event holds text that is not valid Unicode: {exc.reason}", reason="unencodable") \
            from None


def check_events(events: Iterable[Event]) -> None:
    for event in events:
        check_event(event)
