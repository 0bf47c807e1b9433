"""Writing delivery outcomes: each delivery's state (``ib_deliveries``) and its attempt.

The attempt that delivers is kept on the delivery row (``started_at``, ``duration_ms`` and, with tracing on,
its spans) instead of being appended to the attempt log (``ib_attempts``). On the hot path nearly every attempt
succeeds at once, and that log row with its two index entries was about a fifth of the CPU settling took
(measured alone, old and new code alternating: 93–128 → 74–104 µs per event). The log keeps every other
attempt: failures, parks, skips, and a success for a delivery that was delivered already (a lease ran out
while its delivery was made), whose row is not updated. Readers merge both
(:func:`bus.journal.records.with_delivering_attempts`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bus.journal import tables
from bus.journal.records import DeliveryUpdate
from bus.journal.sql import ManyRows, dumps, insert_for

__all__ = ["DeliverySettling"]

_D, _A = tables.deliveries, tables.attempts
_UNTRACED_ATTEMPT = tuple(c.name for c in _A.c if c.name not in ("id", "trace_id", "span_ids"))


def _on_row(update: DeliveryUpdate) -> bool:
    """Whether the attempt of ``update`` is kept on its delivery row rather than appended to the attempt log."""
    return update.status == "delivered" and update.log_status == "ok"


def _distinct_runs(updates: Sequence[DeliveryUpdate]) -> list[list[DeliveryUpdate]]:
    """Split into consecutive runs without a repeated key: one upsert statement must not hit a row twice."""
    runs: list[list[DeliveryUpdate]] = [[]]
    keys: set[str] = set()
    for update in updates:
        if update.idempotency_key in keys:
            runs.append([])
            keys = set()
        runs[-1].append(update)
        keys.add(update.idempotency_key)
    return [run for run in runs if run]


class DeliverySettling:
    """The settle statements of one dialect, built once: constructing them per call costs more than running
    them."""

    def __init__(self, dialect: str) -> None:
        stmt = insert_for(dialect, _D)
        ex = stmt.excluded
        self._upsert = ManyRows(stmt.on_conflict_do_update(
            index_elements=[_D.c.idempotency_key],
            set_={"status": ex.status,
                  "attempts": sa.case((ex.attempts > _D.c.attempts, ex.attempts), else_=_D.c.attempts),
                  "parks": _D.c.parks + ex.parks, "next_attempt_at": ex.next_attempt_at,
                  "last_error": ex.last_error, "reference": sa.func.coalesce(ex.reference, _D.c.reference),
                  "payload": sa.func.coalesce(ex.payload, _D.c.payload), "updated_at": ex.updated_at,
                  "delivered_at": sa.func.coalesce(ex.delivered_at, _D.c.delivered_at),
                  "started_at": ex.started_at, "duration_ms": ex.duration_ms, "trace_id": ex.trace_id,
                  "span_ids": ex.span_ids},
            where=_D.c.status != "delivered"), as_arrays=["idempotency_key"])
        # without the span columns unless tracing gave ids: the untraced INSERT is the one it always was
        self._log = ManyRows(_A.insert(), columns=_UNTRACED_ATTEMPT)
        self._log_traced = ManyRows(_A.insert())

    def write(self, conn: Connection, outcomes: Sequence[DeliveryUpdate],
              spans: Mapping[str, tuple[str, str]]) -> None:
        """Upsert the deliveries' states and log the attempts that are not kept on their rows, in ``conn``'s
        transaction. A delivery already ``delivered`` is never downgraded."""
        now = time.time()
        logged: list[DeliveryUpdate] = []
        for run in _distinct_runs(outcomes):
            pairs = [(u, _on_row(u)) for u in run]
            if self._upsert.execute(conn, [_state(u, kept, now, spans) for u, kept in pairs]) == len(run):
                logged.extend(u for u, kept in pairs if not kept)
            else:
                # Some row was left unchanged: it was delivered already. A success that did not land on its
                # row goes to the log.
                logged.extend(u for u, kept in pairs if not kept or not _on_its_row(conn, u))
        if not logged:
            return
        attempts: list[dict[str, Any]] = [
            {"idempotency_key": u.idempotency_key, "event_id": u.event_id, "route": u.route, "target": u.target,
             "attempt": u.attempt, "status": u.log_status, "error": u.error, "started_at": u.started_at,
             "duration_ms": u.duration_ms} for u in logged]
        if spans:
            for row, u in zip(attempts, logged, strict=True):
                row["trace_id"], row["span_ids"] = spans.get(u.idempotency_key) or (None, None)
            self._log_traced.execute(conn, attempts)
        else:
            self._log.execute(conn, attempts)


def _state(u: DeliveryUpdate, on_row: bool, now: float, spans: Mapping[str, tuple[str, str]]) -> dict[str, Any]:
    """The delivery row ``u`` upserts (with its attempt when ``on_row``: that attempt delivered)."""
    trace_id, span_ids = spans.get(u.idempotency_key, (None, None)) if on_row else (None, None)
    return {"idempotency_key": u.idempotency_key, "event_id": u.event_id, "route": u.route, "target": u.target,
            "status": u.status, "attempts": u.attempt,
            # a delivery held behind another's park made no attempt: it does not use up max_parks
            "parks": 1 if u.status == "parked" and u.attempt_status != "skipped" else 0,
            "next_attempt_at": u.next_attempt_at, "last_error": u.error, "reference": u.reference,
            "payload": dumps(u.payload), "updated_at": now,
            "delivered_at": now if u.status == "delivered" else None,
            "started_at": u.started_at if on_row else None, "duration_ms": u.duration_ms if on_row else None,
            "trace_id": trace_id, "span_ids": span_ids}


def _on_its_row(conn: Connection, update: DeliveryUpdate) -> bool:
    """Whether the delivery row holds ``update``'s attempt (read in the settling transaction)."""
    started = conn.execute(sa.select(_D.c.started_at).where(
        _D.c.idempotency_key == update.idempotency_key)).scalar()
    return bool(started == update.started_at)
