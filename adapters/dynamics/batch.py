"""OData v4 ``$batch`` for the Dataverse Web API: multipart/mixed request bodies and their answers.

A batch holds independent requests (each answered on its own; ``Prefer: odata.continue-on-error`` lets the
rest run after one fails) or one *change set*: requests applied in one transaction, all or none, each named by
a ``Content-ID``. The answer mirrors the request: one ``application/http`` part per request, or, for a change
set that failed, a single error part for the whole set.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["BatchPart", "PartAnswer", "build_batch", "parse_batch"]

_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)


@dataclass(frozen=True)
class BatchPart:
    method: str
    url: str  # absolute, as Dataverse documents (relative URLs work too)
    body: Any = None
    headers: Mapping[str, str] | None = None


@dataclass(frozen=True)
class PartAnswer:
    status: int
    headers: dict[str, str]
    body: bytes
    content_id: str | None = None

    def json(self) -> Any:
        if not self.body.strip():
            return None
        try:
            return orjson.loads(self.body)
        except ValueError:
            return None


def _request_text(part: BatchPart, content_id: int | None) -> str:
    lines = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
    if content_id is not None:
        lines.append(f"Content-ID: {content_id}")
    lines += ["", f"{part.method} {part.url} HTTP/1.1"]
    for name, value in (part.headers or {}).items():
        lines.append(f"{name}: {value}")
    if part.body is not None:
        lines += ["Content-Type: application/json; type=entry", "", orjson.dumps(part.body).decode()]
    else:
        lines.append("")
    return "\r\n".join(lines) + "\r\n"


def build_batch(parts: Sequence[BatchPart], change_set: bool) -> tuple[str, bytes]:
    """``(content type, body)`` of a $batch request; with ``change_set`` every part is in one change set
    with Content-IDs 1..n (in order)."""
    batch = f"batch_{uuid.uuid4().hex}"
    chunks: list[str] = []
    if change_set:
        changeset = f"changeset_{uuid.uuid4().hex}"
        chunks.append(f"--{batch}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n")
        for number, part in enumerate(parts, start=1):
            chunks.append(f"--{changeset}\r\n{_request_text(part, number)}")
        chunks.append(f"--{changeset}--\r\n")
    else:
        for part in parts:
            chunks.append(f"--{batch}\r\n{_request_text(part, None)}")
    chunks.append(f"--{batch}--\r\n")
    return f"multipart/mixed; boundary={batch}", "".join(chunks).encode()


def _split_headers(block: bytes) -> tuple[dict[str, str], bytes]:
    text = block.replace(b"\r\n", b"\n")
    head, _, rest = text.partition(b"\n\n")
    headers: dict[str, str] = {}
    for line in head.decode("utf-8", errors="replace").split("\n"):
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return headers, rest


def _parts(body: bytes, boundary: str) -> list[bytes]:
    delimiter = f"--{boundary}".encode()
    pieces = body.split(delimiter)
    out = []
    for piece in pieces[1:]:
        if piece.startswith(b"--"):
            break
        out.append(piece.lstrip(b"\r\n"))
    return out


def parse_batch(content_type: str, body: bytes) -> list[PartAnswer]:
    """Every ``application/http`` answer in a $batch response, in order (change sets flattened)."""
    match = _BOUNDARY.search(content_type or "")
    if not match:
        raise ValueError(f"$batch answer is not multipart (Content-Type {content_type!r})")
    answers: list[PartAnswer] = []
    for raw in _parts(body, match.group(1)):
        headers, rest = _split_headers(raw)
        kind = headers.get("content-type", "")
        if kind.lower().startswith("multipart/mixed"):
            answers.extend(parse_batch(kind, rest))
            continue
        status_line, _, http_rest = rest.replace(b"\r\n", b"\n").partition(b"\n")
        fields = status_line.decode("utf-8", errors="replace").split(" ", 2)
        if len(fields) < 2 or not fields[1].isdigit():
            raise ValueError(f"$batch answer part without an HTTP status line: {status_line[:60]!r}")
        inner_headers, inner_body = _split_headers(http_rest)
        answers.append(PartAnswer(int(fields[1]), inner_headers, inner_body.rstrip(b"\r\n"),
                                  headers.get("content-id")))
    return answers
