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

from collections.abc import Callable, Mapping
from contextvars import ContextVar
from datetime import UTC, date, datetime
from typing import Any, TypeVar

from jmespath.functions import Functions

from bus.convert import (
    FunctionError,
    iso_utc,
    parse_moment,
    to_date,
    to_datetime,
    to_decimal_text,
    to_integer,
    to_number,
)
from bus.convert import bad_input as _bad
from bus.envelope import Event
from bus.errors import UnknownNameError
from bus.xref import XrefStore, normalise_id

__all__ = [
    "CURRENT_EVENT", "NOT_LITERAL", "FunctionError", "IronbusFunctions", "iso_utc", "parse_moment", "to_date",
    "to_datetime", "to_decimal_text", "to_integer", "to_number",
]

F = TypeVar("F", bound=Callable[..., Any])

#: The event being mapped; ``event('id')`` reads it. :meth:`bus.mapping.Mapping.apply` sets it.
CURRENT_EVENT: ContextVar[Event | None] = ContextVar("ironbus_current_event", default=None)

_EVENT_ATTRS = frozenset({"id", "type", "source", "subject", "time", "correlationid", "causationid", "key",
                          "sequence", "datacontenttype", "dataschema", "data"})


def _sig(*arguments: dict[str, Any], max_args: int | None = None) -> Callable[[F], F]:
    """jmespath's ``@signature``, typed, plus an upper bound on the arguments of a variadic function."""

    def record(func: F) -> F:
        func.signature = arguments  # type: ignore[attr-defined]
        func.max_args = max_args  # type: ignore[attr-defined]
        return func

    return record


_ANY: dict[str, Any] = {"types": []}
_MISSING: Any = object()
#: What :meth:`IronbusFunctions.check_static`/``specialize`` receive for an argument that is not a literal.
NOT_LITERAL: Any = ...
_MORE: dict[str, Any] = {"types": [], "variadic": True}


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



#: Month names and the long date pattern per language, for ``long_date``.
_MONTHS: dict[str, tuple[list[str], str]] = {
    "en": ("January February March April May June July August September October November December".split(),
           "{d} {m} {y}"),
    "fr": ("janvier février mars avril mai juin juillet août septembre octobre novembre décembre".split(),
           "{d} {m} {y}"),
    "de": ("Januar Februar März April Mai Juni Juli August September Oktober November Dezember".split(),
           "{d}. {m} {y}"),
    "es": ("enero febrero marzo abril mayo junio julio agosto septiembre octubre noviembre diciembre".split(),
           "{d} de {m} de {y}"),
    "nl": ("januari februari maart april mei juni juli augustus september oktober november december".split(),
           "{d} {m} {y}"),
}

