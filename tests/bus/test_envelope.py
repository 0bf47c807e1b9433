"""The event envelope: CloudEvents structured JSON plus correlation, causation, key and sequence."""

from __future__ import annotations

import random
import re
import string
import uuid
from datetime import UTC, datetime

import orjson
import pytest

from bus.envelope import Event, name_based_id, new_event_id
from bus.errors import DecodeError


def test_a_new_event_is_its_own_correlation_root() -> None:
    event = Event(type="order.changed", source="crm", data={"order_id": "SO-1"})
    assert event.correlationid == event.id
    assert event.causationid is None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", event.time)


def test_event_ids_are_unique() -> None:
    assert len({new_event_id() for _ in range(1000)}) == 1000


def test_caused_event_carries_correlation_and_causation() -> None:
    root = Event(type="order.changed", source="crm", data={}, key="SO-1")
    child = root.caused("procurement.requested", "ironbus/scm", {"request_id": "PR-9"})
    grandchild = child.caused("purchase_order.created", "ironbus/srm", {"po": "PO-3"}, key="PO-3")
    assert (child.correlationid, child.causationid, child.key) == (root.id, root.id, "SO-1")
    assert (grandchild.correlationid, grandchild.causationid, grandchild.key) == (root.id, child.id, "PO-3")
    assert len({root.id, child.id, grandchild.id}) == 3


def test_wire_form_round_trips_with_extensions() -> None:
    event = Event(type="order.changed", source="crm", data={"n": [1, 2]}, subject="SO-1", key="SO-1", sequence=4,
                  causationid="c-1", correlationid="corr-1", extensions={"traceparent": "00-abc-01"})
    wire = orjson.loads(event.encode())
    assert wire["specversion"] == "1.0"
    assert wire["traceparent"] == "00-abc-01"  # extensions are top-level members, as CloudEvents prescribes
    assert "dataschema" not in wire  # None attributes are left out
    assert Event.decode(event.encode()) == event


def test_from_dict_fills_defaults_and_normalises_key_and_sequence() -> None:
    event = Event.from_dict({"id": "e-1", "source": "s", "type": "t", "key": 1001, "sequence": "7"})
    assert (event.key, event.sequence, event.correlationid) == ("1001", 7, "e-1")
    assert event.datacontenttype == "application/json"
    assert event.data is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "event body is not valid JSON"),
        (b"[1, 2]", "an event must be a JSON object, got list"),
        (b'{"id": "e", "source": "s"}', "missing required attribute(s) type"),
        (b'{"id": "", "source": "s", "type": "t"}', "missing required attribute(s) id"),
        (b'{"id": "e", "source": "s", "type": "t", "specversion": "0.3"}', "unsupported CloudEvents specversion '0.3'"),
        (b'{"id": "e", "source": "s", "type": "t", "sequence": "v2"}', "attribute 'sequence' must be an integer"),
    ],
)
def test_decode_rejects_non_events_with_a_reason(body: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=re.escape(message)):
        Event.decode(body)


def test_with_returns_a_changed_copy() -> None:
    event = Event(type="t", source="s", data=1)
    keyed = event.with_(key="K")
    assert (keyed.key, keyed.id, event.key) == ("K", event.id, None)
    # every other attribute is carried over; the copy equals an event built with the same values
    full = Event(type="t", source="s", data={"a": [1]}, subject="x", correlationid="c", causationid="p", key="k",
                 sequence=4, dataschema="d", extensions={"e": 1})
    moved = full.with_(sequence=5, type="u")
    assert moved == Event(type="u", source="s", data={"a": [1]}, id=full.id, subject="x", time=full.time,
                          correlationid="c", causationid="p", key="k", sequence=5, dataschema="d",
                          extensions={"e": 1})
    # a new id without a correlation makes the copy its own root, as a new event is
    rooted = full.with_(id="n-1", correlationid="")
    assert rooted.correlationid == "n-1"
    with pytest.raises(TypeError, match="Event has no attribute"):
        event.with_(kee="K")


def test_name_based_ids_are_exactly_uuid5() -> None:
    # inbound webhook events are deduplicated by these ids across versions of the bus: they must never change
    namespace = uuid.UUID("6f1c7a52-3c1e-4d8e-9a57-1b2f0e7d4c11")
    rng = random.Random(7)
    alphabet = string.printable + "éß漢\u2028"
    for _ in range(2000):
        name = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
        assert name_based_id(namespace, name) == str(uuid.uuid5(namespace, name))


def test_the_default_time_is_utc_to_the_millisecond_and_never_goes_back() -> None:
    seen = []
    for _ in range(5000):
        before = datetime.now(UTC)
        text = Event(type="t", source="s").time
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", text), text
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
        assert abs((stamp - before).total_seconds()) < 1.0
        seen.append(text)
    assert seen == sorted(seen)
    assert len(set(seen)) > 1  # formatted anew as the milliseconds pass, not once
