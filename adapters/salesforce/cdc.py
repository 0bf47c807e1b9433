"""Change Data Capture over the Salesforce Pub/Sub API (gRPC, Avro).

A subscription is pulled in bounded batches so it fits the bus's poll triggers: each poll opens a
``Subscribe`` stream *after* the stored replay id (``ReplayPreset.CUSTOM``), asks for at most ``batch``
events (``FetchRequest.num_requested``: the client's flow control), reads what arrives within ``wait``
seconds, and closes the stream. The replay id of the last event handed to the bus is the watermark, stored by
the bus only once those events are journaled: a restart resumes right after it — no gap, no repeat — and
events that arrived after the batch was cut are simply fetched again by the next poll.

Events are Avro records written with the schema their ``schema_id`` names (fetched once with ``GetSchema``).
``changedFields``, ``nulledFields`` and ``diffFields`` come as bitmaps (``"0x400000"``: bit *n* = the *n*-th
field of the schema; ``"4-0x01"``: bit 0 of the record held by field 4) and are decoded to field names
(``BillingAddress.Street``), as the CometD transport would give them.
"""

from __future__ import annotations

import base64
import io
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import fastavro
import grpc
import orjson
import structlog

from adapters.salesforce.pubsub import pubsub_api_pb2 as pb
from adapters.salesforce.pubsub import pubsub_api_pb2_grpc as pb_grpc
from bus.errors import ConfigError, PermanentError, TransientError

__all__ = ["BITMAP_FIELDS", "Batch", "PubSubClient", "ReplayExpired", "decode_bitmap", "decode_header",
           "replay_from_watermark"]

log = structlog.get_logger(__name__)

BITMAP_FIELDS = ("changedFields", "nulledFields", "diffFields")
#: After the first events of a batch, stop reading once nothing more came for this long.
IDLE_GAP = 0.25
_TRANSIENT_CODES = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED,
                    grpc.StatusCode.INTERNAL, grpc.StatusCode.ABORTED, grpc.StatusCode.CANCELLED,
                    grpc.StatusCode.UNKNOWN}


class ReplayExpired(PermanentError):
    """The replay id to resume after is no longer retained (or never existed) on the event bus."""


def _record_fields(schema: Any) -> list[dict[str, Any]]:
    """The fields of a record schema, or of the record branch of a nullable union."""
    if isinstance(schema, list):
        for branch in schema:
            if isinstance(branch, dict) and branch.get("type") == "record":
                return list(branch.get("fields") or [])
        return []
    if isinstance(schema, dict):
        if schema.get("type") == "record":
            return list(schema.get("fields") or [])
        return _record_fields(schema.get("type"))
    return []


def _bits(hexmap: str, fields: Sequence[Mapping[str, Any]], where: str) -> list[str]:
    try:
        value = int(hexmap, 16)
    except ValueError:
        raise PermanentError(f"{where}: bitmap {hexmap!r} is not hexadecimal") from None
    names = []
    position = 0
    while value:
        if value & 1:
            if position >= len(fields):
                raise PermanentError(f"{where}: bitmap {hexmap!r} names field {position}, the schema has "
                                     f"{len(fields)} (schema and event disagree)")
            names.append(str(fields[position]["name"]))
        value >>= 1
        position += 1
    return names


def decode_bitmap(entries: Sequence[str], schema: Mapping[str, Any], where: str = "bitmap") -> list[str]:
    """Field names of a Pub/Sub bitmap field (``["0x400000", "4-0x01"]``) against the event's Avro schema.

    Entries that are already names (CometD-style, or older API versions) are kept as they are.
    """
    fields = _record_fields(schema)
    names: list[str] = []
    for entry in entries:
        if not isinstance(entry, str):
            continue
        if entry.startswith("0x"):
            names.extend(_bits(entry[2:], fields, where))
            continue
        parent, dash, child = entry.partition("-")
        if dash and parent.isdigit() and child.startswith("0x"):
            index = int(parent)
            if index >= len(fields):
                raise PermanentError(f"{where}: {entry!r} names field {index}, the schema has {len(fields)}")
            nested = _record_fields(fields[index])
            parent_name = str(fields[index]["name"])
            names.extend(f"{parent_name}.{name}" for name in _bits(child[2:], nested, where))
            continue
        names.append(entry)
    return names


