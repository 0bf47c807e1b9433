"""Parked deliveries: the ones the parker re-drives when their next attempt is due (bus/parking.py)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bus.journal import tables
from bus.journal.engine import read, write
from bus.journal.sql import chunks

__all__ = ["DueParked", "ParkedDeliveries"]

_E, _D = tables.events, tables.deliveries


class DueParked(NamedTuple):
    """A parked delivery whose next attempt is due (see :meth:`ParkedDeliveries.due`)."""

    idempotency_key: str
    route: str
    target: str
    parks: int
    body: bytes  # the encoded event
    key: str | None


class ParkedDeliveries:
    """Parked deliveries in the journal's ``ib_deliveries``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def count(self) -> int:
        """How many deliveries are parked, due or not."""
        with read(self.engine) as conn:
            n = conn.execute(sa.select(sa.func.count()).select_from(_D).where(_D.c.status == "parked")).scalar()
        return int(n or 0)

    def due(self, now: float, limit: int) -> list[DueParked]:
        """Up to ``limit`` parked deliveries due at ``now``, in the order their events arrived (so deliveries
        of one key are re-driven oldest first)."""
        query = (sa.select(_D.c.idempotency_key, _D.c.route, _D.c.target, _D.c.parks, _E.c.body, _E.c.key)
                 .join(_E, _E.c.id == _D.c.event_id)
                 .where(_D.c.status == "parked", _D.c.next_attempt_at <= now)
                 .order_by(_E.c.received_at, _E.c.id, _D.c.idempotency_key).limit(limit))
        with read(self.engine) as conn:
            return [DueParked(r.idempotency_key, r.route, r.target, int(r.parks), bytes(r.body), r.key)
                    for r in conn.execute(query)]

    def unpark(self, idempotency_keys: Sequence[str], due_at: float) -> None:
        """Turn parked deliveries that were due at ``due_at`` back to ``pending`` (their messages were queued
        again). One a worker already took from the queue and parked again — with a later next attempt — stays
        parked: flipping it would leave it pending with no message anywhere."""
        with write(self.engine) as conn:
            for part in chunks(list(idempotency_keys)):
                conn.execute(sa.update(_D).where(_D.c.idempotency_key.in_(part), _D.c.status == "parked",
                                                 _D.c.next_attempt_at <= due_at)
                             .values(status="pending", next_attempt_at=None, updated_at=time.time()))