class IronbusFunctions(Functions):  # type: ignore[misc]
    """JMESPath's built-in functions plus ironbus's mapping functions (see ``docs/mapping.md``)."""

    #: Names added by ironbus (the others are JMESPath's own).
    OWN: frozenset[str] = frozenset()  # set below the class: every _func_* this class adds to JMESPath's

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

    def specialize(self, name: str, literals: list[Any]) -> Callable[[Any], Any] | None:
        """A one-argument callable for a call whose other arguments are constants, or None.

        ``value_map('unit', unit)`` and ``xref('material', 'crm', product.id)`` name their table by literals;
        resolving the table once, when the expression compiles, leaves one dict lookup per message instead
        of re-checking names and arguments on every call (they run once per line of every order).
        ``literals`` is as for :meth:`check_static`; ``...`` marks the single dynamic argument.
        """
        dynamic = [i for i, value in enumerate(literals) if value is NOT_LITERAL]
        if len(dynamic) != 1:
            return None
        if name == "value_map" and dynamic == [1] and len(literals) in (2, 3) and type(literals[0]) is str:
            table = self.value_maps.get(literals[0])
            if table is None:
                return None  # the generic path raises the error naming the known maps
            return _value_map_of(literals[0], table, literals[2:])
        if name == "xref" and dynamic == [2] and type(literals[0]) is str and type(literals[1]) is str:
            return _xref_of(self, literals[0], literals[1])
        return None

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
        return _value_map_of(name, table, list(default))(value)  # the same lookup compiled calls use

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
        return _xref_of(self, entity, system)(system_id)  # the same lookup compiled calls use

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
            error = FunctionError("xref_to", f"no cross-reference for {entity} {cid} in {system}; "
                                  f"link it with `ironbus xref set {entity} {cid} {system} <{system} id>`")
            error.waiting_for = (entity, system, cid)
            raise error
        return found

    # -- conversions

    @_sig(_ANY)
    def _func_date(self, value: Any) -> str | None:
        return to_date(value)

    @_sig(_ANY)
    def _func_datetime(self, value: Any) -> str | None:
        return to_datetime(value)

    @_sig(_ANY, _ANY)
    def _func_date_from(self, value: Any, pattern: Any) -> str | None:
        # EDI dates ('20240501', '240501', '202405011230') are digit strings that date() would read as epoch
        # seconds, so they are read with an explicit strptime pattern instead.
        if value is None or value == "":
            return None
        fmt = _need_str("date_from", pattern, "a strptime pattern such as '%Y%m%d'")
        text = _need_str("date_from", value, f"a date written as {fmt!r}")
        try:
            moment = datetime.strptime(text, fmt)
        except ValueError:
            raise _bad("date_from", value, f"a date written as {fmt!r}") from None
        if "%H" not in fmt:
            return moment.date().isoformat()
        return iso_utc(moment if moment.tzinfo else moment.replace(tzinfo=UTC))

    @_sig(_ANY, _ANY)
    def _func_format_date(self, value: Any, pattern: Any) -> str | None:
        # The way out: a canonical date or date-time as a partner's format wants it (UTC for date-times).
        if value is None or value == "":
            return None
        fmt = _need_str("format_date", pattern, "a strftime pattern such as '%Y%m%d'")
        moment = parse_moment(value, "format_date")
        if isinstance(moment, datetime) and moment.tzinfo is not None:
            moment = moment.astimezone(UTC)
        return moment.strftime(fmt)

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

    @_sig(_ANY, _ANY)
    def _func_long_date(self, value: Any, language: Any) -> str | None:
        """A date as people write it in ``language`` (``en``, ``fr``, ``de``, ``es``, ``nl``; others: English):
        ``long_date('2026-12-24', 'fr')`` is ``24 décembre 2026`` — for messages to customers, not for systems."""
        text = to_date(value)
        if text is None:
            return None
        day = date.fromisoformat(text)
        lang = (_need_str("long_date", language, "a language code such as 'en' or 'fr'") if language else "en")
        lang = lang.lower().replace("_", "-").split("-")[0]
        months, pattern = _MONTHS.get(lang, _MONTHS["en"])
        return pattern.format(d=day.day, m=months[day.month - 1], y=day.year)

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


def _no_entry(name: str, table: Mapping[str, Any], value: Any) -> FunctionError:
    known = ", ".join(repr(k) for k in list(table)[:10])
    return FunctionError("value_map", f"value map {name!r} has no entry for {value!r} (known: {known}); "
                         f"add it to value_maps.{name} or pass a default as third argument")


def _value_map_of(name: str, table: dict[str, Any], default: list[Any]) -> Callable[[Any], Any]:
    """``value_map(name, x[, default])`` with ``name`` and ``default`` fixed (see ``specialize``)."""
    has_default = bool(default)
    fallback = default[0] if default else None

    def value_map(value: Any) -> Any:
        if value is None:
            return None
        found = table.get(value if type(value) is str else _text("value_map", value), _MISSING)
        if found is not _MISSING:
            return found
        if has_default:
            return fallback
        raise _no_entry(name, table, value)

    return value_map


def _xref_id(system_id: Any) -> str:
    kind = type(system_id)
    if kind is str:
        return system_id  # type: ignore[no-any-return]
    if kind is int:
        return str(system_id)
    if kind is float:
        return normalise_id(system_id)
    raise _bad("xref", system_id, "an id (string or number)")


def _no_xref(entity: str, system: str, sid: str) -> FunctionError:
    error = FunctionError("xref", f"no cross-reference for {entity} {system}:{sid}; "
                          f"link it with `ironbus xref set {entity} <canonical> {system} {sid}`")
    error.waiting_for = (entity, system, sid)
    return error


def _xref_of(functions: IronbusFunctions, entity: str, system: str) -> Callable[[Any], str | None]:
    """``xref(entity, system, x)`` with the names fixed (see ``specialize``); the store is read per call."""

    def xref(system_id: Any) -> str | None:
        if system_id is None:
            return None
        store = functions.xref if functions.xref is not None else functions._store("xref")
        sid = system_id if type(system_id) is str else _xref_id(system_id)
        found = store.lookup(entity, system, sid)
        if found is None:
            raise _no_xref(entity, system, sid)
        return found

    return xref


_STATELESS: dict[str, Callable[..., Any]] = {
    "number": to_number, "decimal": to_decimal_text, "integer": to_integer, "date": to_date, "datetime": to_datetime,
}


IronbusFunctions.OWN = frozenset(IronbusFunctions.FUNCTION_TABLE) - frozenset(Functions.FUNCTION_TABLE)
