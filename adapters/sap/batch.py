"""OData V2 ``$batch``: one ``multipart/mixed`` request carrying reads and change sets, and its answer.

A change set is a nested ``multipart/mixed`` part whose requests succeed or fail together; the answer has
one part per read and, per change set, either one response per request or a single error response for the
whole set. Each part is ``application/http``: a request or status line, headers, a blank line, a body.
Requests are written here (the format is small and fixed); answers are split by the standard library's
MIME parser, which already knows boundaries, nesting and preambles.
"""

from __future__ import annotations

import email.parser
import email.policy
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

import orjson

from bus.errors import PermanentError

__all__ = ["BatchRequest", "BatchResponse", "build_batch", "parse_batch"]

_CRLF = "\r\n"


@dataclass(frozen=True)
class BatchRequest:
    """One request inside a batch. ``path`` is relative to the service root (``A_SalesOrder('1')``)."""

    method: str
    path: str
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchResponse:
    """One answer inside a batch response: status, lower-case headers, body bytes."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body) if self.body else None


def _http_part(request: BatchRequest, content_id: str | None) -> str:
    head = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
    if content_id is not None:
        head.append(f"Content-ID: {content_id}")
    lines = [f"{request.method} {request.path} HTTP/1.1", "Accept: application/json"]
    lines += [f"{name}: {value}" for name, value in request.headers.items()]
    body = ""
    if request.body is not None:
        body = orjson.dumps(request.body).decode()
        lines += ["Content-Type: application/json", f"Content-Length: {len(body.encode())}"]
    return _CRLF.join(head) + _CRLF + _CRLF + _CRLF.join(lines) + _CRLF + _CRLF + body + _CRLF


def build_batch(groups: Sequence[BatchRequest | Sequence[BatchRequest]]) -> tuple[str, bytes]:
    """``(content type, body)`` of a batch. A :class:`BatchRequest` is a read (GET); a sequence of them is
    one change set (writes that succeed or fail together)."""
    boundary = f"batch_{uuid.uuid4().hex}"
    out: list[str] = []
    for group in groups:
        out.append(f"--{boundary}{_CRLF}")
        if isinstance(group, BatchRequest):
            if group.method != "GET":
                raise ValueError("a write must travel in a change set")
            out.append(_http_part(group, None))
            continue
        changeset = f"changeset_{uuid.uuid4().hex}"
        out.append(f"Content-Type: multipart/mixed; boundary={changeset}{_CRLF}{_CRLF}")
        for number, request in enumerate(group, 1):
            out.append(f"--{changeset}{_CRLF}")
            out.append(_http_part(request, str(number)))
        out.append(f"--{changeset}--{_CRLF}")
    out.append(f"--{boundary}--{_CRLF}")
    return f"multipart/mixed; boundary={boundary}", "".join(out).encode()


def _http_response(part: Message, what: str) -> BatchResponse:
    raw = part.get_payload(decode=True)
    if not isinstance(raw, bytes):
        raise PermanentError(f"{what}: a batch part has no HTTP response")
    head, _, body = raw.partition(b"\r\n\r\n" if b"\r\n\r\n" in raw else b"\n\n")
    lines = head.decode("iso-8859-1").splitlines()
    if not lines or not lines[0].startswith("HTTP/"):
        raise PermanentError(f"{what}: a batch part does not start with an HTTP status line")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        raise PermanentError(f"{what}: bad status line {lines[0][:60]!r} in a batch part") from None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return BatchResponse(status, headers, body.rstrip(b"\r\n"))


def parse_batch(content_type: str, body: bytes, what: str = "$batch") -> list[BatchResponse | list[BatchResponse]]:
    """The answers of a batch response, in request order: a :class:`BatchResponse` per read, and per change
    set a list (one response per request, or one error response for the whole set)."""
    if not content_type.lower().startswith("multipart/mixed"):
        raise PermanentError(f"{what}: expected a multipart/mixed answer, got {content_type[:80]!r}")
    document = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode() + body
    message = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(document)
    if not message.is_multipart():
        raise PermanentError(f"{what}: the answer has no parts (boundary missing or wrong)")
    out: list[BatchResponse | list[BatchResponse]] = []
    for part in message.get_payload():
        assert isinstance(part, Message)
        if part.is_multipart():
            out.append([_http_response(inner, what) for inner in part.get_payload()
                        if isinstance(inner, Message)])
        else:
            out.append(_http_response(part, what))
    return out
