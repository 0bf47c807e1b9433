"""The event envelope: CloudEvents 1.0 attributes plus the bus's own tracing and ordering attributes.

An :class:`Event` is one message on the bus. Its wire form is the CloudEvents *structured JSON* form, with
our extension attributes (``correlationid``, ``causationid``, ``key``, ``sequence``) as top-level members,
which is what CloudEvents prescribes for extensions.
"""

from __future__ import annotations

import hashlib
import time as _time
import uuid
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

import orjson

from bus.errors import DecodeError

__all__ = ["Event", "name_based_id", "new_event_id"]

SPECVERSION = "1.0"
_REQUIRED = ("id", "source", "type")
_KNOWN = {
    "specversion", "id", "source", "type", "subject", "time", "datacontenttype", "dataschema",
    "correlationid", "causationid", "key", "sequence", "data",
}


def new_event_id() -> str:
    """A fresh, time-ordered-enough unique event id (UUID4, hex with dashes)."""
    return str(uuid.uuid4())


def name_based_id(namespace: uuid.UUID, name: str) -> str:
    """``str(uuid.uuid5(namespace, name))``, the same text without building a ``UUID`` object: an inbound
    webhook's events get their ids this way, one per event (see :mod:`bus.inbound`)."""
    digest = bytearray(hashlib.sha1(namespace.bytes + name.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    text = digest.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


_last_now: tuple[int, str] = (-1, "")


def _now() -> str:
    """The current UTC time to the millisecond, e.g. ``2026-12-07T17:14:29.123Z``: each event's default ``time``.
    Formatted once per millisecond (a webhook burst makes several events in one)."""
    global _last_now
    ms = _time.time_ns() // 1_000_000
    last = _last_now  # one read: another thread may replace it meanwhile
    if last[0] == ms:
        return last[1]
    seconds, millis = divmod(ms, 1000)
    text = f"{datetime.fromtimestamp(seconds, UTC):%Y-%m-%dT%H:%M:%S}.{millis:03d}Z"
    _last_now = (ms, text)
    return text


@dataclass(frozen=True, slots=True)
class Event:
    """One message on the bus.

    ``correlationid`` is shared by every event of one business transaction; ``causationid`` is the id of the
    event that caused this one (None for an event that entered from outside). ``key`` is the business key
    events are ordered by (e.g. the order number) and ``sequence`` that entity's version, when the source
    has one; an event with an older sequence than the last one applied for its key is stale.
    """

    type: str
    source: str
    data: Any = None
    id: str = field(default_factory=new_event_id)
    subject: str | None = None
    time: str = field(default_factory=_now)
    correlationid: str = ""
    causationid: str | None = None
    key: str | None = None
    sequence: int | None = None
    datacontenttype: str = "application/json"
    dataschema: str | None = None
    extensions: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # An event that starts a transaction is its own correlation root.
        if not self.correlationid:
            object.__setattr__(self, "correlationid", self.id)

    def caused(self, type: str, source: str, data: Any, **attrs: Any) -> Event:
        """A follow-up event caused by this one: same correlation id, causation id = this event's id."""
        return Event(type=type, source=source, data=data, correlationid=self.correlationid,
                     causationid=self.id, key=attrs.pop("key", self.key), **attrs)

    def with_(self, **changes: Any) -> Event:
        """A copy with some attributes changed.

        Slot by slot rather than ``dataclasses.replace``, which costs twice as much and runs for most events
        (the ordering key is filled in at the front door)."""
        new = object.__new__(Event)
        for name in _FIELD_NAMES:
            _setattr(new, name, changes.pop(name) if name in changes else getattr(self, name))
        if changes:
            raise TypeError(f"Event has no attribute(s) {', '.join(sorted(changes))}")
        if not new.correlationid:
            _setattr(new, "correlationid", new.id)
        return new

    def to_dict(self) -> dict[str, Any]:
        """The CloudEvents structured-mode dict (attributes that are None are left out)."""
        out: dict[str, Any] = {"specversion": SPECVERSION, "id": self.id, "source": self.source, "type": self.type}
        # straight-line rather than a getattr loop: every event on the bus is encoded at least once
        if self.subject is not None:
            out["subject"] = self.subject
        if self.time is not None:
            out["time"] = self.time
        if self.datacontenttype is not None:
            out["datacontenttype"] = self.datacontenttype
        if self.dataschema is not None:
            out["dataschema"] = self.dataschema
        if self.correlationid is not None:
            out["correlationid"] = self.correlationid
        if self.causationid is not None:
            out["causationid"] = self.causationid
        if self.key is not None:
            out["key"] = self.key
        if self.sequence is not None:
            out["sequence"] = self.sequence
        if self.extensions:
            out.update(self.extensions)
        out["data"] = self.data
        return out

    def encode(self) -> bytes:
        """Wire form: CloudEvents structured JSON, UTF-8."""
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, doc: Any) -> Event:
        """Build an event from its structured-mode dict; raises :class:`DecodeError` when it is not one."""
        if not isinstance(doc, dict):
            raise DecodeError(f"an event must be a JSON object, got {type(doc).__name__}")
        get = doc.get
        event_id, source, event_type = get("id", ""), get("source", ""), get("type", "")
        # one combined test on the hot path; the slow one below only runs to name what is wrong
        if not (type(event_id) is str and type(source) is str and type(event_type) is str
                and event_id and source and event_type):
            missing = [name for name in _REQUIRED if not isinstance(get(name), str) or not get(name)]
            if missing:
                raise DecodeError(f"event is missing required attribute(s) {', '.join(missing)} (CloudEvents 1.0)")
        spec = get("specversion", SPECVERSION)
        if spec != SPECVERSION:
            raise DecodeError(f"unsupported CloudEvents specversion {spec!r}; expected '1.0'")
        sequence = get("sequence")
        if sequence is not None and type(sequence) is not int:
            try:
                sequence = int(sequence)
            except (TypeError, ValueError):
                raise DecodeError(f"attribute 'sequence' must be an integer, got {sequence!r}") from None
        key = get("key")
        return cls(
            event_type, source, get("data"), event_id, get("subject"),
            get("time") or _now(), get("correlationid") or "", get("causationid"),
            key if key is None or type(key) is str else str(key), sequence,
            get("datacontenttype") or "application/json", get("dataschema"),
            # most events carry no extension attributes: skip the comprehension when the keys say so
            extensions={k: v for k, v in doc.items() if k not in _KNOWN} if not _KNOWN.issuperset(doc) else {},
        )

    @classmethod
    def decode(cls, body: bytes | str) -> Event:
        """Parse the wire form; raises :class:`DecodeError` on malformed JSON or a non-event."""
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise DecodeError(f"event body is not valid JSON: {exc}") from None
        return cls.from_dict(doc)


_FIELD_NAMES = tuple(f.name for f in fields(Event))
_setattr = object.__setattr__  # frozen slots: a copy is filled in as __init__ would
