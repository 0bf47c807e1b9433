"""Per-key state of each route:target — staleness by ``sequence``, and the last payload delivered.

An event whose ``sequence`` is older than the last one applied for its key is stale.

The scope is ``route:target`` — the same order may be at version 7 in one system and still at 6 in another.
The last applied sequence only moves forward after a delivery *succeeded*, so a delivery that is retried,
parked, or redelivered after a crash is never mistaken for a stale one; an equal sequence is a repeat of the
same version and is let through (the idempotency key keeps it from repeating an effect).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:  # the pure pipeline imports payload_digest: it must not load the journal's database layer
    from bus.journal import Journal
    from bus.journal.unit import UnitOfWork

__all__ = ["SequenceGuard", "payload_digest"]


def payload_digest(payload: Any) -> str:
    """A stable digest of a JSON payload (key order does not matter)."""
    return hashlib.blake2b(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS, default=str),
                           digest_size=16).hexdigest()


class SequenceGuard:
    """The per-key marks of a journal (:attr:`bus.journal.Journal.marks`), by the names the rules use."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def last_many(self, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """The last applied sequence of every ``(scope, key)`` that has one, in one query."""
        return self.journal.marks.last_sequences(pairs)

    def applied_many(self, marks: Sequence[tuple[str, str, int]], *, unit: UnitOfWork | None = None) -> None:
        """Record several applied sequences in one transaction (``unit``'s when given)."""
        self.journal.mark_applied(marks, unit=unit)

    def last_digests(self, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """The digest of the last payload delivered for each ``(scope, key)`` that has one, in one query."""
        return self.journal.marks.last_digests(pairs)

    def remember_digests(self, digests: Mapping[tuple[str, str], str], *, unit: UnitOfWork | None = None) -> None:
        """Store the digests of payloads just delivered, in one transaction (``unit``'s when given)."""
        self.journal.remember_digests(dict(digests), unit=unit)
