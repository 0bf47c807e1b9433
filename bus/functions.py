"""The functions mapping expressions can call besides JMESPath's own.

:class:`IronbusFunctions` is a :class:`jmespath.functions.Functions` subclass, so the same set works in
jmespath's interpreter and in the compiler of :mod:`bus.expr`. One instance carries what the functions need
from their surroundings: the value maps of a mapping file and the cross-reference store.

Conventions every function follows:

* null in, null out: a missing input gives null (so a field's ``default`` or ``omit_null`` decides), except
  where noted (``coalesce``, ``concat``, ``now``, ``event``);
* bad input raises :class:`FunctionError` naming the function, the value and what was expected; the mapping
  engine re-raises it as a :class:`~bus.errors.MappingError` naming the mapping file and target field.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

from jmespath.functions import Functions

from bus.envelope import Event
from bus.errors import MappingError, UnknownNameError
from bus.xref import XrefStore, normalise_id

__all__ = [
    "CURRENT_EVENT", "FunctionError", "IronbusFunctions", "iso_utc", "parse_moment", "to_decimal_text", "to_number",
]

F = TypeVar("F", bound=Callable[..., Any])

#: The event being mapped; ``event('id')`` reads it. :meth:`bus.mapping.Mapping.apply` sets it.
CURRENT_EVENT: ContextVar[Event | None] = ContextVar("ironbus_current_event", default=None)

_EVENT_ATTRS = frozenset({"id", "type", "source", "subject", "time", "correlationid", "causationid", "key",
                          "sequence", "datacontenttype", "dataschema", "data"})
_MOMENT = "an ISO 8601 date/time, epoch seconds or milliseconds, SAP /Date(ms)/ or a Tryton date dict"
_EPOCH_MS_FROM = 100_000_000_000  # as seconds that is the year 5138; as milliseconds, 1973
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_DIGITS = re.compile(r"[+-]?\d+")
_EPOCH_TEXT = re.compile(r"-?\d+(?:\.\d+)?")
_SAP_DATE = re.compile(r"\\?/Date\((-?\d+)([+-]\d{4})?\)\\?/")
_GROUP_SPACES = re.compile(r"[\s\u00a0\u202f'\u2019]")
_grouped: dict[tuple[str, str], re.Pattern[str]] = {}


class FunctionError(MappingError):
    """A mapping function was given input it cannot use. ``str()`` is the reason alone."""

    def __init__(self, function: str, reason: str) -> None:
        super().__init__("", f"{function}()", reason)
        self.function = function

    def __str__(self) -> str:
        return self.reason


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _bad(function: str, value: Any, expected: str) -> FunctionError:
    return FunctionError(function, f"{function}() cannot read {_show(value)}; expected {expected}")


def _sig(*arguments: dict[str, Any], max_args: int | None = None) -> Callable[[F], F]:
    """jmespath's ``@signature``, typed, plus an upper bound on the arguments of a variadic function."""

    def record(func: F) -> F:
        func.signature = arguments  # type: ignore[attr-defined]
        func.max_args = max_args  # type: ignore[attr-defined]
        return func

    return record


_ANY: dict[str, Any] = {"types": []}
_MORE: dict[str, Any] = {"types": [], "variadic": True}


# --- numbers ---------------------------------------------------------------------------------------------


def _narrow(value: float) -> int | float:
    return int(value) if value.is_integer() else value


def _grouped_pattern(group: str, decimal: str) -> re.Pattern[str]:
    key = (group, decimal)
    if key not in _grouped:
        g, d = re.escape(group), re.escape(decimal)
        _grouped[key] = re.compile(rf"[+-]?(?:\d{{1,3}}(?:{g}\d{{3}})+|\d+)(?:{d}\d+)?")
    return _grouped[key]


