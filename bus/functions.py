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
    "CURRENT_EVENT", "FunctionError", "IronbusFunctions", "iso_utc", "parse_moment", "to_date", "to_datetime",
    "to_decimal_text", "to_integer", "to_number",
]

F = TypeVar("F", bound=Callable[..., Any])

#: The event being mapped; ``event('id')`` reads it. :meth:`bus.mapping.Mapping.apply` sets it.
CURRENT_EVENT: ContextVar[Event | None] = ContextVar("ironbus_current_event", default=None)

_EVENT_ATTRS = frozenset({"id", "type", "source", "subject", "time", "correlationid", "causationid", "key",
                          "sequence", "datacontenttype", "dataschema", "data"})
_MOMENT = "an ISO 8601 date/time, epoch seconds or milliseconds, SAP /Date(ms)/ or a Tryton date dict"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EXACT = float(2**53)  # floats hold every integer below this exactly
_EPOCH_MS_FROM = 100_000_000_000  # as seconds that is the year 5138; as milliseconds, 1973
_DIGITS = re.compile(r"[+-]?\d+")
_CANONICAL_DECIMAL = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_EUROPEAN_DECIMAL = re.compile(r"(-?)([0-9]{1,3}(?:\.[0-9]{3})+|[0-9]+),([0-9]+)")
_NO_GROUP_SPACES = str.maketrans("", "", " \u00a0\u202f'\u2019")


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
_MISSING: Any = object()
_MORE: dict[str, Any] = {"types": [], "variadic": True}


# --- numbers ---------------------------------------------------------------------------------------------


def _narrow(value: float) -> int | float:
    return int(value) if value.is_integer() else value


def _number_text(function: str, raw: str) -> str | None:
    """The number in ``raw`` as plain decimal text ('.' as the mark, no grouping), or None when blank."""
    text = raw.strip()
    if not text:
        return None
    # Fast paths for the two forms nearly every system sends: '1234.5' and '1234,5'. float() is the
    # cheapest validator, but it also reads '1_000', 'nan' and non-ASCII digits, which no vendor means.
    if text.isascii() and "_" not in text:
        candidate = text if "," not in text else text.replace(",", ".") if text.count(",") == 1 and \
            "." not in text and " " not in text else ""
        if candidate:
            try:
                if math.isfinite(float(candidate)):  # 'inf', 'nan', '1e999' are not numbers to us
                    return candidate
            except ValueError:
                pass
    grouped = _grouped_number(text)
    if grouped is None:
        raise _bad(function, raw, "a number such as 1234.5, '1.234,56', '1,5' or '1 234.5'")
    return grouped


def _grouped_number(text: str) -> str | None:
    """'1.234,56', '1,234,567.89', '1 234,5', "1'234.50" as plain text; None when it is not such a number.

    The separator that comes last is the decimal mark, unless it is the only kind and repeats (then it
    groups thousands). Plain string operations: this runs per field per message.
    """
    compact = text.translate(_NO_GROUP_SPACES)
    sign = ""
    if compact[:1] in ("+", "-"):
        sign, compact = compact[0], compact[1:]
    comma, dot = compact.rfind(","), compact.rfind(".")
    group, decimal = (".", ",") if comma > dot else (",", ".")
    if (group == "," and comma < 0 and compact.count(".") > 1) or (group == "." and dot < 0 and comma >= 0
                                                                   and compact.count(",") > 1):
        group, decimal = decimal, ""
    whole, frac = compact, ""
    if decimal and decimal in compact:
        whole, _, frac = compact.rpartition(decimal)
        if not (frac.isdigit() and frac.isascii()):
            return None
    parts = whole.split(group)
    digits = "".join(parts)
    if not (digits.isdigit() and digits.isascii()):
        return None
    if len(parts) > 1:
        if len(parts[0]) > 3:
            return None
        for part in parts[1:]:
            if len(part) != 3:
                return None
    return sign + digits + ("." + frac if frac else "")


