"""Re-queueing in bulk, in bounded memory: ``ironbus replay`` and ``ironbus dlq retry``.

Both read their selection from the journal in keyset-paginated chunks (:mod:`bus.journal.stream`) and put it
back on the bus through the front door as :class:`~bus.frontdoor.Pinned` work, in batches, so a million events
cost a few megabytes and one transaction per batch rather than per event. Each function is the whole loop of
its command, free of argument parsing, so it can be called from anywhere.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from bus.console import Progress
from bus.envelope import Event, new_event_id
from bus.errors import DecodeError
from bus.followups import FollowUpLetter, parse_letter
from bus.frontdoor import FrontDoor, Pinned
from bus.journal import Journal
from bus.journal.stream import (
    EventSelection,
    LetterSelection,
    count_dead_letters,
    count_events,
    dead_letter_chunks,
    event_chunks,
    event_keys,
)
from bus.pipeline import Pipeline
from bus.refusals import RefusedLetter, parse_refused
from bus.replaymarks import batch_marker

__all__ = ["BATCH", "Requeued", "follow_up_letters", "replay_events", "retry_dead_letters"]

T = TypeVar("T")

#: Messages per publish (one queue transaction and one journal transaction each).
BATCH = 500


def _batch_size(rate: float) -> int:
    # with a rate limit, about ten batches a second keep the pace even; without one, the largest batch
    return BATCH if rate <= 0 else max(1, min(BATCH, int(rate / 10)))


def _paced(batches: Iterable[list[T]], rate: float, size: int) -> Iterator[list[T]]:
    """``batches`` re-cut to ``size`` items each, handed out no faster than ``rate`` items per second."""
    started, sent = time.monotonic(), 0
    pending: list[T] = []

    def cut() -> Iterator[list[T]]:
        nonlocal pending
        for chunk in batches:
            pending.extend(chunk)
            while len(pending) >= size:
                yield pending[:size]
                pending = pending[size:]
        if pending:
            yield pending

    for batch in cut():
        if rate > 0:
            wait = started + sent / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)  # the rate limit the operator asked for
        sent += len(batch)
        yield batch


def replay_events(journal: Journal, door: FrontDoor, selection: EventSelection, *, route: str | None = None,
                  force: bool = False, rate: float = 0.0, progress: bool = False) -> int:
    """Publish every selected event again (through ``route`` only, when given) and journal an
    ``ironbus.replayed`` marker for each published batch (:mod:`bus.replaymarks`: ``ironbus trace`` shows it
    under every event of the batch); returns how many. ``rate`` caps events per second (0: none).

    Events received after the replay began are left out, the markers among them: the selection is bounded
    by the moment it started.
    """
    now = time.time()
    selection = selection._replace(until=now if selection.until is None else min(selection.until, now))
    bar = Progress(count_events(journal.engine, selection), "replaying", force=progress)
    headers = {"force": "1"} if force else {}
    run = new_event_id()
    done = 0
    for batch in _paced(event_chunks(journal.engine, selection), rate, _batch_size(rate)):
        door.submit([Pinned(e.body, e.key, route, headers=headers) for e in batch], "replay")
        journal.record_events([(batch_marker(batch, selection, run=run, route=route, force=force), "replay")])
        done += len(batch)
        bar.advance(len(batch))
    return done


@dataclass
class Requeued:
    """What :func:`retry_dead_letters` did: letters re-queued, and the follow-up letters it set aside."""

    count: int = 0
    followups: list[FollowUpLetter] = field(default_factory=list)
    refused: list[RefusedLetter] = field(default_factory=list)  # inbound documents to re-read (bus.refusals)


def retry_dead_letters(journal: Journal, door: FrontDoor, selection: LetterSelection, *, progress: bool = False,
                       keyer: Pipeline | None = None) -> Requeued:
    """Re-queue the selected dead letters with their original bytes and mark them ``retried``, a batch at a
    time (publish, then mark: a crash in between re-queues a batch twice, which idempotency keys absorb, and
    never loses one). Follow-up letters (see :mod:`bus.followups`) are not re-queued but returned, for the
    caller to re-emit.

    With ``keyer`` (the current routes), an event whose business key could not be computed when it arrived (its
    route's mapping failed, on an unlinked customer say) gets it now that it maps, in the journal and in the
    message: the retry and what follows it stay under that key in ``ironbus trace --key``."""
    out = Requeued()
    bar = Progress(count_dead_letters(journal.engine, selection), "re-queueing", force=progress)
    for rows in dead_letter_chunks(journal.engine, selection):
        plain = []
        for row in rows:
            letter = parse_letter(row)
            refused = parse_refused(row) if letter is None else None
            if refused is not None:
                out.refused.append(refused)
            elif letter is None:
                plain.append(row)
            else:
                out.followups.append(letter)
        for batch in (plain[i:i + BATCH] for i in range(0, len(plain), BATCH)):
            keys = event_keys(journal.engine, [r.event_id for r in batch if r.event_id])
            bodies = {r.id: r.body for r in batch}
            if keyer is not None:
                for r in batch:
                    if r.event_id and keys.get(r.event_id) is None:
                        keyed = _rekeyed(journal, keyer, r.body)
                        if keyed is not None:
                            keys[r.event_id], bodies[r.id] = keyed.key, keyed.encode()
            door.submit([Pinned(bodies[r.id], keys.get(r.event_id) if r.event_id else None, r.route, r.target,
                                headers={"redrive": str(r.id)}) for r in batch], "redrive")
            out.count += journal.mark_dead_letters([r.id for r in batch], "retried")
        bar.advance(len(rows))
    return out


def _rekeyed(journal: Journal, keyer: Pipeline, body: bytes) -> Event | None:
    """The letter's event with the key its route gives it now, recorded in the journal; None when it has none."""
    try:
        event = Event.decode(body)
    except DecodeError:
        return None
    keyed = keyer.assign_key(event)
    if keyed.key is None:
        return None
    journal.set_event_key(event.id, keyed.key)
    return keyed


def follow_up_letters(journal: Journal, selection: LetterSelection) -> list[FollowUpLetter]:
    """The follow-up letters among the selected ones (a check before anything is re-queued)."""
    return [letter for rows in dead_letter_chunks(journal.engine, selection) for row in rows
            if (letter := parse_letter(row)) is not None]
