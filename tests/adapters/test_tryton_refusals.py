"""adapters/tryton/refusals.py: a refused line gets the product's name and the unit from Tryton (no server needed:
the client's ``read`` is the only call, answered here as Tryton answers it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from adapters.tryton.client import TrytonClient
from adapters.tryton.refusals import named

ROWS = {("product.product", 7): {"id": 7, "name": "Widget W-100"},
        ("product.uom", 1): {"id": 1, "symbol": "u", "name": "Unit"},
        ("product.uom", 2): {"id": 2, "symbol": "kg", "name": ""}}


class Reader:
    def __init__(self) -> None:
        self.reads: list[str] = []

    def read(self, model: str, ids: Sequence[int], fields: Sequence[str]) -> list[dict[str, Any]]:
        self.reads.append(model)
        return [{f: ROWS[(model, i)].get(f) for f in ["id", *fields]} for i in ids]


REFUSAL = {"product": 7, "wanted": 5.0, "kept": 9.0, "reason": "already_shipped", "detail": "9 already shipped"}


def test_a_refusal_gets_the_products_name_and_the_units_symbol_and_name() -> None:
    assert named(cast(TrytonClient, Reader()), [dict(REFUSAL)], 7, 1) == [
        {**REFUSAL, "description": "Widget W-100", "unit": "u", "unit_name": "Unit"}]


def test_what_tryton_does_not_know_is_left_out_and_nothing_is_read_without_a_refusal() -> None:
    reader = Reader()
    assert named(cast(TrytonClient, reader), [dict(REFUSAL)], None, 2) == [{**REFUSAL, "unit": "kg"}]
    assert named(cast(TrytonClient, reader), [], 7, 1) == []
    assert reader.reads == ["product.uom"]
