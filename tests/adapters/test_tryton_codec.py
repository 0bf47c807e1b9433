"""Tryton typed JSON values: encode/decode round trip, the wire form trytond expects, plain payload form."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest

from adapters.tryton.codec import decode, encode, plain

VALUES = {
    "price": Decimal("10.005"),
    "day": dt.date(2026, 11, 24),
    "stamp": dt.datetime(2026, 11, 24, 22, 42, 56, 398358),
    "clock": dt.time(8, 30, 5, 12),
    "lead": dt.timedelta(days=3, seconds=7.5),
    "blob": b"\x00\xffbinary",
    "nested": [{"qty": 3.0, "amount": Decimal("-0.10")}, None, "text", 7, True],
}


def test_round_trip_through_json_restores_every_type() -> None:
    wire = json.dumps(encode(VALUES))
    assert decode(json.loads(wire)) == VALUES


def test_encode_uses_trytonds_wire_names() -> None:
    encoded = encode({"p": Decimal("1.50"), "d": dt.date(2026, 1, 2), "s": dt.datetime(2026, 1, 2, 3, 4, 5, 6),
                      "t": dt.timedelta(hours=1), "b": b"hi"})
    assert encoded["p"] == {"__class__": "Decimal", "decimal": "1.50"}
    assert encoded["d"] == {"__class__": "date", "year": 2026, "month": 1, "day": 2}
    assert encoded["s"] == {"__class__": "datetime", "year": 2026, "month": 1, "day": 2, "hour": 3, "minute": 4,
                            "second": 5, "microsecond": 6}
    assert encoded["t"] == {"__class__": "timedelta", "seconds": 3600.0}
    assert encoded["b"]["__class__"] == "bytes"


def test_decode_accepts_trytonds_multiline_base64() -> None:
    # trytond encodes bytes with base64.encodebytes, which wraps lines every 76 characters.
    import base64

    data = bytes(range(256)) * 2
    assert decode({"__class__": "bytes", "base64": base64.encodebytes(data).decode()}) == data


def test_decode_leaves_unknown_classes_and_plain_objects_alone() -> None:
    assert decode({"__class__": "Mystery", "x": 1}) == {"__class__": "Mystery", "x": 1}
    assert decode({"a": [1, {"b": "c"}]}) == {"a": [1, {"b": "c"}]}


def test_decode_rejects_a_malformed_typed_value() -> None:
    with pytest.raises(ValueError, match="malformed Tryton date"):
        decode({"__class__": "date", "year": 2026})


def test_plain_gives_stable_json_for_payloads() -> None:
    out = plain(VALUES)
    assert out["price"] == "10.005"
    assert out["day"] == "2026-11-24"
    assert out["stamp"] == "2026-11-24T22:42:56.398358"
    assert out["lead"] == 259207.5
    assert out["nested"][0] == {"qty": 3.0, "amount": "-0.10"}
    json.dumps(out)  # everything is plain JSON now