def _number_text(function: str, raw: str) -> str | None:
    """The number in ``raw`` as plain decimal text ('.' as the mark, no grouping), or None when blank."""
    text = raw.strip()
    if not text:
        return None
    if _PLAIN_NUMBER.fullmatch(text):
        return text
    compact = _GROUP_SPACES.sub("", text)
    comma, dot = compact.rfind(","), compact.rfind(".")
    # The separator that comes last is the decimal one; a separator that repeats with no other is grouping.
    if comma > dot:
        group, decimal = ".", ","
        if dot < 0 and compact.count(",") > 1:
            group, decimal = ",", "\0"
    else:
        group, decimal = ",", "."
        if comma < 0 and compact.count(".") > 1:
            group, decimal = ".", "\0"
    if not _grouped_pattern(group, decimal).fullmatch(compact):
        raise _bad(function, raw, "a number such as 1234.5, '1.234,56', '1,5' or '1 234.5'")
    return compact.replace(group, "").replace(decimal, ".")


def _parse_number(function: str, raw: str) -> int | float | None:
    text = _number_text(function, raw)
    if text is None:
        return None
    if _DIGITS.fullmatch(text):
        return int(text)
    return _narrow(float(text))


def to_decimal_text(value: Any, function: str = "decimal") -> str | None:
    """An exact decimal string ('.' mark, e.g. '1234.56') from the same inputs :func:`to_number` reads."""
    if type(value) is str:
        text = _number_text(function, value)
        if text is None or "e" in text or "E" in text:
            return text if text is None else _decimal_repr(Decimal(text))
        text = text.lstrip("+")
        if text.startswith("."):
            return "0" + text
        if text.startswith("-."):
            return "-0" + text[1:]
        return text[:-1] if text.endswith(".") else text
    if isinstance(value, dict) and value.get("__class__") == "Decimal":
        return to_decimal_text(str(value.get("decimal", "")), function)
    number = to_number(value, function)
    if number is None:
        return None
    return str(number) if type(number) is int else _decimal_repr(Decimal(repr(number)))


def _decimal_repr(value: Decimal) -> str:
    return format(value, "f")  # fixed-point: '1E+3' would not match the canonical decimal pattern


def to_number(value: Any, function: str = "number") -> int | float | None:
    """A JSON number from a number, a numeric string (decimal comma or point, grouped digits) or a Decimal."""
    kind = type(value)
    if kind is int:
        return value  # type: ignore[no-any-return]
    if kind is str:
        return _parse_number(function, value)
    if kind is float:
        if not math.isfinite(value):
            raise _bad(function, value, "a finite number")
        return _narrow(value)
    if value is None:
        return None
    if isinstance(value, dict) and value.get("__class__") == "Decimal":
        return _parse_number(function, str(value.get("decimal", "")))
    if isinstance(value, Decimal):
        try:
            return _narrow(float(value)) if value.is_finite() else to_number(float(value), function)
        except (InvalidOperation, OverflowError):
            pass
    raise _bad(function, value, "a number or a numeric string")


# --- dates -----------------------------------------------------------------------------------------------


def _epoch(value: float) -> datetime:
    seconds = value / 1000 if abs(value) >= _EPOCH_MS_FROM else value
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)


def parse_moment(value: Any, function: str = "datetime") -> datetime | date:
    """Read a point in time or a calendar date from the shapes vendors send (see module docs).

    Returns an aware datetime for epoch values and SAP dates (UTC), the datetime as written for ISO strings
    (naive when the string has no offset), and a :class:`date` for date-only values.
    """
    try:
        if isinstance(value, str):
            text = value.strip()
            if _EPOCH_TEXT.fullmatch(text) and len(text.split(".")[0].lstrip("-")) > 8:
                return _epoch(float(text))
            sap = _SAP_DATE.fullmatch(text)
            if sap:
                return _epoch(int(sap.group(1)) / 1000)
            if len(text) == 10:
                return date.fromisoformat(text)
            return datetime.fromisoformat(text)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return _epoch(value)
        if isinstance(value, dict):
            kind = value.get("__class__")
            if kind == "date":
                return date(value["year"], value["month"], value["day"])
            if kind == "datetime":
                return datetime(value["year"], value["month"], value["day"], value.get("hour", 0),
                                value.get("minute", 0), value.get("second", 0), value.get("microsecond", 0))
        if isinstance(value, datetime | date):
            return value
    except (ValueError, TypeError, KeyError, OverflowError):
        pass
    raise _bad(function, value, _MOMENT)


