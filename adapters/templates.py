"""``{{ jmespath }}`` text templates for adapters that compose messages or file names from a payload.

Used by the email, chat and file adapters. A template is compiled once, when the system is configured.
"""

from __future__ import annotations

import functools
import html
import re
from typing import Any

import orjson

from bus.errors import MappingError, PermanentError
from bus.expr import Expression, compile_expression

__all__ = ["TextTemplate", "cached_template"]

_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return ", ".join(_text(v) for v in value)
    return orjson.dumps(value).decode()


class TextTemplate:
    """Text with ``{{ jmespath }}`` placeholders, compiled once.

    A placeholder that yields null is a :class:`PermanentError` naming it (the payload lacks what the message
    needs; retrying will not change that); write ``{{ name || 'customer' }}`` for a default. A template that
    is exactly one placeholder renders to the raw value (a list of recipients stays a list). Single braces
    are literal, so HTML and JSON bodies need no escaping.
    """

    def __init__(self, text: str, where: str = "template") -> None:
        self.text = text
        self.where = where
        self.parts: list[str | Expression] = []
        position = 0
        for match in _PLACEHOLDER.finditer(text):
            if match.start() > position:
                self.parts.append(text[position:match.start()])
            self.parts.append(compile_expression(match.group(1).strip(), f"{where} placeholder"))
            position = match.end()
        if position < len(text):
            self.parts.append(text[position:])

    def _value(self, expression: Expression, payload: Any) -> Any:
        try:
            value = expression.search(payload)
        except MappingError as exc:
            raise PermanentError(f"{self.where}: {exc}") from None
        if value is None:
            raise PermanentError(f"{self.where}: {{{{ {expression.text} }}}} is null or missing in the payload")
        return value

    def render_value(self, payload: Any) -> Any:
        """The raw value when the template is a single placeholder, else the rendered text."""
        if len(self.parts) == 1 and isinstance(self.parts[0], Expression):
            return self._value(self.parts[0], payload)
        return self.render(payload)

    def render(self, payload: Any, escape: bool = False) -> str:
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
            else:
                text = _text(self._value(part, payload))
                out.append(html.escape(text) if escape else text)
        return "".join(out)


@functools.lru_cache(maxsize=1024)
def cached_template(text: str, where: str) -> TextTemplate:
    """A compiled template for text that comes with each call (route ``args``): compiled once, not per message."""
    return TextTemplate(text, where)
