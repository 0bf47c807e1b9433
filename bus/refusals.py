"""Refused inbound documents as dead letters, and reading them again (``ironbus dlq retry``).

An adapter that refuses a document a partner sent (a broken AS2 signature, a truncated interchange, an invalid
cXML request …) answers the partner as its protocol says and hands the document to :meth:`Adapter.refuse`.
The bus binds :class:`JournalRefusals` there, which keeps it as a dead letter:

* ``route`` is the trigger's event type (``<system>.<trigger>``), ``target`` empty, ``error_kind``
  :data:`KIND`, ``reason`` names the partner and says why;
* ``body`` is a JSON document (:func:`letter_body`) with the document itself (``text`` when it is UTF-8,
  else ``base64``) and what the adapter needs to re-read it (``meta``);
* ``event_id`` is derived from the refusal's key, so the same file read again after a crash keeps one letter.

A retry does not re-queue the body (it is no event): :func:`reread` opens the system's adapter with the current
settings, asks it to :meth:`~adapters.base.Adapter.reprocess` the document and puts what comes out on the bus as
events of the trigger (origin ``redrive``); a document still refused stays ``dead`` with the new reason.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog

from adapters.base import Adapter, Refused
from bus.config import Config
from bus.envelope import Event
from bus.errors import ConfigError, DeliveryError
from bus.frontdoor import FrontDoor
from bus.journal import Journal
from bus.journal.records import DeadLetter, DeadLetterRow

__all__ = ["KIND", "JournalRefusals", "RefusedLetter", "Reread", "SystemAdapters", "letter_body", "parse_refused",
           "reread"]

log = structlog.get_logger(__name__)

#: ``error_kind`` of a refused inbound document's dead letter.
KIND = "refused"
_NAMESPACE = uuid.UUID("0f5d3c1e-7a43-4c0e-9a63-5d2b8c7e4f10")


def letter_body(system: str, refused: Refused) -> bytes:
    """The dead letter's body: the document and what re-reading it needs, as JSON."""
    doc: dict[str, Any] = {"refused": 1, "system": system, "trigger": refused.trigger, "partner": refused.partner,
                           "document": refused.document, "reference": refused.reference,
                           "meta": dict(refused.meta), "key": refused.key}
    try:
        doc["text"] = refused.body.decode("utf-8")
    except UnicodeDecodeError:
        doc["base64"] = base64.b64encode(refused.body).decode("ascii")
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2)


def letter_for(system: str, refused: Refused) -> DeadLetter:
    key = refused.key or hashlib.sha256(refused.body).hexdigest()
    what = refused.document or "document"
    who = refused.partner or "an unknown sender"
    return DeadLetter(body=letter_body(system, refused), reason=f"refused {what} from {who}: {refused.reason}",
                      event_id=str(uuid.uuid5(_NAMESPACE, f"{system}.{refused.trigger}\x00{key}")),
                      route=f"{system}.{refused.trigger}", target=None, error_kind=KIND)


class JournalRefusals:
    """The :class:`~adapters.base.RefusalSink` the bus binds: refused documents become dead letters."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def __call__(self, system: str, refused: Refused) -> None:
        letter = letter_for(system, refused)
        if letter.event_id is not None and self.journal.has_dead_letter(letter.event_id):
            return  # the same document read again (a poll repeated after a crash): one letter is enough
        self.journal.dead_letter([letter])


@dataclass(frozen=True)
class RefusedLetter:
    """A dead letter that holds a refused inbound document."""

    id: int
    event_id: str | None
    system: str
    refused: Refused


def parse_refused(row: DeadLetterRow) -> RefusedLetter | None:
    """The refused document ``row`` holds, or None when it is another kind of letter."""
    if row.error_kind != KIND:
        return None
    try:
        doc = orjson.loads(row.body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict) or doc.get("refused") != 1 or not isinstance(doc.get("system"), str):
        return None
    if isinstance(doc.get("text"), str):
        body = doc["text"].encode("utf-8")
    else:
        body = base64.b64decode(str(doc.get("base64") or ""))
    meta = doc.get("meta")
    return RefusedLetter(row.id, row.event_id, doc["system"], Refused(
        trigger=str(doc.get("trigger") or ""), reason=row.reason, body=body, partner=doc.get("partner"),
        document=doc.get("document"), reference=str(doc.get("reference") or ""),
        meta=meta if isinstance(meta, Mapping) else {}, key=str(doc.get("key") or "")))


@dataclass
class Reread:
    """What :func:`reread` did: letters whose document now passed (with the events emitted) and those still
    refused (with why)."""

    emitted: list[tuple[RefusedLetter, list[Event]]] = field(default_factory=list)
    failed: list[tuple[RefusedLetter, str]] = field(default_factory=list)


def reread(letters: Sequence[RefusedLetter], adapter_for: Callable[[str], Adapter | None], journal: Journal,
           door: FrontDoor) -> Reread:
    """Re-read each refused document with its system's adapter as the current settings make it
    (``adapter_for(system)``: open, bound to the journal's store; None when the system is gone); emit what
    passes through ``door`` and mark its letter ``retried``; a letter still refused stays ``dead``."""
    out = Reread()
    for letter in letters:
        adapter = adapter_for(letter.system)
        if adapter is None:
            _failed(journal, out, letter, f"system {letter.system!r} is not in the routes file any more")
            continue
        try:
            payloads = adapter.reprocess(letter.refused)
        except (DeliveryError, ConfigError) as exc:
            _failed(journal, out, letter, f"still refused: {exc}")
            continue
        events = [Event(type=f"{letter.system}.{letter.refused.trigger}", source=f"ironbus/{letter.system}",
                        data=payload, id=str(uuid.uuid5(_NAMESPACE, f"retry\x00{letter.id}\x00{i}")))
                  for i, payload in enumerate(payloads)]
        events = door.submit(events, "redrive")
        journal.mark_dead_letters([letter.id], "retried")
        log.info("refused document read again", letter=letter.id, system=letter.system,
                 events=[e.id for e in events])
        out.emitted.append((letter, events))
    return out


class SystemAdapters:
    """Adapters of a routes file built and opened on demand for :func:`reread` (``build(system)`` makes one,
    unopened: ``bus.runtime.open_adapters``); close them after."""

    def __init__(self, config: Config, journal: Journal, build: Callable[[str], Adapter]) -> None:
        self.config, self.journal, self._build = config, journal, build
        self.opened: dict[str, Adapter] = {}

    def __call__(self, system: str) -> Adapter | None:
        if system not in self.config.systems:
            return None
        if system not in self.opened:
            adapter = self._build(system)
            adapter.bind_store(self.journal.adapter_store(system))
            adapter.open()
            self.opened[system] = adapter
        return self.opened[system]

    def close(self) -> None:
        for adapter in self.opened.values():
            adapter.close()
        self.opened.clear()


def _failed(journal: Journal, out: Reread, letter: RefusedLetter, reason: str) -> None:
    journal.failed_again(letter.id, reason)
    out.failed.append((letter, reason))
