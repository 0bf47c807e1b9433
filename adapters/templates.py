"""Templates: text with ``{{ jmespath }}`` placeholders, the one syntax of every adapter.

Email, chat and file adapters compose messages and file names with them; the http adapter its paths, query
parameters and headers (``mode="url"``). A template is compiled once, when the system is configured.

* A placeholder is ``{{ expression }}``: a JMESPath expression (with the bus's mapping functions) on the
  payload. Braces inside it are the expression's own (``{{ values({a: a}) }}``), as are quoted strings.
* Single braces are literal, so HTML and JSON bodies need no escaping; a literal ``{{`` is ``{{ '{{' }}``.
* A placeholder that yields null is a :class:`PermanentError` naming it (the payload lacks what the message
  needs; retrying will not change that); write ``{{ name || 'customer' }}`` for a default.
* ``mode="text"`` renders a list as ``a, b``; ``mode="url"`` renders every non-scalar value as JSON, and
  :meth:`Template.render_path` percent-encodes each value as one path segment (``/`` becomes ``%2F``), so a
  payload can never steer a request to another resource.
"""

from __future__ import annotations

import functools
import html
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import orjson

from bus.errors import ConfigError, MappingError, PermanentError
from bus.expr import Expression, compile_expression

__all__ = ["Mode", "Template", "TemplateSyntaxError", "cached_template", "html_escape", "path_segment",
           "placeholder_end"]

Mode = Literal["text", "url"]


class TemplateSyntaxError(ConfigError):
    """A template that cannot be compiled (an unclosed or empty placeholder, bad JMESPath)."""


def html_escape(text: str) -> str:
    """For values placed in HTML (the email adapter's ``html`` body)."""
    return html.escape(text)


def path_segment(text: str) -> str:
    """A value as one URL path segment: every reserved character percent-encoded."""
    return quote(text, safe="")


@dataclass(frozen=True)
class _Field:
    source: str
    expression: Expression


def _json_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    return orjson.dumps(value).decode()


def _text(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_text(v) for v in value)
    return _json_scalar(value)


def placeholder_end(text: str, start: int) -> int:
    """The index of the ``}}`` closing the placeholder whose expression starts at ``start``, or -1. Braces and
    quoted strings of the expression itself are skipped over."""
    depth, quote_char, i = 0, "", start
    while i < len(text):
        ch = text[i]
        if quote_char:
            if ch == "\\":
                i += 1
            elif ch == quote_char:
                quote_char = ""
        elif ch in "'\"`":
            quote_char = ch
        elif depth == 0 and text.startswith("}}", i):
            return i
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        i += 1
    return -1


class Template:
    """A compiled template; :meth:`render` fills it from a payload (see the module doc)."""

    def __init__(self, text: str, where: str = "template", *, mode: Mode = "text") -> None:
        self.text = text
        self.where = where
        self.mode = mode
        self._show: Callable[[Any], str] = _json_scalar if mode == "url" else _text
        self.parts: list[str | _Field] = []
        i, literal = 0, 0
        while True:
            found = text.find("{{", i)
            if found < 0:
                break
            end = placeholder_end(text, found + 2)
            if end < 0:
                raise TemplateSyntaxError(f"{where}: unclosed '{{{{' at position {found} in {text!r}")
            source = text[found + 2:end].strip()
            if not source:
                raise TemplateSyntaxError(f"{where}: empty '{{{{ }}}}' at position {found} in {text!r}")
            try:
                expression = compile_expression(source)
            except ConfigError as exc:
                raise TemplateSyntaxError(f"{where}: bad JMESPath {source!r} in {text!r}: {exc.message}") from None
            if found > literal:
                self.parts.append(text[literal:found])
            self.parts.append(_Field(source, expression))
            i = literal = end + 2
        if literal < len(text):
            self.parts.append(text[literal:])

    @property
    def fields(self) -> list[str]:
        """The placeholders' expressions, in order."""
        return [p.source for p in self.parts if isinstance(p, _Field)]

    def _failed(self, part: _Field, exc: MappingError) -> PermanentError:
        return PermanentError(f"{self.where}: {{{{ {part.source} }}}} failed on the payload: {exc.reason}")

    def _missing(self, part: _Field) -> PermanentError:
        return PermanentError(f"{self.where}: {{{{ {part.source} }}}} is null or missing in the payload")

    def _value(self, part: _Field, payload: Any) -> Any:
        try:
            value = part.expression.search(payload)
        except MappingError as exc:
            raise self._failed(part, exc) from None
        if value is None:
            raise self._missing(part)
        return value

    def render(self, payload: Any, escape: Callable[[str], str] | None = None) -> str:
        """Fill every placeholder from ``payload``; ``escape`` is applied to each value (never to literals)."""
        show = self._show
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            try:
                value = part.expression.search(payload)
            except MappingError as exc:
                raise self._failed(part, exc) from None
            if value is None:
                raise self._missing(part)
            text = show(value)
            out.append(escape(text) if escape is not None else text)
        return "".join(out)

    def render_path(self, payload: Any) -> str:
        """Render with each value percent-encoded as one URL path segment."""
        return self.render(payload, path_segment)

    def render_value(self, payload: Any) -> Any:
        """The raw value when the template is a single placeholder (a list of recipients stays a list), else
        the rendered text."""
        if len(self.parts) == 1 and isinstance(self.parts[0], _Field):
            return self._value(self.parts[0], payload)
        return self.render(payload)


@functools.lru_cache(maxsize=1024)
def cached_template(text: str, where: str) -> Template:
    """A compiled template for text that comes with each call (route ``args``): compiled once, not per message."""
    return Template(text, where)
