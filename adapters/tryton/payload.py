"""Reading canonical operation payloads: typed field access with errors that name the operation and field.

A bad payload is the mapping's fault, never Tryton's, and retrying cannot fix it: every error here is a
:class:`PermanentError` that says which field was wrong and what was expected.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from bus.errors import PermanentError

__all__ = ["Payload"]


class Payload:
    """A payload dict for operation ``op`` (``path`` prefixes nested fields in error messages)."""

    def __init__(self, op: str, data: Any, path: str = "") -> None:
        if not isinstance(data, Mapping):
            raise PermanentError(f"tryton.{op}: payload{' ' + path if path else ''} must be an object, "
                                 f"got {type(data).__name__}")
        self.op = op
        self.data = data
        self.path = path

    def _fail(self, name: str, expected: str, value: Any) -> PermanentError:
        return PermanentError(f"tryton.{self.op}: field {self.path + name!r} must be {expected}, got {value!r:.80}")

    def has(self, name: str) -> bool:
        return self.data.get(name) is not None

    def text(self, name: str, *, required: bool = False) -> str | None:
        value = self.data.get(name)
        if value is None:
            if required:
                raise self._fail(name, "a non-empty string (required)", value)
            return None
        if not isinstance(value, str | int) or isinstance(value, bool) or str(value) == "":
            raise self._fail(name, "a non-empty string", value)
        return str(value)

    def req_text(self, name: str) -> str:
        value = self.text(name, required=True)
        assert value is not None
        return value

    def ref(self, name: str, *, required: bool = False) -> int | None:
        """A Tryton record id (as resolved by the mapping through xref)."""
        value = self.data.get(name)
        if value is None:
            if required:
                raise self._fail(name, "a Tryton record id (required; resolve it with xref_to in the mapping)",
                                 value)
            return None
        if isinstance(value, str) and value.isdigit():
            return int(value)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise self._fail(name, "a positive integer Tryton id", value)
        return value

    def req_ref(self, name: str) -> int:
        value = self.ref(name, required=True)
        assert value is not None
        return value

    def number(self, name: str, *, required: bool = False) -> float | None:
        value = self.data.get(name)
        if value is None:
            if required:
                raise self._fail(name, "a number (required)", value)
            return None
        try:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        except (TypeError, ValueError):
            raise self._fail(name, "a number", value) from None

    def decimal(self, name: str) -> Decimal | None:
        value = self.data.get(name)
        if value is None:
            return None
        try:
            if isinstance(value, bool | float):
                value = str(value)  # via str: a float's binary expansion is not the price the sender meant
            return Decimal(value)
        except (InvalidOperation, TypeError, ValueError):
            raise self._fail(name, "a decimal number or numeric string", value) from None

    def date(self, name: str, *, required: bool = False) -> dt.date | None:
        value = self.data.get(name)
        if value is None:
            if required:
                raise self._fail(name, "a date YYYY-MM-DD (required)", value)
            return None
        try:
            return dt.date.fromisoformat(str(value)[:10])
        except ValueError:
            raise self._fail(name, "a date YYYY-MM-DD", value) from None

    def flag(self, name: str, default: bool) -> bool:
        value = self.data.get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self._fail(name, "true or false", value)
        return value

    def items(self, name: str, *, required: bool = False) -> list[Payload]:
        value = self.data.get(name)
        if value is None:
            if required:
                raise self._fail(name, "a non-empty list (required)", value)
            return []
        if not isinstance(value, list) or (required and not value):
            raise self._fail(name, "a non-empty list" if required else "a list", value)
        return [Payload(self.op, item, f"{self.path}{name}[{i}].") for i, item in enumerate(value)]
