"""Segments as plain data, both ways: what mappings write for an outbound document and read from an inbound one.

**Outbound** a mapping gives ``segments``: a list whose items are segments or groups of segments, nested as
deep as convenient (a list of lines, each a list of segments) and flattened here. A *segment* is a list whose
first item is its tag (``["BEG", "00", "SA", "PO-1", null, "20240501"]``); elements are strings or numbers,
null for an empty element, or a list for a composite element (``["DTM", ["137", "20240501", "102"]]``). A null
in place of a segment is skipped, so an optional segment is ``cond && [...] || null`` in JMESPath.

**Inbound** the segments of one transaction set / message become a tree (see :func:`segment_tree`): each
segment is an object of its elements named ``<TAG><position>`` (``BAK03``; empty ones left out), a composite
is a list of its components; a segment that occurs once is an object, repeated ones a list (wrap with
``to_array`` in mappings); loops (``PO1`` and what follows it up to the next ``PO1``) become ``PO1_loop``
lists, so a mapping reads ``body.PO1_loop[].ACK.ACK02`` without counting positions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from bus.errors import PermanentError

__all__ = ["Element", "LoopSpec", "RawSegment", "flatten_segments", "segment_tree"]

Element = str | list[str]
RawSegment = tuple[str, list[Element]]

TAG = re.compile(r"^[A-Z][A-Z0-9]{1,2}$")


def _text(value: Any, where: str) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        raise PermanentError(f"{where}: a boolean is not an EDI value")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = format(Decimal(repr(value)), "f")
        return text.rstrip("0").rstrip(".") if "." in text else text
    if isinstance(value, str):
        return value
    raise PermanentError(f"{where}: expected a string, number or null, got {type(value).__name__}")


def _element(value: Any, where: str) -> Element:
    if isinstance(value, list):
        parts = [_text(v, where) for v in value]
        while parts and parts[-1] == "":
            parts.pop()
        return parts if len(parts) > 1 else (parts[0] if parts else "")
    return _text(value, where)


def flatten_segments(items: Any, where: str = "segments") -> list[RawSegment]:
    """The segments a mapping wrote, flattened and checked: tags well formed, values plain."""
    if not isinstance(items, list):
        raise PermanentError(f"payload '{where}' must be a list of segments, got {type(items).__name__}")
    out: list[RawSegment] = []

    def walk(node: Any, path: str) -> None:
        if node is None:
            return
        if not isinstance(node, list):
            raise PermanentError(f"{path}: expected a segment (a list starting with its tag) or a list of them")
        if node and isinstance(node[0], str):
            tag = node[0]
            if not TAG.match(tag):
                raise PermanentError(f"{path}: {tag!r} is not a segment tag (2-3 upper-case letters or digits)")
            elements = [_element(v, f"{path} {tag}{i:02d}") for i, v in enumerate(node[1:], 1)]
            while elements and elements[-1] in ("", []):
                elements.pop()
            out.append((tag, elements))
            return
        for i, child in enumerate(node):
            walk(child, f"{path}[{i}]")

    walk(items, where)
    if not out:
        raise PermanentError(f"payload '{where}' holds no segment")
    return out


@dataclass(frozen=True)
class LoopSpec:
    """How one transaction set / message nests: loop start tags with the loops they may contain, tags that
    end every loop (summary segments such as ``CTT`` or ``UNS``), and hierarchical loops (``HL``) that nest by
    their parent id rather than by position."""

    loops: Mapping[str, frozenset[str]] = field(default_factory=dict)
    summary: frozenset[str] = frozenset()
    hierarchical: str | None = None


def _segment_object(tag: str, elements: Sequence[Element]) -> dict[str, Any]:
    return {f"{tag}{i:02d}": value for i, value in enumerate(elements, 1) if value not in ("", [])}


def _add(node: dict[str, Any], key: str, value: Any) -> None:
    if key not in node:
        node[key] = value
    elif isinstance(node[key], list) and not key.endswith("_loop"):
        node[key].append(value)
    elif key.endswith("_loop"):
        node[key].append(value)
    else:
        node[key] = [node[key], value]


def segment_tree(segments: Sequence[RawSegment], spec: LoopSpec) -> dict[str, Any]:
    """The segments of one transaction set / message (envelope excluded) as a tree (see the module docs)."""
    root: dict[str, Any] = {}
    stack: list[tuple[str, dict[str, Any]]] = []
    by_id: dict[str, dict[str, Any]] = {}
    for tag, elements in segments:
        seg = _segment_object(tag, elements)
        if tag in spec.summary:
            stack.clear()
            _add(root, tag, seg)
            continue
        if tag == spec.hierarchical:
            node: dict[str, Any] = {tag: seg}
            parent = by_id.get(str(seg.get(f"{tag}02", "")))
            target = parent if parent is not None else root
            target.setdefault(f"{tag}_loop", []).append(node)
            by_id[str(seg.get(f"{tag}01", ""))] = node
            stack[:] = [(tag, node)]
            continue
        if tag in spec.loops:
            while stack and tag not in spec.loops.get(stack[-1][0], frozenset()):
                if stack[-1][0] == spec.hierarchical:
                    break
                stack.pop()
            node = {tag: seg}
            parent_node = stack[-1][1] if stack else root
            parent_node.setdefault(f"{tag}_loop", []).append(node)
            stack.append((tag, node))
            continue
        _add(stack[-1][1] if stack else root, tag, seg)
    return root