def iso_utc(moment: datetime | date) -> str:
    """ISO 8601 in UTC with a ``Z``: seconds, or milli/microseconds when the value has them."""
    if not isinstance(moment, datetime):
        moment = datetime(moment.year, moment.month, moment.day)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    micro = moment.microsecond
    spec = "seconds" if micro == 0 else "milliseconds" if micro % 1000 == 0 else "microseconds"
    return moment.isoformat(timespec=spec) + "Z"


# --- text ------------------------------------------------------------------------------------------------


def _text(function: str, value: Any) -> str:
    kind = type(value)
    if kind is str:
        return value  # type: ignore[no-any-return]
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if kind is float:
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, dict) and value.get("__class__") == "Decimal":
        return str(value.get("decimal"))
    raise _bad(function, value, "a string, number or boolean")


def _need_str(function: str, value: Any, what: str = "a string") -> str:
    if type(value) is not str:
        raise _bad(function, value, what)
    return value  # type: ignore[no-any-return]


class IronbusFunctions(Functions):  # type: ignore[misc]
    """JMESPath's built-in functions plus ironbus's mapping functions (see ``docs/mapping.md``)."""

    #: Names added by ironbus (the others are JMESPath's own).
    OWN = frozenset({"value_map", "xref", "xref_to", "date", "datetime", "number", "decimal", "integer", "string",
                     "concat", "coalesce", "lower", "upper", "trim", "split", "now", "event"})

    def __init__(self, value_maps: Mapping[str, Mapping[Any, Any]] | None = None,
                 xref: XrefStore | None = None) -> None:
        super().__init__()
        # Keys are compared as text: YAML keys are strings while payload values may be numbers.
        self.value_maps: dict[str, dict[str, Any]] = {
            name: {k if isinstance(k, str) else _text("value_map", k): v for k, v in table.items()}
            for name, table in (value_maps or {}).items()
        }
        self.xref = xref

    def check_static(self, name: str, literals: list[Any]) -> None:
        """Checks made when an expression compiles: a value map named by a literal must exist.

        ``literals`` holds each argument's literal value, or ``...`` when the argument is not a literal.
        """
        if name == "value_map" and literals and isinstance(literals[0], str) and literals[0] not in self.value_maps:
            raise UnknownNameError("value map", literals[0], self.value_maps)

    # -- value maps and cross references

    @_sig({"types": []}, _MORE, max_args=3)
    def _func_value_map(self, name: Any, value: Any, *default: Any) -> Any:
        table = self.value_maps.get(_need_str("value_map", name, "a value map name"))
        if table is None:
            known = ", ".join(sorted(self.value_maps)) or "none defined"
            raise FunctionError("value_map", f"unknown value map {name!r} (known: {known})")
        if value is None:
            return None
        key = value if type(value) is str else _text("value_map", value)
        try:
            return table[key]
        except KeyError:
            if default:
                return default[0]
            known = ", ".join(repr(k) for k in list(table)[:10])
            raise FunctionError("value_map", f"value map {name!r} has no entry for {value!r} (known: {known}); "
                                f"add it to value_maps.{name} or pass a default as third argument") from None

    def _store(self, function: str) -> XrefStore:
        if self.xref is None:
            raise FunctionError(function, f"{function}() needs a cross-reference store, and none is configured")
        return self.xref

    @_sig(_ANY, _ANY, _ANY)
    def _func_xref(self, entity: Any, system: Any, system_id: Any) -> str | None:
        if system_id is None:
            return None
        entity, system = _need_str("xref", entity, "an entity name"), _need_str("xref", system, "a system name")
        if isinstance(system_id, list | dict | bool):
            raise _bad("xref", system_id, "an id (string or number)")
        sid = normalise_id(system_id)
        found = self._store("xref").lookup(entity, system, sid)
        if found is None:
            raise FunctionError("xref", f"no cross-reference for {entity} {system}:{sid}; "
                                f"link it with `ironbus xref set {entity} <canonical> {system} {sid}`")
        return found

    @_sig(_ANY, _ANY, _ANY)
    def _func_xref_to(self, entity: Any, system: Any, canonical_id: Any) -> str | None:
        if canonical_id is None:
            return None
        entity, system = _need_str("xref_to", entity, "an entity name"), _need_str("xref_to", system, "a system name")
        if isinstance(canonical_id, list | dict | bool):
            raise _bad("xref_to", canonical_id, "an id (string or number)")
        cid = normalise_id(canonical_id)
        found = self._store("xref_to").reverse(entity, system, cid)
        if found is None:
            raise FunctionError("xref_to", f"no cross-reference for {entity} {cid} in {system}; "
                                f"link it with `ironbus xref set {entity} {cid} {system} <{system} id>`")
        return found

    # -- conversions

    @_sig(_ANY)
    def _func_date(self, value: Any) -> str | None:
        if value is None or value == "":
            return None
        moment = parse_moment(value, "date")
        return (moment.date() if isinstance(moment, datetime) else moment).isoformat()

    @_sig(_ANY)
    def _func_datetime(self, value: Any) -> str | None:
        if value is None or value == "":
            return None
        return iso_utc(parse_moment(value, "datetime"))

    @_sig(_ANY)
    def _func_number(self, value: Any) -> int | float | None:
        return to_number(value, "number")

    @_sig(_ANY)
    def _func_decimal(self, value: Any) -> str | None:
        return to_decimal_text(value, "decimal")

    @_sig(_ANY)
    def _func_integer(self, value: Any) -> int | None:
        number = to_number(value, "integer")
        if number is None or type(number) is int:
            return number
        raise _bad("integer", value, "a whole number")

    @_sig(_ANY)
    def _func_string(self, value: Any) -> str | None:
        return None if value is None else _text("string", value)

    @_sig(_MORE)
    def _func_concat(self, *values: Any) -> str | None:
        parts = [_text("concat", v) for v in values if v is not None]
        return "".join(parts) if parts else None

    @_sig(_MORE)
    def _func_coalesce(self, *values: Any) -> Any:
        for value in values:
            if value is None or (type(value) in (str, list, dict) and not value):
                continue
            return value
        return None

    # -- text

    @_sig(_ANY)
    def _func_lower(self, value: Any) -> str | None:
        return None if value is None else _need_str("lower", value).lower()

    @_sig(_ANY)
    def _func_upper(self, value: Any) -> str | None:
        return None if value is None else _need_str("upper", value).upper()

    @_sig(_ANY)
    def _func_trim(self, value: Any) -> str | None:
        return None if value is None else _need_str("trim", value).strip()

    @_sig(_ANY, _ANY)
    def _func_split(self, value: Any, separator: Any) -> list[str] | None:
        sep = _need_str("split", separator, "a non-empty separator string")
        if not sep:
            raise _bad("split", separator, "a non-empty separator string")
        return None if value is None else _need_str("split", value).split(sep)

    # -- context

    @_sig()
    def _func_now(self) -> str:
        return iso_utc(datetime.now(UTC))

    @_sig(_ANY)
    def _func_event(self, attribute: Any) -> Any:
        name = _need_str("event", attribute, "an event attribute name such as 'id'")
        event = CURRENT_EVENT.get()
        if event is None:
            raise FunctionError("event", f"event({name!r}) used where no event is being mapped")
        if name in _EVENT_ATTRS:
            return getattr(event, name)
        return event.extensions.get(name)
