"""Follow-up events: their ids, and re-driving the ones whose ``emit_map`` failed.

A delivered operation's result becomes a follow-up event when its target says ``emit:``. The follow-up's id
is derived from the delivery, so a redelivered batch re-emits the same event and the journal collapses it.
When the ``emit_map`` fails on the result, the delivery stays delivered and a *follow-up dead letter* keeps
the result (:func:`letter_body`). ``ironbus dlq retry`` rebuilds the follow-up from that result with the
current routes and mappings (:func:`rebuild`) and ingests it; the target is not called again.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from bus.envelope import Event
from bus.errors import IronbusError
from bus.frontdoor import FrontDoor
from bus.journal import Journal
from bus.journal.records import DeadLetterRow, idempotency_key
from bus.pipeline import Dispatch, Pipeline

__all__ = ["FollowUpLetter", "FollowUpNotBuilt", "Redriven", "followup_id", "letter_body", "not_emitted",
           "parse_letter", "rebuild", "redrive"]

_NAMESPACE = uuid.UUID("6f1c2a52-8a51-4d8e-9d1e-4b8f2b0c9e11")
# The members of a follow-up letter's body; letters written before "followup" was added hold the other two.
# No event can look like either: an event always has "id", "source" and "type".
_BODY = frozenset({"followup", "delivery", "result"})
_OLD_BODY = frozenset({"delivery", "result"})


def followup_id(delivery_key: str, event_type: str) -> str:
    """The id of the ``event_type`` follow-up of one delivery: the same on every pass, so it exists once."""
    return str(uuid.uuid5(_NAMESPACE, f"{delivery_key}>{event_type}"))


def not_emitted(event_type: str | None, error: Exception) -> str:
    """The dead-letter reason of a follow-up that could not be built."""
    return f"follow-up {event_type!r} not emitted: {error}"


def letter_body(delivery_key: str, event_type: str | None, result: Any) -> bytes:
    """The dead-letter body that stands for a follow-up not emitted: which one, of which delivery, from what."""
    return orjson.dumps({"followup": event_type, "delivery": delivery_key, "result": result}, default=str)


@dataclass(frozen=True)
class FollowUpLetter:
    """A dead letter that stands for a follow-up not emitted after delivery ``delivery`` succeeded."""

    id: int
    event_id: str  # the source event of the delivery, the follow-up's cause
    route: str
    target: str
    delivery: str  # the delivery's idempotency key
    type: str | None  # None in letters written before the type was stored (the reason still names it)
    result: Any  # what the operation returned


def parse_letter(row: DeadLetterRow) -> FollowUpLetter | None:
    """The follow-up ``row`` stands for, or None when it holds a message to re-queue as it is.

    Recognised by its body's members and by its delivery key, which must be the one of the letter's own
    event, route and target.
    """
    if row.event_id is None or row.route is None or row.target is None:
        return None
    try:
        doc = orjson.loads(row.body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict) or frozenset(doc) not in (_BODY, _OLD_BODY):
        return None
    event_type = doc.get("followup")
    if doc["delivery"] != idempotency_key(row.event_id, row.route, row.target) or not (
            event_type is None or isinstance(event_type, str)):
        return None
    return FollowUpLetter(row.id, row.event_id, row.route, row.target, doc["delivery"], event_type, doc["result"])


class FollowUpNotBuilt(IronbusError):
    """A follow-up still cannot be built. ``reason`` is the dead letter's new reason, ``fix`` says what to change."""

    def __init__(self, reason: str, fix: str) -> None:
        self.reason = reason
        self.fix = fix
        super().__init__(f"{reason}; {fix}")


def rebuild(pipeline: Pipeline, letter: FollowUpLetter, source: Event | None) -> Event:
    """The follow-up of ``letter``, built as the worker builds it but with ``pipeline``'s routes and mappings.

    ``source`` is the journaled event the delivery came from. The route runs again to get the mapped event the
    ``emit_map`` sees (mapping only: nothing is delivered). Raises :class:`FollowUpNotBuilt`.
    """
    where = f"route {letter.route!r} target {letter.target}"
    if source is None:
        raise FollowUpNotBuilt(f"follow-up {letter.type!r} not emitted: event {letter.event_id} is no longer in "
                               "the journal", "nothing to rebuild it from; purge the letter")
    route = pipeline.routes.get(letter.route)
    target = next((t for t in route.targets if t.config.name == letter.target), None) if route else None
    if route is None or target is None:
        raise FollowUpNotBuilt(f"follow-up {letter.type!r} not emitted: {where} is no longer in the routes file",
                               "restore it in the routes file, or purge the letter")
    emit = target.config.emit
    if emit is None:
        raise FollowUpNotBuilt(f"follow-up {letter.type!r} not emitted: {where} no longer says 'emit:'",
                               "add 'emit:' back to the target, or purge the letter if no follow-up is wanted")
    mapped = pipeline.run_route(route, source, letter.target)
    if mapped.event is None:
        error = mapped.error or "the route's filter now rejects the event"
        raise FollowUpNotBuilt(not_emitted(emit, IronbusError(f"{where} no longer maps event {source.id}: {error}")),
                               f"fix route {letter.route!r} so that it maps the event again")
    dispatch = Dispatch(route, target, source, mapped.event, None, letter.delivery)
    try:
        follow = pipeline.follow_up(dispatch, letter.result)
    except IronbusError as exc:
        at = f" ({target.config.location})" if target.config.location else ""
        raise FollowUpNotBuilt(not_emitted(emit, exc),
                               f"fix emit_map {target.config.emit_map!r} of {where}{at}; try it on the stored "
                               f"result with 'ironbus map {target.config.emit_map} RESULT.json'") from None
    if follow is None:
        raise FollowUpNotBuilt(f"follow-up {letter.type!r} not emitted: {where}'s emit_when is now false on the "
                               "stored result", "purge the letter: the target no longer emits for this result")
    return follow.with_(id=followup_id(letter.delivery, follow.type))


@dataclass
class Redriven:
    """What :func:`redrive` did: follow-ups emitted (letter, event) and letters still dead (letter, why)."""

    emitted: list[tuple[FollowUpLetter, Event]] = field(default_factory=list)
    failed: list[tuple[FollowUpLetter, FollowUpNotBuilt]] = field(default_factory=list)


def redrive(letters: Sequence[FollowUpLetter], pipeline: Pipeline, journal: Journal, door: FrontDoor) -> Redriven:
    """Rebuild each letter's follow-up and submit the ones that build like the worker does (journal + queue,
    origin ``followup``), then mark their letters ``retried``; a letter whose follow-up still fails stays
    ``dead`` with the new reason. Ingesting twice is harmless: the follow-up's id is fixed by its delivery."""
    done = Redriven()
    for letter in letters:
        try:
            done.emitted.append((letter, rebuild(pipeline, letter, journal.get_event(letter.event_id))))
        except FollowUpNotBuilt as exc:
            done.failed.append((letter, exc))
    if done.emitted:
        door.submit([event for _, event in done.emitted], "followup")
        journal.mark_dead_letters([letter.id for letter, _ in done.emitted], "retried")
    for letter, why in done.failed:
        journal.failed_again(letter.id, why.reason)
    return done