def _parse_number(function: str, raw: str) -> int | float | None:
    text = _number_text(function, raw)
    if text is None:
        return None
    if text.isdigit():
        return int(text)
    number = float(text)
    # Integral values beyond 2**53 are exact only as int.
    return int(text) if number.is_integer() and abs(number) > 2**53 and _DIGITS.fullmatch(text) else \
        _narrow(number)


def to_decimal_text(value: Any, function: str = "decimal") -> str | None:
    """An exact decimal string ('.' mark, e.g. '1234.56') from the same inputs :func:`to_number` reads."""
    if type(value) is str:
        # The shapes amounts arrive in, cheapest check first: '1234.56', then '1.234,56' / '1234,56'.
        if "," not in value:
            if _CANONICAL_DECIMAL.fullmatch(value):
                return value
        elif european := _EUROPEAN_DECIMAL.fullmatch(value):
            sign, whole, fraction = european.groups()
            return f"{sign}{whole.replace('.', '')}.{fraction}"
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
        if value.isdigit() and value.isascii():
            return int(value)
        # Fast path for '12.5' and '12,5'; grouped forms ('1.234,56') and errors take _parse_number.
        text = value.replace(",", ".") if "," in value and "." not in value and value.count(",") == 1 else value
        if "_" not in text and text.isascii():  # float() itself refuses inner spaces
            try:
                number = float(text)
            except ValueError:
                return _parse_number(function, value)
            if -_EXACT < number < _EXACT:  # also false for inf and nan
                return int(number) if number.is_integer() else number
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
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except OSError:  # some platforms refuse timestamps before 1970 or far ahead; the sum always works
        return _EPOCH + timedelta(seconds=seconds)


def _sap_date(text: str) -> datetime:
    # '/Date(1130112000000)/' or '\\/Date(1130168212000+0000)\\/': milliseconds since the epoch in UTC; the
    # optional offset only says which zone the sender displayed, so it does not move the instant.
    inner = text[text.index("(") + 1:text.rindex(")")]
    tail = text[text.rindex(")") + 1:]
    if tail not in ("/", "\\/"):
        raise ValueError(text)
    millis = inner[:-5] if len(inner) > 5 and inner[-5] in "+-" and inner[-4:].isdigit() else inner
    if not millis.lstrip("-").isdigit():
        raise ValueError(text)
    return _epoch(int(millis) / 1000)


def parse_moment(value: Any, function: str = "datetime") -> datetime | date:
    """Read a point in time or a calendar date from the shapes vendors send (see module docs).

    Returns an aware datetime for epoch values and SAP dates (UTC), the datetime as written for ISO strings
    (naive when the string has no offset), and a :class:`date` for date-only values.
    """
    try:
        kind = type(value)
        if kind is str:
            text = value.strip()
            if text[4:5] == "-":  # ISO 8601 extended form, by far the most common
                return date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text)
            digits = text.lstrip("-").split(".")[0]
            if digits.isdigit() and len(digits) > 8:  # shorter digit strings are ISO basic dates: 20240301
                return _epoch(float(text))
            if text.startswith(("/Date(", "\\/Date(")):
                return _sap_date(text)
            if len(text) == 10:
                return date.fromisoformat(text)
            return datetime.fromisoformat(text)
        if kind is int or kind is float:
            return _epoch(value)
        if isinstance(value, dict):
            tag = value.get("__class__")
            if tag == "date":
                return date(value["year"], value["month"], value["day"])
            if tag == "datetime":
                return datetime(value["year"], value["month"], value["day"], value.get("hour", 0),
                                value.get("minute", 0), value.get("second", 0), value.get("microsecond", 0))
        if isinstance(value, datetime | date):
            return value
    except (ValueError, TypeError, KeyError, OverflowError, OSError):
        pass
    raise _bad(function, value, _MOMENT)


