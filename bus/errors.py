"""The ironbus error tree.

Every error the bus raises on purpose is an :class:`IronbusError`. The tree tells the caller what to do:

    IronbusError
    ├── ConfigError            a file an integrator wrote is wrong (routes.yaml, a mapping, a schema, a test)
    │   └── UnknownNameError   a name that refers to nothing; carries "did you mean" suggestions
    ├── MappingError           a mapping expression failed on a given input
    ├── SchemaViolation        a document does not match its canonical schema
    ├── DecodeError            a message body that cannot be decoded (JSON, XML, EDI …)
    └── DeliveryError          an operation on a target system failed
        ├── TransientError     retry later (optionally not before ``retry_after`` seconds)
        │   ├── CircuitOpenError   the system's circuit breaker is open (raised by bus.protection)
        │   └── RateLimited        no rate-limit token in time (raised by bus.protection)
        └── PermanentError     retrying will not help: dead-letter it
            ├── PartialFailure     a grouped or bulk call in which some calls failed: ``results`` per call
            └── WebhookRejected    a webhook request refused by an adapter (an HTTP 4xx)

User errors (config, mapping, schema, decode) render as one line with their location; the CLI prints
``str(error)`` and never a traceback for them. Adapters translate vendor exceptions into
``TransientError`` / ``PermanentError`` at their edge, so the core never catches a vendor library's
exception.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CircuitOpenError",
    "ConfigError",
    "DecodeError",
    "DeliveryError",
    "IronbusError",
    "Location",
    "MappingError",
    "PartialFailure",
    "PermanentError",
    "RateLimited",
    "SchemaViolation",
    "TransientError",
    "UnknownNameError",
    "WebhookRejected",
    "closest",
]


@dataclass(frozen=True)
class Location:
    """Where in an integrator's file something is: 1-based line and column."""

    file: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        if self.line is None:
            return self.file
        if self.column is None:
            return f"{self.file}:{self.line}"
        return f"{self.file}:{self.line}:{self.column}"


class IronbusError(Exception):
    """Base of every error the bus raises on purpose."""


class ConfigError(IronbusError):
    """A configuration file is invalid. ``str()`` is ``file:line:col: message``."""

    def __init__(self, message: str, location: Location | None = None) -> None:
        self.message = message
        self.location = location
        super().__init__(f"{location}: {message}" if location else message)


def closest(name: str, known: Iterable[str]) -> list[str]:
    """Up to three known names that look like ``name`` (for "did you mean")."""
    return difflib.get_close_matches(name, sorted(set(known)), n=3, cutoff=0.6)


class UnknownNameError(ConfigError):
    """A name refers to nothing known (adapter, operation, system, schema, mapping function …)."""

    def __init__(self, kind: str, name: str, known: Iterable[str], location: Location | None = None) -> None:
        self.kind = kind
        self.name = name
        self.known = sorted(set(known))
        self.suggestions = closest(name, self.known)
        hint = f"; did you mean {' or '.join(repr(s) for s in self.suggestions)}?" if self.suggestions else ""
        if not self.suggestions and self.known and len(self.known) <= 12:
            hint = f"; known: {', '.join(self.known)}"
        super().__init__(f"unknown {kind} {name!r}{hint}", location)


class MappingError(IronbusError):
    """A mapping could not produce its output for one input.

    Names the mapping file, the target field and what about the input failed.
    """

    #: ``(entity, system, id)`` when the mapping failed only because a cross reference is not linked *yet*
    #: (master data that a sync route is about to bring): the bus parks the event and tries again.
    waiting_for: tuple[str, str, str] | None = None

    def __init__(self, mapping: str, field: str, reason: str, *,
                 waiting_for: tuple[str, str, str] | None = None) -> None:
        self.mapping = mapping
        self.field = field
        self.reason = reason
        self.waiting_for = waiting_for
        super().__init__(f"{mapping}: field {field!r}: {reason}")


class SchemaViolation(IronbusError):
    """A document does not match a canonical schema. ``errors`` lists ``(json_path, message)``."""

    def __init__(self, schema: str, errors: list[tuple[str, str]]) -> None:
        self.schema = schema
        self.errors = errors
        first = "; ".join(f"{path or '$'}: {msg}" for path, msg in errors[:3])
        more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
        super().__init__(f"does not match schema {schema!r}: {first}{more}")


class DecodeError(IronbusError):
    """A message body could not be decoded (malformed JSON/XML/EDI, wrong content type, too large)."""


class DeliveryError(IronbusError):
    """An operation on a target system failed."""


class TransientError(DeliveryError):
    """Worth retrying: timeouts, 5xx, 429, connection refused, a locked record.

    ``retry_after`` (seconds) is the earliest the system said it wants to be asked again, when it said so.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class PermanentError(DeliveryError):
    """Retrying will not help (validation rejected, 4xx other than 408/429, unknown record): dead-letter."""


class CircuitOpenError(TransientError):
    """The system's circuit is open: do not attempt, park until ``retry_after`` seconds from now."""


class RateLimited(TransientError):
    """No rate-limit token became free within the caller's timeout; try again after ``retry_after``."""


class PartialFailure(PermanentError):
    """Some calls of a bulk call (:meth:`adapters.base.Adapter.call_bulk`) failed and the others succeeded.

    ``results`` has one entry per call, in call order: the call's outcome, or the exception it failed with.
    The bus settles each delivery by its own entry (an exception dead-letters that delivery alone) instead of
    failing the whole batch. Raise it only when the vendor said which calls failed.
    """

    def __init__(self, message: str, results: Sequence[Any]) -> None:
        self.results: list[Any] = list(results)
        super().__init__(message)


class WebhookRejected(PermanentError):
    """A webhook request refused on purpose by an adapter's webhook trigger.

    ``status`` is the HTTP status to answer (400, 401, 403, 413, 415 …); ``reason`` is a short, fixed code
    (``malformed_body``, ``mismatch`` …) that becomes a metric label, so it must never contain request data.
    The message is returned to the caller: it must never contain a secret or a signature value.
    """

    def __init__(self, message: str, *, status: int = 400, reason: str = "bad_request") -> None:
        self.status = status
        self.reason = reason
        super().__init__(message)