def decode_header(record: dict[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    """``record`` with its ChangeEventHeader bitmaps decoded to field names (in place, also returned)."""
    header = record.get("ChangeEventHeader")
    if isinstance(header, dict):
        for name in BITMAP_FIELDS:
            if isinstance(header.get(name), list):
                header[name] = decode_bitmap(header[name], schema, f"ChangeEventHeader.{name}")
    return record


def _plain(value: Any) -> Any:
    """Avro values as JSON-ready ones (logical types decoded by fastavro go back to plain forms)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return value


def replay_from_watermark(watermark: str) -> bytes:
    try:
        return bytes.fromhex(watermark)
    except ValueError:
        raise PermanentError(f"stored replay id {watermark!r} is not hexadecimal (was it set by hand?)") from None


@dataclass(frozen=True)
class Batch:
    """What one fetch brought: decoded events ``(replay id hex, event id, schema id, record)`` and the
    replay id to resume after (the last event's, or the server's latest one from an empty keep-alive)."""

    events: list[tuple[str, str, str, dict[str, Any]]]
    resume_after: str | None


Credentials = Callable[[], tuple[str, str, str]]  # -> (access token, instance url, org id)


class PubSubClient:
    """One gRPC channel to the Pub/Sub API of one system, with its schema cache."""

    def __init__(self, url: str, credentials: Credentials, invalidate: Callable[[str], None],
                 timeout: float = 30.0) -> None:
        scheme, _, target = url.partition("://")
        if scheme == "grpcs":
            self.channel = grpc.secure_channel(target, grpc.ssl_channel_credentials())
        elif scheme == "grpc":
            self.channel = grpc.insecure_channel(target)
        else:
            raise ConfigError(f"pubsub url {url!r}: expected grpcs://host:port (or grpc:// for a local test server)")
        self.url = url
        self.stub = pb_grpc.PubSubStub(self.channel)  # type: ignore[no-untyped-call]
        self.credentials = credentials
        self.invalidate = invalidate
        self.timeout = timeout
        self._schemas: dict[str, tuple[Any, dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._stream: _Stream | None = None

    def close(self) -> None:
        self.close_stream()
        self.channel.close()

    def _metadata(self) -> tuple[str, list[tuple[str, str]]]:
        token, instance_url, org_id = self.credentials()
        return token, [("accesstoken", token), ("instanceurl", instance_url), ("tenantid", org_id)]

    def _error(self, exc: grpc.RpcError, what: str) -> Exception:
        code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
        detail = exc.details() if hasattr(exc, "details") else str(exc)
        message = f"Pub/Sub API {what}: {code.name}: {detail}"
        trailing = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
        error_code = " ".join(str(v) for k, v in (trailing or ()) if k == "error-code")
        if code == grpc.StatusCode.INVALID_ARGUMENT and ("replay" in f"{detail} {error_code}".lower()):
            return ReplayExpired(message)
        if code in _TRANSIENT_CODES:
            return TransientError(message)
        return PermanentError(message)

    def _with_session(self, what: str, fn: Callable[[list[tuple[str, str]]], Any]) -> Any:
        """Run ``fn(metadata)``; a refused session is renewed once (Salesforce: UNAUTHENTICATED)."""
        for attempt in (1, 2):
            token, metadata = self._metadata()
            try:
                return fn(metadata)
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.UNAUTHENTICATED and attempt == 1:  # type: ignore[attr-defined]
                    log.info("pubsub_session_refused_renewing", what=what)
                    self.invalidate(token)
                    continue
                raise self._error(exc, what) from None
        raise AssertionError("unreachable")

    def schema(self, schema_id: str) -> tuple[Any, dict[str, Any]]:
        """(parsed schema, schema JSON) of ``schema_id``, fetched once."""
        with self._lock:
            found = self._schemas.get(schema_id)
        if found is not None:
            return found
        info = self._with_session(f"GetSchema {schema_id}", lambda md: self.stub.GetSchema(
            pb.SchemaRequest(schema_id=schema_id), metadata=md, timeout=self.timeout))
        try:
            doc = orjson.loads(info.schema_json)
            parsed = fastavro.parse_schema(doc)
        except (ValueError, fastavro.schema.SchemaParseException) as exc:
            raise PermanentError(f"Pub/Sub API schema {schema_id} is not a valid Avro schema: {exc}") from None
        with self._lock:
            self._schemas[schema_id] = (parsed, doc)
        return parsed, doc

    def decode(self, event: Any) -> dict[str, Any]:
        """The record of one ``ProducerEvent``, bitmaps decoded."""
        parsed, doc = self.schema(event.schema_id)
        try:
            record = fastavro.schemaless_reader(io.BytesIO(event.payload), parsed, None)
        except (EOFError, ValueError, IndexError, UnicodeDecodeError) as exc:
            raise PermanentError(f"event {event.id}: payload does not decode with schema {event.schema_id}: "
                                 f"{type(exc).__name__}") from None
        if not isinstance(record, dict):
            raise PermanentError(f"event {event.id}: schema {event.schema_id} is not a record schema")
        plain: dict[str, Any] = _plain(record)
        return decode_header(plain, doc)

    def fetch(self, topic: str, after: bytes | None, preset: str, batch: int, wait: float) -> Batch:
        """Up to ``batch`` events of ``topic`` after replay id ``after`` (or from ``preset`` when None).

        The subscription stays open between polls while each poll resumes where the last one ended (the bus
        stored its watermark): events then keep flowing without a new stream per poll, and a subscription
        started at the tip (``latest``) does not miss what arrives between two polls. A poll that resumes
        anywhere else (the bus did not store the last watermark, or a restart) opens a new stream there.
        """
        position = after.hex() if after is not None else None
        stream = self._stream
        if stream is not None and (stream.topic != topic or stream.position != position or stream.failed):
            stream.close()
            stream = self._stream = None
        for attempt in (1, 2):
            if stream is None:
                token, metadata = self._metadata()
                stream = self._stream = _Stream(self.stub, metadata, token, topic, after, preset, position)
            try:
                events, resume = stream.take(batch, wait)
                break
            except grpc.RpcError as exc:
                stream.close()
                self._stream = None
                if exc.code() == grpc.StatusCode.UNAUTHENTICATED and attempt == 1:  # type: ignore[attr-defined]
                    log.info("pubsub_session_refused_renewing", topic=topic)
                    self.invalidate(stream.token)
                    stream = None
                    continue
                raise self._error(exc, f"Subscribe {topic}") from None
        decoded = []
        for consumer in events:
            replay = bytes(consumer.replay_id).hex()
            try:
                record = self.decode(consumer.event)
            except PermanentError as exc:
                # One undecodable event must not stop the stream behind it: it travels on with the reason, so
                # the route's mapping fails on it and the bus dead-letters it with the raw payload kept.
                log.error("pubsub_event_undecodable", topic=topic, event_id=consumer.event.id, error=str(exc))
                record = {"_undecodable": str(exc),
                          "_payload_base64": base64.b64encode(consumer.event.payload).decode("ascii")}
            decoded.append((replay, consumer.event.id, consumer.event.schema_id, record))
        return Batch(decoded, resume)

    def close_stream(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None


class _Stream:
    """One open ``Subscribe`` call: the requests it sends, the events it received and not yet handed out."""

    def __init__(self, stub: Any, metadata: list[tuple[str, str]], token: str, topic: str, after: bytes | None,
                 preset: str, position: str | None) -> None:
        self.topic, self.token, self.position = topic, token, position
        self.outstanding = 0  # events asked for and not received yet
        self.buffer: list[Any] = []
        self.error: grpc.RpcError | None = None
        self.failed = False
        self.latest: bytes | None = None
        self._first = pb.FetchRequest(topic_name=topic)
        if after is not None:
            self._first.replay_preset = pb.CUSTOM
            self._first.replay_id = after
        else:
            self._first.replay_preset = pb.EARLIEST if preset == "earliest" else pb.LATEST
        self._outgoing: queue.Queue[Any] = queue.Queue()
        self._arrived = threading.Condition()
        self._started = False
        self._call = stub.Subscribe(self._requests(), metadata=metadata)
        self._reader = threading.Thread(target=self._read, name=f"pubsub-{topic}", daemon=True)
        self._reader.start()

    def _requests(self) -> Any:
        while (item := self._outgoing.get()) is not None:
            yield item

    def _read(self) -> None:
        try:
            for response in self._call:
                with self._arrived:
                    self.buffer.extend(response.events)
                    self.outstanding = max(0, self.outstanding - len(response.events))
                    if response.latest_replay_id:
                        self.latest = bytes(response.latest_replay_id)
                    self._arrived.notify_all()
        except grpc.RpcError as exc:
            with self._arrived:
                if exc.code() != grpc.StatusCode.CANCELLED:  # type: ignore[attr-defined]
                    self.error = exc
                self.failed = True
                self._arrived.notify_all()
            return
        with self._arrived:  # the server ended the stream: the next poll opens a new one where this one ended
            self.failed = True
            self._arrived.notify_all()

    def take(self, batch: int, wait: float) -> tuple[list[Any], str | None]:
        """Hand out up to ``batch`` events, asking the server for what the buffer lacks (flow control)."""
        with self._arrived:
            wanted = batch - len(self.buffer) - self.outstanding
            if wanted > 0:
                request = self._first if not self._started else pb.FetchRequest(topic_name=self.topic)
                request.num_requested = wanted
                self._started = True
                self.outstanding += wanted
                self._outgoing.put(request)
            deadline = time.monotonic() + (IDLE_GAP if self.buffer else wait)
            while len(self.buffer) < batch and self.error is None and not self.failed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                had = len(self.buffer)
                self._arrived.wait(remaining)
                if self.buffer and len(self.buffer) == had:
                    break  # spurious wake-up after events came: hand out what is there
                if self.buffer:
                    deadline = min(deadline, time.monotonic() + IDLE_GAP)
            if self.error is not None and not self.buffer:
                raise self.error
            taken, self.buffer = self.buffer[:batch], self.buffer[batch:]
            if taken:
                self.position = bytes(taken[-1].replay_id).hex()
            elif self.latest is not None and not self.buffer and self.outstanding:
                # An empty keep-alive names the stream's latest replay id: nothing is pending before it.
                self.position = self.latest.hex()
            return taken, self.position

    def close(self) -> None:
        self._outgoing.put(None)
        self._call.cancel()
        self._reader.join(2.0)
