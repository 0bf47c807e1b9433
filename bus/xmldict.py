"""XML to plain dicts, safely, so XML payloads (cXML, SOAP) can be mapped with the same JMESPath mappings as JSON.

Shape (the widely used "xmltodict" convention)::

    <Money currency="USD">1.22</Money>        -> {"Money": {"@currency": "USD", "#text": "1.22"}}
    <UnitOfMeasure>EA</UnitOfMeasure>         -> {"UnitOfMeasure": "EA"}
    <UserAgent/>                              -> {"UserAgent": None}
    two or more <Item> siblings               -> {"Item": [..., ...]}

The root element is the single key of the result. Attribute and element names are kept as written,
prefixes included (``@xml:lang``, ``soapenv:Envelope``). Text is stripped; whitespace-only text between
child elements is dropped; comments and processing instructions are ignored. Because a lone element
becomes an object and repeated ones a list, mappings should wrap repeatable elements in JMESPath's
``to_array(...)`` (or the caller passes their names in ``force_list``).

Safety: the parser is expat (the engine behind ``xml.etree.ElementTree``) driven directly, because the
C-accelerated ElementTree parser does not let us refuse entity declarations. A ``<!DOCTYPE …>`` line is
allowed (every cXML document carries one pointing at a remote DTD) but never fetched; any ``<!ENTITY>``
declaration is refused (billion laughs, external entities / XXE), and ``forbid_dtd=True`` refuses a
DOCTYPE altogether.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from xml.parsers import expat

from bus.errors import DecodeError

__all__ = ["DEFAULT_MAX_BYTES", "xml_to_dict"]

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_DEPTH = 200


class _Refused(Exception):
    """Raised from inside an expat handler; turned into DecodeError with the parser's position."""


class _Builder:
    def __init__(self, force_list: frozenset[str], max_depth: int) -> None:
        self.force_list = force_list
        self.max_depth = max_depth
        # Each frame: (tag, attributes-and-children dict, text chunks)
        self.stack: list[tuple[str, dict[str, Any], list[str]]] = []
        self.root: dict[str, Any] | None = None

    def start(self, tag: str, attrs: dict[str, str]) -> None:
        if len(self.stack) >= self.max_depth:
            raise _Refused(f"elements nested deeper than {self.max_depth} levels")
        node: dict[str, Any] = {f"@{name}": value for name, value in attrs.items()}
        self.stack.append((tag, node, []))

    def end(self, tag: str) -> None:
        _, node, chunks = self.stack.pop()
        text = "".join(chunks).strip()
        value: Any
        if node:
            if text:
                node["#text"] = text
            value = node
        else:
            value = text or None
        if not self.stack:
            self.root = {tag: value}
            return
        parent = self.stack[-1][1]
        # Element values are never lists, so a list here is always one we built from repeated siblings.
        if tag in parent:
            existing = parent[tag]
            if isinstance(existing, list):
                existing.append(value)
            else:
                parent[tag] = [existing, value]
        elif tag in self.force_list:
            parent[tag] = [value]
        else:
            parent[tag] = value

    def text(self, data: str) -> None:
        if self.stack:
            self.stack[-1][2].append(data)


def xml_to_dict(
    body: bytes | str,
    *,
    source: str = "<xml>",
    force_list: Iterable[str] = (),
    forbid_dtd: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> dict[str, Any]:
    """Parse an XML document into nested dicts (see the module docstring for the shape).

    ``force_list`` names elements that always become lists, even when they occur once. Raises
    :class:`DecodeError` naming ``source`` and the line and column for malformed XML, a refused DTD or
    entity declaration, a document larger than ``max_bytes`` or nested deeper than ``max_depth``.
    """
    data = body.encode("utf-8") if isinstance(body, str) else body
    if len(data) > max_bytes:
        raise DecodeError(f"{source}: XML document of {len(data)} bytes is larger than the limit of {max_bytes}")
    builder = _Builder(frozenset(force_list), max_depth)
    parser = expat.ParserCreate()
    parser.buffer_text = True
    # Never read external DTDs or parameter entities, whatever the document asks for.
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.text

    def refuse_entity(name: str, *_: Any) -> None:
        raise _Refused(f"entity declaration {name!r} is not allowed (entity expansion is disabled)")

    def refuse_external(*_: Any) -> int:
        raise _Refused("external entity references are not allowed")

    def skipped(name: str, *_: Any) -> None:
        # With an external DTD that we do not read, expat would silently drop &name; and lose data.
        raise _Refused(f"undefined entity &{name}; (entities from external DTDs are not read)")

    def doctype(name: str, *_: Any) -> None:
        if forbid_dtd:
            raise _Refused(f"a DOCTYPE ({name}) is not allowed here")

    parser.EntityDeclHandler = refuse_entity
    parser.UnparsedEntityDeclHandler = refuse_entity
    parser.ExternalEntityRefHandler = refuse_external
    parser.SkippedEntityHandler = skipped
    parser.StartDoctypeDeclHandler = doctype
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        message = expat.ErrorString(exc.code) if exc.code is not None else str(exc)
        raise DecodeError(f"{source}:{exc.lineno}:{exc.offset + 1}: malformed XML: {message}") from None
    except _Refused as exc:
        line, column = parser.CurrentLineNumber, parser.CurrentColumnNumber + 1
        raise DecodeError(f"{source}:{line}:{column}: {exc}") from None
    except (LookupError, UnicodeError, ValueError) as exc:
        # expat looks the declared encoding up in Python's codecs: an unknown one is a LookupError, a codec that
        # fails on the bytes a UnicodeError; both are the document's fault, never the bus's.
        line = parser.CurrentLineNumber
        raise DecodeError(f"{source}:{line}: unsupported or wrong character encoding: {exc}") from None
    except RecursionError:
        raise DecodeError(f"{source}: XML document nested too deeply") from None
    if builder.root is None:
        raise DecodeError(f"{source}: XML document has no root element")
    return builder.root
