"""Reading large selections of the journal in bounded memory: keyset-paginated chunks.

``replay`` and ``dlq retry`` may select millions of rows. Loading them into a list first costs memory in
proportion (about 5 KB of RSS per event) and delays the first publish until the whole read is done. The
readers here fetch ``chunk`` rows at a time, each chunk in its own short read transaction, resuming after the
last row seen (``WHERE (received_at, id) > (last)`` rather than ``OFFSET``, which would re-read every skipped
row). Rows written while a reader runs are seen or not depending on where they fall; callers that write
rows matching their own selection (a replay journals its markers) bound it with ``until``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bus.journal import tables
from bus.journal.engine import read
from bus.journal.records import DeadLetterRow
from bus.journal.sql import chunks

__all__ = ["CHUNK", "EventSelection", "JournaledEvent", "LetterSelection", "count_dead_letters", "count_events",
           "dead_letter_chunks", "event_chunks", "event_keys", "missing_events"]

_E, _D, _L = tables.events, tables.deliveries, tables.dead_letters

#: Rows per read: large enough that a query's round trip is amortised, small enough to stay a few MB.
CHUNK = 2000


class EventSelection(NamedTuple):
    """Which journaled events: every given filter must hold (``route``: the event has a delivery on it;
    ``since``/``until`` bound ``received_at``, ``until`` exclusive)."""

    event_ids: Sequence[str] | None = None
    key: str | None = None
    route: str | None = None
    since: float | None = None
    until: float | None = None


class JournaledEvent(NamedTuple):
    """An event as stored: its encoded body (published as it is) and the columns a replay needs."""

    id: str
    key: str | None
    correlationid: str | None
    received_at: float
    body: bytes


def _where(selection: EventSelection) -> list[sa.ColumnElement[bool]]:
    where: list[sa.ColumnElement[bool]] = []
    if selection.event_ids is not None:
        where.append(_E.c.id.in_(list(selection.event_ids)))
    if selection.key is not None:
        where.append(_E.c.key == selection.key)
    if selection.route is not None:
        where.append(_E.c.id.in_(sa.select(_D.c.event_id).where(_D.c.route == selection.route)))
    if selection.since is not None:
        where.append(_E.c.received_at >= selection.since)
    if selection.until is not None:
        where.append(_E.c.received_at < selection.until)
    return where


def count_events(engine: Engine, selection: EventSelection) -> int:
    """How many events ``selection`` matches (for a progress bar's total)."""
    with read(engine) as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(_E).where(*_where(selection))).scalar() or 0)


def event_chunks(engine: Engine, selection: EventSelection, chunk: int = CHUNK) -> Iterator[list[JournaledEvent]]:
    """The selected events in the order they were received, ``chunk`` at a time."""
    columns = (_E.c.id, _E.c.key, _E.c.correlationid, _E.c.received_at, _E.c.body)
    base = sa.select(*columns).where(*_where(selection)).order_by(_E.c.received_at, _E.c.id).limit(chunk)
    after_at = sa.bindparam("after_at", type_=_E.c.received_at.type)
    after_id = sa.bindparam("after_id", type_=_E.c.id.type)
    # ">= at AND (> at OR id > last id)": the range condition on received_at lets the index do the seek
    page = base.where(_E.c.received_at >= after_at, sa.or_(_E.c.received_at > after_at, _E.c.id > after_id))
    last: JournaledEvent | None = None
    while True:
        with read(engine) as conn:
            result = conn.execute(base) if last is None else conn.execute(
                page, {"after_at": last.received_at, "after_id": last.id})
            # all rows at once: iterating a result fetches (and wraps) one row at a time
            rows = [JournaledEvent(i, k, c, at, bytes(b)) for i, k, c, at, b in result.all()]
        if not rows:
            return
        yield rows
        if len(rows) < chunk:
            return
        last = rows[-1]


def missing_events(engine: Engine, event_ids: Sequence[str]) -> set[str]:
    """The ids among ``event_ids`` that the journal does not hold."""
    found: set[str] = set()
    with read(engine) as conn:
        for part in chunks(list(event_ids)):
            found.update(conn.execute(sa.select(_E.c.id).where(_E.c.id.in_(list(part)))).scalars())
    return set(event_ids) - found


def event_keys(engine: Engine, event_ids: Sequence[str]) -> dict[str, str | None]:
    """The ordering key of each journaled event among ``event_ids``."""
    keys: dict[str, str | None] = {}
    with read(engine) as conn:
        for part in chunks(list(event_ids)):
            keys.update((r.id, r.key) for r in conn.execute(sa.select(_E.c.id, _E.c.key).where(_E.c.id.in_(part))))
    return keys


class LetterSelection(NamedTuple):
    """Which dead letters: every given filter must hold (``error``: a case-insensitive substring of the reason;
    ``state=None``: any state), at most ``limit`` of them, oldest first."""

    ids: Sequence[int] | None = None
    route: str | None = None
    target: str | None = None
    error: str | None = None
    since: float | None = None
    state: str | None = "dead"
    limit: int | None = None


def _letter_where(selection: LetterSelection) -> list[sa.ColumnElement[bool]]:
    where: list[sa.ColumnElement[bool]] = []
    if selection.ids is not None:
        where.append(_L.c.id.in_(list(selection.ids)))
    if selection.route is not None:
        where.append(_L.c.route == selection.route)
    if selection.target is not None:
        where.append(_L.c.target == selection.target)
    if selection.error is not None:
        where.append(sa.func.lower(_L.c.reason).contains(selection.error.lower(), autoescape=True))
    if selection.since is not None:
        where.append(_L.c.created_at >= selection.since)
    if selection.state is not None:
        where.append(_L.c.state == selection.state)
    return where


def count_dead_letters(engine: Engine, selection: LetterSelection) -> int:
    """How many dead letters ``selection`` matches (``limit`` included)."""
    with read(engine) as conn:
        n = int(conn.execute(sa.select(sa.func.count()).select_from(_L).where(*_letter_where(selection))).scalar()
                or 0)
    return n if selection.limit is None else min(n, selection.limit)


def dead_letter_chunks(engine: Engine, selection: LetterSelection,
                       chunk: int = CHUNK) -> Iterator[list[DeadLetterRow]]:
    """The selected dead letters (as :meth:`DeadLetterStore.find` filters them), oldest first, ``chunk`` at a
    time. Keyset on the id: rows of a chunk may be changed (marked retried) before the next is read."""
    after = sa.bindparam("after", type_=_L.c.id.type)
    query = sa.select(_L).where(*_letter_where(selection), _L.c.id > after).order_by(_L.c.id)
    last, left = 0, selection.limit
    while left is None or left > 0:
        size = chunk if left is None else min(chunk, left)
        with read(engine) as conn:
            rows = [_letter(r) for r in conn.execute(query.limit(size), {"after": last})]
        if not rows:
            return
        yield rows
        if len(rows) < size:
            return
        last = rows[-1].id
        if left is not None:
            left -= len(rows)


def _letter(r: Any) -> DeadLetterRow:
    return DeadLetterRow(id=r.id, event_id=r.event_id, route=r.route, target=r.target, reason=r.reason,
                         error_kind=r.error_kind, attempts=r.attempts, body=bytes(r.body), created_at=r.created_at,
                         state=r.state)
