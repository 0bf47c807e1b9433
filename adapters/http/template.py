"""URL and header templates: ``/orders/{order_id}/lines/{lines[0].id}``.

Each ``{…}`` holds a JMESPath expression evaluated on the payload; ``{{`` and ``}}`` are literal braces.
In a path every value is percent-encoded as one segment (``/`` becomes ``%2F``), so a payload can never
steer a request to another resource. A placeholder that finds nothing (null) is a permanent error for that
delivery: the payload does not carry what the operation needs, and retrying will not change that.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson

from bus.errors import ConfigError, MappingError, PermanentError
from bus.expr import Expression, compile_expression

__all__ = ["Template", "TemplateSyntaxError"]


class TemplateSyntaxError(ValueError):
    """A template that cannot be compiled (unbalanced braces, bad JMESPath)."""


@dataclass(frozen=True)
class _Field:
    source: str
    expression: Expression


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    return orjson.dumps(value).decode()


class Template:
    """A compiled template; :meth:`render` fills it from a payload."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.parts: list[str | _Field] = []
        i, literal = 0, []
        while i < len(text):
            ch = text[i]
            if text.startswith("{{", i) or text.startswith("}}", i):
                literal.append(ch)
                i += 2
            elif ch == "{":
                depth, j = 1, i + 1
                # JMESPath itself uses braces (multi-select hashes), so match them rather than stop at the first.
                while j < len(text) and depth:
                    depth += {"{": 1, "}": -1}.get(text[j], 0)
                    j += 1
                if depth:
                    raise TemplateSyntaxError(f"unclosed '{{' at position {i} in {text!r}")
                source = text[i + 1: j - 1].strip()
                if not source:
                    raise TemplateSyntaxError(f"empty '{{}}' at position {i} in {text!r}")
                try:
                    # the bus's compiled expressions: faster per delivery, and the mapping functions work here too
                    expression = compile_expression(source)  # the error below names the template
                except ConfigError as exc:
                    raise TemplateSyntaxError(f"bad JMESPath {source!r} in {text!r}: {exc.message}") from None
                if literal:
                    self.parts.append("".join(literal))
                    literal = []
                self.parts.append(_Field(source, expression))
                i = j
            elif ch == "}":
                raise TemplateSyntaxError(f"unmatched '}}' at position {i} in {text!r} (write '}}}}' for a literal)")
            else:
                literal.append(ch)
                i += 1
        if literal:
            self.parts.append("".join(literal))

    @property
    def fields(self) -> list[str]:
        return [p.source for p in self.parts if isinstance(p, _Field)]

    def render(self, payload: Any, encode: Callable[[str], str] | None = None) -> str:
        """Fill every placeholder from ``payload``; ``encode`` is applied to each value (not to literals)."""
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            try:
                value = part.expression.search(payload)
            except MappingError as exc:
                raise PermanentError(
                    f"template {self.text!r}: {{{part.source}}} failed on the payload: {exc.reason}") from None
            if value is None:
                raise PermanentError(f"template {self.text!r}: {{{part.source}}} is null or missing in the payload")
            text = _scalar(value)
            out.append(encode(text) if encode else text)
        return "".join(out)

    def render_path(self, payload: Any) -> str:
        return self.render(payload, lambda s: quote(s, safe=""))
