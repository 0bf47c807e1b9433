"""One unit of work: a write transaction of the journal's database that several stores take part in.

A worker batch settles in one: delivery states, dead letters, per-key marks, follow-up events and — with the
embedded queue, whose rows live in the same database — the queue's acks and the follow-ups' messages, all
committed together. What cannot join the transaction (a broker's ack) registers :meth:`UnitOfWork.after_commit`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bus.journal.engine import write

__all__ = ["UnitOfWork", "unit_of_work"]


class UnitOfWork:
    """An open write transaction; stores of the journal write through :attr:`conn`."""

    def __init__(self, engine: sa.Engine, conn: Connection) -> None:
        self.engine = engine
        self.conn = conn
        self._after: list[Callable[[], None]] = []

    def after_commit(self, action: Callable[[], None]) -> None:
        """Run ``action`` once the transaction committed (not at all when it failed)."""
        self._after.append(action)


@contextmanager
def unit_of_work(engine: sa.Engine) -> Iterator[UnitOfWork]:
    """A :class:`UnitOfWork` on ``engine``: commits when the block ends, rolls back when it raises."""
    with write(engine) as conn:
        unit = UnitOfWork(engine, conn)
        yield unit
    for action in unit._after:
        action()
