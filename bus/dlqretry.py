"""Re-driving dead letters on the current routes: the one code path behind ``ironbus dlq retry`` and the
console's retry button.

A dead letter is either a delivery that failed (its body is the event's wire form: it is re-queued, pinned to
its route and target) or a follow-up that could not be built after a delivery succeeded (rebuilt from the
stored result with the current routes and mappings, without calling the target again).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from adapters.base import Adapter
from bus.errors import ConfigError
from bus.followups import FollowUpLetter, Redriven, parse_letter, redrive
from bus.frontdoor import FrontDoor, Pinned
from bus.journal import Journal
from bus.journal.records import DeadLetterRow
from bus.pipeline import Pipeline
from bus.queue.base import Queue
from bus.refusals import RefusedLetter, Reread, parse_refused, reread

__all__ = ["Retried", "retry_dead_letters"]


@dataclass
class Retried:
    """What a retry did: ``requeued`` dead-letter ids, and the follow-ups re-emitted or still failing."""

    requeued: list[int] = field(default_factory=list)
    followups: Redriven | None = None
    skipped: list[int] = field(default_factory=list)  # not dead (any more): already retried or purged
    reread: Reread | None = None  # refused inbound documents read again (bus.refusals)

    @property
    def failed(self) -> list[tuple[FollowUpLetter | RefusedLetter, str]]:
        out: list[tuple[FollowUpLetter | RefusedLetter, str]] = []
        if self.followups is not None:
            out += [(letter, why.reason) for letter, why in self.followups.failed]
        if self.reread is not None:
            out += list(self.reread.failed)
        return out


def retry_dead_letters(journal: Journal, rows: Sequence[DeadLetterRow], queue: Queue,
                       pipeline: Callable[[], Pipeline | None],
                       adapter_for: Callable[[str], Adapter | None] | None = None) -> Retried:
    """Re-queue ``rows`` (only those still ``dead``) on the current routes through the front door; ``pipeline()``
    is asked for the routes only when a follow-up letter needs rebuilding (ConfigError when there are none);
    ``adapter_for`` gives the open adapter of a system whose refused documents are read again (bus.refusals).
    The same steps as ``ironbus dlq retry`` (:func:`bus.replay.retry_dead_letters`, :func:`bus.followups.redrive`),
    with what happened to each letter for the console to show."""
    out = Retried(skipped=[r.id for r in rows if r.state != "dead"])
    rows = [r for r in rows if r.state == "dead"]
    refused = [found for r in rows if (found := parse_refused(r)) is not None]
    if refused and adapter_for is None:
        raise ConfigError(f"dead letter(s) {', '.join(str(r.id) for r in refused)} are refused inbound documents, "
                          "read again by their system's adapter, which is not available here")
    rows = [r for r in rows if r.id not in {found.id for found in refused}]
    followups = {r.id: letter for r in rows if (letter := parse_letter(r)) is not None}
    built = pipeline() if followups else None
    if followups and built is None:
        raise ConfigError(f"dead letter(s) {', '.join(map(str, sorted(followups)))} are follow-ups not emitted, "
                          "rebuilt with the routes file that emits them, which was not found")
    plain = [r for r in rows if r.id not in followups]
    door = FrontDoor(journal, queue, built)
    try:
        if plain:
            events = {r.event_id: journal.get_event(r.event_id) for r in plain if r.event_id}
            door.submit([Pinned(r.body, (event.key if (event := events.get(r.event_id)) else None)
                                if r.event_id else None, r.route, r.target, headers={"redrive": str(r.id)})
                         for r in plain], "redrive")
            journal.mark_dead_letters([r.id for r in plain], "retried")
        out.requeued = [r.id for r in plain]
        if followups and built is not None:
            out.followups = redrive(list(followups.values()), built, journal, door)
        if refused and adapter_for is not None:
            out.reread = reread(refused, adapter_for, journal, door)
    finally:
        door.close()
    return out
