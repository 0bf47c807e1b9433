"""The dead-letter store: messages that need an operator, with their original bytes.

States: ``dead`` (waiting), ``retried`` (an operator re-queued it), ``purged`` (an operator gave up on it).
Rows are never deleted by the bus except by :meth:`Journal.prune`, and then only when no longer ``dead``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Connection, Engine

from bus.journal import tables
from bus.journal.engine import read, write, writing
from bus.journal.records import DEAD_LETTER_STATES, DeadLetter, DeadLetterRow
from bus.journal.sql import chunks

__all__ = ["DeadLetterStore"]

log = structlog.get_logger(__name__)

_D = tables.dead_letters


def _row(r: Any) -> DeadLetterRow:
    return DeadLetterRow(id=r.id, event_id=r.event_id, route=r.route, target=r.target, reason=r.reason,
                         error_kind=r.error_kind, attempts=r.attempts, body=bytes(r.body),
                         created_at=r.created_at, state=r.state)


class DeadLetterStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def add(self, letters: Sequence[DeadLetter], *, conn: Connection | None = None) -> None:
        """Store letters, in one transaction (the caller's, when ``conn`` is given)."""
        if not letters:
            return
        with writing(self._engine, conn) as conn:
            conn.execute(_D.insert(), [
                {"event_id": d.event_id, "route": d.route, "target": d.target, "reason": d.reason,
                 "error_kind": d.error_kind, "attempts": d.attempts, "body": d.body, "created_at": d.created_at,
                 "state": "dead"} for d in letters])
        for d in letters:
            log.warning("dead_letter", event_id=d.event_id, route=d.route, target=d.target, reason=d.reason,
                        error_kind=d.error_kind, attempts=d.attempts)

    def find(self, *, route: str | None = None, target: str | None = None, error: str | None = None,
             since: float | None = None, state: str | None = "dead", limit: int | None = 100) -> list[DeadLetterRow]:
        """Dead letters matching every given filter, oldest first. ``error`` matches a substring of the
        reason (case-insensitive); ``state=None`` matches any state."""
        query = sa.select(_D).order_by(_D.c.id)
        if route is not None:
            query = query.where(_D.c.route == route)
        if target is not None:
            query = query.where(_D.c.target == target)
        if error is not None:
            query = query.where(sa.func.lower(_D.c.reason).contains(error.lower(), autoescape=True))
        if since is not None:
            query = query.where(_D.c.created_at >= since)
        if state is not None:
            query = query.where(_D.c.state == state)
        if limit is not None:
            query = query.limit(limit)
        with read(self._engine) as conn:
            return [_row(r) for r in conn.execute(query)]

    def has_dead_letter(self, event_id: str) -> bool:
        """Whether a letter of ``event_id`` is still ``dead`` (a refused document read again after a crash)."""
        with read(self._engine) as conn:
            return conn.execute(sa.select(_D.c.id).where(_D.c.event_id == event_id, _D.c.state == "dead")
                                .limit(1)).first() is not None

    def by_id(self, id: int) -> DeadLetterRow | None:
        with read(self._engine) as conn:
            row = conn.execute(sa.select(_D).where(_D.c.id == id)).first()
        return None if row is None else _row(row)

    def mark(self, ids: Sequence[int], state: str) -> int:
        """Set the state of the given dead letters; returns how many rows changed."""
        if state not in DEAD_LETTER_STATES:
            raise ValueError(f"dead-letter state {state!r} is not one of {sorted(DEAD_LETTER_STATES)}")
        changed = 0
        with write(self._engine) as conn:
            for part in chunks(list(ids)):
                changed += conn.execute(_D.update().where(_D.c.id.in_(part)).values(state=state)).rowcount
        return changed

    def failed_again(self, id: int, reason: str) -> bool:
        """A re-drive of dead letter ``id`` failed before anything was queued (e.g. a follow-up whose
        ``emit_map`` still fails): it stays ``dead``, with ``reason`` replacing the old one and one more attempt
        counted. False when the letter is not ``dead`` (any more)."""
        with write(self._engine) as conn:
            changed = conn.execute(_D.update().where(_D.c.id == id, _D.c.state == "dead")
                                   .values(reason=reason, attempts=_D.c.attempts + 1)).rowcount
        return bool(changed)

    def count(self, state: str = "dead") -> int:
        with read(self._engine) as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(_D).where(_D.c.state == state)).scalar()
                       or 0)
