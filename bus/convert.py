"""Reading numbers and moments from the shapes vendors send: the conversions behind the mapping functions.

``number()``/``decimal()`` read numbers from numbers, numeric strings with a decimal point or comma and grouped
digits ('1.234,56', '1 234.5'), and Tryton's Decimal dicts; ``date()``/``datetime()`` read ISO 8601 (with or
without an offset, also '+0200'), epoch seconds or milliseconds, SAP '/Date(ms)/' and Tryton date dicts. Bad
input raises :class:`FunctionError` naming the function, the value and what was expected.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from bus.errors import MappingError

__all__ = [
    "FunctionError", "bad_input", "iso_utc", "parse_moment", "to_date", "to_datetime", "to_decimal_text",
    "to_integer", "to_number",
]

_MOMENT = "an ISO 8601 date/time, epoch seconds or milliseconds, SAP /Date(ms)/ or a Tryton date dict"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_ORDINAL = _EPOCH.toordinal()
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


bad_input = _bad


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


def _sap_millis(text: str) -> int:
    # '/Date(1130112000000)/' or '\\/Date(1130168212000+0000)\\/': milliseconds since the epoch in UTC; the
    # optional offset only says which zone the sender displayed, so it does not move the instant.
    inner = text[text.index("(") + 1:text.rindex(")")]
    tail = text[text.rindex(")") + 1:]
    if tail not in ("/", "\\/"):
        raise ValueError(text)
    millis = inner[:-5] if len(inner) > 5 and inner[-5] in "+-" and inner[-4:].isdigit() else inner
    if not millis.lstrip("-").isdigit():
        raise ValueError(text)
    return int(millis)


def _sap_date(text: str) -> datetime:
    return _epoch(_sap_millis(text) / 1000)


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
    if type(value) is str and value.startswith("/Date("):
        # SAP dates are whole UTC days in practice: the day number is the answer, no datetime needed.
        try:
            millis = _sap_millis(value)
            if abs(millis) < _EPOCH_MS_FROM * 1000:
                return date.fromordinal(_EPOCH_ORDINAL + millis // 86_400_000).isoformat()
        except (ValueError, OverflowError):
            pass  # parse_moment raises the error that names the value
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