def iso_utc(moment: datetime | date) -> str:
    """ISO 8601 in UTC with a ``Z``: seconds, or milli/microseconds when the value has them."""
    if not isinstance(moment, datetime):
        return f"{moment.isoformat()}T00:00:00Z"
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
        text = moment.isoformat()[:-6]  # drop '+00:00'
    else:
        text = moment.isoformat()
    micro = moment.microsecond
    if micro and micro % 1000 == 0:
        text = text[:-3]  # whole milliseconds: '.500' rather than '.500000'
    return text + "Z"


def to_date(value: Any) -> str | None:
    """``date()``: 'YYYY-MM-DD' from any input :func:`parse_moment` reads; null or '' gives null."""
    if value is None or value == "":
        return None
    if type(value) is str and len(value) == 10 and value[4:5] == "-":
        try:
            date.fromisoformat(value)  # validates; the text is already the canonical form
            return value  # type: ignore[no-any-return]
        except ValueError:
            pass
    moment = parse_moment(value, "date")
    return (moment.date() if isinstance(moment, datetime) else moment).isoformat()


def to_datetime(value: Any) -> str | None:
    """``datetime()``: ISO 8601 UTC with 'Z' from any input :func:`parse_moment` reads."""
    if value is None or value == "":
        return None
    return iso_utc(parse_moment(value, "datetime"))


def to_integer(value: Any) -> int | None:
    """``integer()``: like :func:`to_number`, but a fraction is an error rather than silently cut."""
    number = to_number(value, "integer")
    if number is None or type(number) is int:
        return number
    raise _bad("integer", value, "a whole number")


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

    def implementation(self, name: str) -> Callable[..., Any]:
        """The callable behind function ``name`` for compiled code, called with the arguments only.

        Stateless conversions are handed out as plain functions: one Python frame fewer per call, on the
        functions every line of every order goes through.
        """
        direct = _STATELESS.get(name)
        if direct is not None:
            return direct
        bound: Callable[..., Any] = self.FUNCTION_TABLE[name]["function"].__get__(self)
        return bound

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
        found = table.get(value if type(value) is str else _text("value_map", value), _MISSING)
        if found is not _MISSING:
            return found
        if default:
            return default[0]
        known = ", ".join(repr(k) for k in list(table)[:10])
        raise FunctionError("value_map", f"value map {name!r} has no entry for {value!r} (known: {known}); "
                            f"add it to value_maps.{name} or pass a default as third argument")

    def _store(self, function: str) -> XrefStore:
        if self.xref is None:
            raise FunctionError(function, f"{function}() needs a cross-reference store, and none is configured")
        return self.xref

    @_sig(_ANY, _ANY, _ANY)
    def _func_xref(self, entity: Any, system: Any, system_id: Any) -> str | None:
        if system_id is None:
            return None
        if type(entity) is not str or type(system) is not str:
            raise _bad("xref", entity if type(entity) is not str else system, "entity and system names (strings)")
        kind = type(system_id)
        if kind is str:
            sid = system_id
        elif kind is int:
            sid = str(system_id)
        elif kind is float:
            sid = normalise_id(system_id)
        else:
            raise _bad("xref", system_id, "an id (string or number)")
        store = self.xref if self.xref is not None else self._store("xref")
        found = store.lookup(entity, system, sid)
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
        return to_date(value)

    @_sig(_ANY)
    def _func_datetime(self, value: Any) -> str | None:
        return to_datetime(value)

    @_sig(_ANY)
    def _func_number(self, value: Any) -> int | float | None:
        return to_number(value, "number")

    @_sig(_ANY)
    def _func_decimal(self, value: Any) -> str | None:
        return to_decimal_text(value, "decimal")

    @_sig(_ANY)
    def _func_integer(self, value: Any) -> int | None:
        return to_integer(value)

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


_STATELESS: dict[str, Callable[..., Any]] = {
    "number": to_number, "decimal": to_decimal_text, "integer": to_integer, "date": to_date, "datetime": to_datetime,
}
