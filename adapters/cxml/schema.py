"""Validation of inbound cXML against our own schema of the elements the bus reads: ``schemas/cxml/inbound.xsd``.

The cXML DTDs are Ariba's; their licence lets anyone copy and distribute the *unmodified* specification with the
licence attached, but its text is not published where this project could attach it, and every cXML version has
its own DTD set, so the bus validates against a schema of its own (XML Schema, read once, checked with lxml)
and leaves full DTD validation to the ``dtd`` setting. The document was already parsed safely
(:func:`bus.xmldict.xml_to_dict`: no entity declarations, no DTD, size and depth limits); lxml reads it again
with entities, DTD loading and the network off. An error names the element (its path) and the line.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from bus.errors import PermanentError

__all__ = ["SCHEMA", "SchemaInvalid", "validate"]

#: The schema file (shipped with the package's schemas).
SCHEMA = Path(__file__).resolve().parents[2] / "schemas" / "cxml" / "inbound.xsd"

_loaded: Any = None
_lock = threading.Lock()


class SchemaInvalid(PermanentError):
    """A document our schema refuses: ``path`` is the element (``/cXML/Request/…``), ``line`` its line."""

    def __init__(self, path: str, line: int, message: str) -> None:
        self.path, self.line = path, line
        super().__init__(f"{path} (line {line}): {message}")


def _schema() -> Any:
    global _loaded
    with _lock:
        if _loaded is None:
            from lxml import etree  # type: ignore[import-untyped]

            _loaded = etree.XMLSchema(etree.parse(str(SCHEMA), etree.XMLParser(resolve_entities=False,
                                                                                 no_network=True)))
        return _loaded


def validate(body: bytes) -> None:
    """Raise :class:`SchemaInvalid` for the first error of ``body`` against ``schemas/cxml/inbound.xsd``."""
    from lxml import etree

    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    try:
        tree = etree.fromstring(body, parser)
    except etree.XMLSyntaxError as exc:  # well-formed for expat, not for a namespace-aware reader (a bad prefix)
        raise SchemaInvalid("/", exc.lineno or 0, str(exc)) from None
    schema = _schema()
    with _lock:  # an XMLSchema object is not safe to share between threads while it validates
        if schema.validate(tree):
            return
        errors = list(schema.error_log)
    first = errors[0]
    raise SchemaInvalid(first.path or "/", first.line, first.message)
