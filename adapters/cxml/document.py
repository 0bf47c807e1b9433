"""cXML documents: write one from the xmldict shape a mapping gives, read one safely, check what we use.

The shape both ways is :mod:`bus.xmldict`'s (``@attr``, ``#text``, repeated elements as lists), so the same
mappings read inbound documents and write outbound ones. Reading goes through :func:`bus.xmldict.xml_to_dict`
(expat with entity declarations refused, DTDs never fetched, size and depth limits): an XML bomb or an XXE
attempt is a :class:`~bus.errors.DecodeError`, never expanded.

Validation: :func:`check_request` validates against our own XML Schema of the elements and attributes this
adapter reads (``schemas/cxml/inbound.xsd``, :mod:`adapters.cxml.schema`; why not the cXML DTD is said there);
an operator who wants full DTD validation points the ``dtd`` setting at a local copy of the partner's DTD
(checked with lxml, network off).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from xml.etree import ElementTree as ET

from adapters.cxml.schema import SchemaInvalid, validate
from bus.errors import ConfigError, PermanentError
from bus.xmldict import xml_to_dict

__all__ = ["INBOUND_REQUESTS", "check_request", "check_with_dtd", "credentials", "load_dtd", "payload_id", "read_cxml",
           "render", "request_of", "text", "timestamp", "without_secrets"]

INBOUND_REQUESTS = ("ConfirmationRequest", "ShipNoticeRequest", "StatusUpdateRequest")



class Invalid(PermanentError):
    """A document that breaks the cXML rules we check; ``path`` names the element or attribute."""

    def __init__(self, path: str, expected: str) -> None:
        self.path = path
        super().__init__(f"{path}: {expected}")


def payload_id(key: str, domain: str) -> str:
    """A payloadID that is the same on every retry of one delivery (a supplier drops the resend), built from the
    bus's idempotency key, in cXML's recommended ``something@domain`` form."""
    safe = re.sub(r"[^A-Za-z0-9._:-]", "_", key)
    if len(safe) > 180:
        safe = hashlib.sha256(key.encode()).hexdigest()
    return f"{safe}@{domain}"


def timestamp(moment: datetime | None = None) -> str:
    """ISO 8601 with an explicit offset, as the cXML envelope requires."""
    return (moment or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="seconds")


def _fill(element: ET.Element, value: Any, path: str) -> None:
    if value is None:
        return
    if isinstance(value, Mapping):
        for key, child in value.items():
            name = str(key)
            if name.startswith("@"):
                if child is not None:
                    element.set(name[1:], _scalar(child, f"{path}/{name}"))
            elif name == "#text":
                if child is not None:
                    element.text = _scalar(child, f"{path}/#text")
            elif child is not None:  # a null element is left out (mappings write optional ones as null)
                for one in child if isinstance(child, list) else [child]:
                    if not re.fullmatch(r"[A-Za-z_][\w.-]*", name):
                        raise PermanentError(f"{path}: {name!r} is not an XML element name")
                    _fill(ET.SubElement(element, name), one, f"{path}/{name}")
        return
    element.text = _scalar(value, path)


def _scalar(value: Any, path: str) -> str:
    if isinstance(value, bool) or isinstance(value, (Mapping, list)):
        raise PermanentError(f"{path}: expected text or a number, got {type(value).__name__}")
    if isinstance(value, float):
        return format(value, "f").rstrip("0").rstrip(".") if "." in format(value, "f") else format(value, "f")
    return str(value)


def render(document: Mapping[str, Any], *, version: str, dtd: str = "cXML.dtd") -> bytes:
    """Serialize ``{"cXML": {...}}`` with the XML declaration and the DOCTYPE of ``version``."""
    (root_name, content), = document.items()
    root = ET.Element(root_name)
    _fill(root, content, root_name)
    body = ET.tostring(root, encoding="unicode")
    head = (f'<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<!DOCTYPE cXML SYSTEM "http://xml.cxml.org/schemas/cXML/{version}/{dtd}">\n')
    return (head + body).encode("utf-8")


def read_cxml(body: bytes, *, source: str, max_bytes: int) -> dict[str, Any]:
    """Parse a cXML document safely; the root must be ``cXML``."""
    doc = xml_to_dict(body, source=source, max_bytes=max_bytes)
    if "cXML" not in doc or not isinstance(doc["cXML"], Mapping):
        raise Invalid("/", f"expected a cXML document (root element cXML), got {next(iter(doc))!r}")
    return doc


def _node(parent: Any, name: str, path: str, *, required: bool = True) -> Any:
    value = parent.get(name) if isinstance(parent, Mapping) else None
    if value is None and required:
        raise Invalid(f"{path}/{name}", "required element is missing")
    if isinstance(value, list) and required:
        return value[0]
    return value


def _each(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def request_of(doc: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
    """The one request element we accept in an inbound document: ``(name, element)``."""
    request = _node(doc["cXML"], "Request", "/cXML")
    if not isinstance(request, Mapping):
        raise Invalid("/cXML/Request", "expected one request element")
    names = [k for k in request if not k.startswith("@") and k != "#text"]
    found = [n for n in names if n in INBOUND_REQUESTS]
    if len(names) != 1 or not found:
        raise Invalid("/cXML/Request", f"expected one of {', '.join(INBOUND_REQUESTS)}, got "
                                       f"{', '.join(names) or 'nothing'}")
    element = request[found[0]]
    return found[0], element if isinstance(element, Mapping) else {}


def check_request(doc: Mapping[str, Any], body: bytes) -> str:
    """Check an inbound document against our schema of what we use (``schemas/cxml/inbound.xsd``, see
    :mod:`adapters.cxml.schema`); the request's name when it passes, else :class:`Invalid` naming the element
    and line."""
    name, _ = request_of(doc)
    try:
        validate(body)
    except SchemaInvalid as exc:
        raise Invalid(f"{exc.path} (line {exc.line})", str(exc).split(": ", 1)[-1]) from None
    return name


def load_dtd(dtd_path: str) -> Any:
    """A local cXML DTD, read once (lxml); a :class:`ConfigError` when it cannot be read."""
    try:
        from lxml import etree  # type: ignore[import-untyped]
    except ImportError:
        raise ConfigError("setting 'dtd' needs lxml installed (pip install lxml)") from None
    try:
        with open(dtd_path, "rb") as handle:
            return etree.DTD(handle)
    except (OSError, etree.DTDParseError) as exc:
        raise ConfigError(f"setting 'dtd': cannot read {dtd_path}: {exc}") from None


def check_with_dtd(body: bytes, dtd: Any, name: str) -> None:
    """Validate against a loaded DTD. The body was already parsed safely by :func:`read_cxml`; lxml reads it
    again without network, entity expansion or the document's own DOCTYPE."""
    from lxml import etree

    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    try:
        tree = etree.fromstring(body, parser)
    except etree.XMLSyntaxError as exc:  # well-formed for expat, not for a namespace-aware reader
        raise Invalid(f"line {exc.lineno}", str(exc)) from None
    if not dtd.validate(tree):
        errors = dtd.error_log.filter_from_errors()
        first = errors[0] if errors else None
        where = f"line {first.line}" if first else "/"
        raise Invalid(where, f"not valid against {name}: {first.message if first else 'invalid'}")


def credentials(node: Any) -> list[Mapping[str, Any]]:
    """Every Credential of a From/To/Sender element."""
    return [c for c in _each(node.get("Credential") if isinstance(node, Mapping) else None) if isinstance(c, Mapping)]


def text(value: Any) -> str:
    """An element's text whether it was written as text or with attributes (``{"#text": ...}``)."""
    if isinstance(value, Mapping):
        return str(value.get("#text") or "")
    if isinstance(value, list):
        return text(value[0]) if value else ""
    return "" if value is None else str(value)


def without_secrets(doc: dict[str, Any], names: Sequence[str] = ("SharedSecret", "CredentialMac")) -> dict[str, Any]:
    """The document with shared secrets removed, for the event the bus journals."""
    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in names}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value
    result: dict[str, Any] = strip(doc)
    return result
