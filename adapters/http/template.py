"""URL, query and header templates of the http adapter: :class:`adapters.templates.Template` in ``url`` mode.

They are written ``/orders/{{ order_id }}/lines/{{ lines[0].id }}`` like every other template. In ironbus
0.1 the http adapter had a syntax of its own, ``/orders/{order_id}`` with ``{{``/``}}`` for literal braces.
A template still written that way (it has a single ``{`` outside every ``{{ }}``) is read as it always meant,
through :func:`legacy_rewrite`; it is logged when compiled, and ``ironbus lint`` warns on it with its
``{{ }}`` form. That form is read until :data:`LEGACY_REMOVED_IN`; from then on a single brace is literal.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import structlog

from adapters.base import SettingsWarning
from adapters.templates import Template, TemplateSyntaxError, path_segment, placeholder_end
from bus.errors import ConfigError
from bus.expr import compile_expression

__all__ = ["LEGACY_REMOVED_IN", "Template", "TemplateSyntaxError", "legacy_rewrite", "legacy_template_warnings",
           "path_segment", "url_template"]

log = structlog.get_logger(__name__)

#: The release that stops reading single-brace http templates (docs/http-adapter.md says the same).
LEGACY_REMOVED_IN = "0.3"


def _legacy_parts(text: str) -> list[str | tuple[str]]:
    """The old syntax's literals and ``(expression,)`` placeholders; raises what the old parser raised."""
    parts: list[str | tuple[str]] = []
    i, literal = 0, []
    while i < len(text):
        ch = text[i]
        if text.startswith("{{", i) or text.startswith("}}", i):
            literal.append(ch)
            i += 2
        elif ch == "{":
            depth, j = 1, i + 1
            while j < len(text) and depth:  # JMESPath's own braces (multi-select hashes) nest inside
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                j += 1
            if depth:
                raise TemplateSyntaxError(f"unclosed '{{' at position {i} in {text!r}")
            source = text[i + 1: j - 1].strip()
            if not source:
                raise TemplateSyntaxError(f"empty '{{}}' at position {i} in {text!r}")
            try:
                compile_expression(source)
            except ConfigError as exc:
                raise TemplateSyntaxError(f"bad JMESPath {source!r} in {text!r}: {exc.message}") from None
            if literal:
                parts.append("".join(literal))
                literal = []
            parts.append((source,))
            i = j
        elif ch == "}":
            raise TemplateSyntaxError(f"unmatched '}}' at position {i} in {text!r} (write '}}}}' for a literal)")
        else:
            literal.append(ch)
            i += 1
    if literal:
        parts.append("".join(literal))
    return parts


def _is_legacy(text: str) -> bool:
    """A single ``{`` outside every ``{{ }}`` placeholder marks the old syntax (the new one has only literal
    single braces, and a shipped http template never needed a literal brace)."""
    i = 0
    while i < len(text):
        if text.startswith("{{", i):
            end = placeholder_end(text, i + 2)
            i = i + 2 if end < 0 else end + 2
        elif text[i] == "{":
            return True
        else:
            i += 1
    return False


def legacy_rewrite(text: str) -> str | None:
    """The ``{{ }}`` form of a template written in the old single-brace syntax, meaning the same; None when
    ``text`` is not in the old syntax. Raises :class:`TemplateSyntaxError` as the old parser did."""
    if not _is_legacy(text):
        return None
    parts = _legacy_parts(text)
    plain = "".join(f"{{{{ {p[0]} }}}}" if isinstance(p, tuple) else p for p in parts)
    try:
        reread = [p if isinstance(p, str) else (p.source,) for p in Template(plain, mode="url").parts]
    except TemplateSyntaxError:
        reread = []
    if reread == parts:
        return plain
    # a literal brace next to a placeholder or another brace would read as '{{' or '}}': quote the braces
    return _quoted(parts)


def _quoted(parts: list[str | tuple[str]]) -> str:
    def literal(text: str) -> str:
        return "".join("{{ '" + ch + "' }}" if ch in "{}" else ch for ch in text)
    return "".join(f"{{{{ {p[0]} }}}}" if isinstance(p, tuple) else literal(p) for p in parts)


def url_template(text: str, where: str) -> Template:
    """Compile an http template (``where`` names it in errors); the old syntax is read through
    :func:`legacy_rewrite` until :data:`LEGACY_REMOVED_IN`."""
    try:
        rewritten = legacy_rewrite(text)
    except TemplateSyntaxError as exc:
        raise TemplateSyntaxError(f"{where}: {exc.message}") from None
    if rewritten is None:
        return Template(text, where, mode="url")
    log.warning("http.template_deprecated", where=where, template=text, write=rewritten,
                removed_in=LEGACY_REMOVED_IN)
    return Template(rewritten, where, mode="url")


def _templates(settings: Mapping[str, Any]) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Every template of an http system's settings, with its path under ``settings:``."""
    for block, fields in (("operations", ("path", "query", "headers")), ("polls", ("path", "query", "body"))):
        specs = settings.get(block)
        for name, spec in (specs.items() if isinstance(specs, Mapping) else ()):
            if not isinstance(spec, Mapping):
                continue
            for field in fields:
                value = spec.get(field)
                if isinstance(value, str):
                    yield (block, name, field), value
                elif isinstance(value, Mapping):
                    for key, text in value.items():
                        if isinstance(text, str):
                            yield (block, name, field, key), text


def legacy_template_warnings(settings: Mapping[str, Any]) -> list[SettingsWarning]:
    """A warning for each template of ``settings`` in the old single-brace syntax, giving its ``{{ }}`` form."""
    warnings: list[SettingsWarning] = []
    for path, text in _templates(settings):
        try:
            rewritten = legacy_rewrite(text)
        except TemplateSyntaxError:
            continue  # an error, which compiling the settings reports
        if rewritten is not None:
            warnings.append(SettingsWarning(path, (
                f"settings/{'/'.join(map(str, path))}: single-brace template {text!r} is deprecated and read "
                f"until ironbus {LEGACY_REMOVED_IN}; write {rewritten!r}")))
    return warnings
