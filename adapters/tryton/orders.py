"""One customer order across several Tryton sales: a confirmed sale and its *supplementary* sales.

Tryton freezes a confirmed sale's lines; a sale amendment (``sale_amendment``) changes, but cannot add, a line. A
product the customer adds to a confirmed order therefore goes on a new sale whose **origin** is the confirmed one
(``sale.sale.origin``, a reference Tryton offers for exactly this: a sale made from another sale). Both are one
order: the polled record of either carries ``order`` — the root sale's number and state, the lines of every
live member (root first, then supplements not in draft or cancelled) and their total — so the order's latest
version is what the bus sends on, and a later amendment of a supplement (quantity down, line to 0) converges like
any other change. Messages about the order (``sales._result``) speak of the whole order too.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from adapters.base import PollResult
from adapters.tryton.client import TrytonClient
from adapters.tryton.codec import plain

__all__ = ["family", "with_orders"]

_MEMBER_STATES = ("quotation", "confirmed", "processing", "done")


def _origin_sale(origin: Any) -> int | None:
    if isinstance(origin, str) and origin.startswith("sale.sale,"):
        tail = origin.split(",", 1)[1]
        return int(tail) if tail.isdigit() else None
    return None


def root_of(client: TrytonClient, sale: int) -> int:
    """The sale a (chain of) supplementary sale(s) supplements; the sale itself when it supplements none."""
    seen = {sale}
    while True:
        parent = _origin_sale(client.read("sale.sale", [sale], ["origin"])[0].get("origin"))
        if parent is None or parent in seen:
            return sale
        seen.add(parent)
        sale = parent


def family(client: TrytonClient, root: int) -> list[int]:
    """The root sale and every live supplementary sale of it (any depth), root first, then by id."""
    members, frontier = [root], [root]
    while frontier:
        found = client.search_read("sale.sale", [["origin", "in", [f"sale.sale,{i}" for i in frontier]],
                                                 ["state", "in", list(_MEMBER_STATES)]], ["id"],
                                   order=[("id", "ASC")])
        frontier = [r["id"] for r in found if r["id"] not in members]
        members += frontier
    return members


def with_orders(client: TrytonClient, result: PollResult, shape: Any, fields: Any) -> PollResult:
    """``result`` (polled sales) with ``order`` on each record that belongs to an order of several sales.

    ``shape``/``fields`` are the poller's sale shape and fields, to read the other members as the poll would."""
    records = list(result.records)
    ids = [int(payload["id"]) for _, payload in records if payload.get("id")]
    if not ids:
        return result
    origins = {r["id"]: _origin_sale(r.get("origin")) for r in client.read("sale.sale", ids, ["origin"])}
    has_supplements = {_origin_sale(r.get("origin")) for r in client.search_read(
        "sale.sale", [["origin", "in", [f"sale.sale,{i}" for i in ids]], ["state", "in", list(_MEMBER_STATES)]],
        ["origin"])}
    roots: dict[int, int] = {}
    for sale in ids:
        if origins.get(sale) is not None:
            roots[sale] = root_of(client, sale)
        elif sale in has_supplements:
            roots[sale] = sale
    if not roots:
        return result
    orders: dict[int, dict[str, Any]] = {}
    for root in sorted(set(roots.values())):
        members = family(client, root)
        rows = client.search_read("sale.sale", [["id", "in", members]], list(fields))
        shaped = {p["id"]: p for p in shape(rows)}
        head = shaped[root]
        lines = [line for m in members if m in shaped for line in shaped[m].get("lines") or []]
        total = sum((Decimal(str(shaped[m].get("total_amount") or 0)) for m in members if m in shaped), Decimal(0))
        orders[root] = plain({"id": root, "number": head.get("number"), "state": head.get("state"),
                        "sales": members, "lines": lines, "total_amount": str(total)})
    out = [(key, {**payload, "order": orders[roots[int(payload["id"])]]} if payload.get("id") in roots else payload)
           for key, payload in records]
    return PollResult(records=out, watermark=result.watermark, correlations=result.correlations,
                      causations=result.causations)
