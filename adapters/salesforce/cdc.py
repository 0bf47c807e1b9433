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

    def close(self) -> None:
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
        """Up to ``batch`` events of ``topic`` after replay id ``after`` (or from ``preset`` when None)."""
        batch_: Batch = self._with_session(f"Subscribe {topic}",
                                           lambda md: self._fetch(md, topic, after, preset, batch, wait))
        return batch_

    def _fetch(self, metadata: list[tuple[str, str]], topic: str, after: bytes | None, preset: str, batch: int,
               wait: float) -> Batch:
        first = pb.FetchRequest(topic_name=topic, num_requested=batch)
        if after is not None:
            first.replay_preset = pb.CUSTOM
            first.replay_id = after
        else:
            first.replay_preset = pb.EARLIEST if preset == "earliest" else pb.LATEST
        outgoing: queue.Queue[Any] = queue.Queue()
        outgoing.put(first)

        def requests() -> Any:
            while (item := outgoing.get()) is not None:
                yield item

        call = self.stub.Subscribe(requests(), metadata=metadata)
        incoming: queue.Queue[Any] = queue.Queue()

        def read() -> None:
            try:
                for response in call:
                    incoming.put(response)
            except grpc.RpcError as exc:
                incoming.put(exc)
            incoming.put(None)

        reader = threading.Thread(target=read, name=f"pubsub-{topic}", daemon=True)
        reader.start()
        received: list[Any] = []
        latest: bytes | None = None
        deadline = time.monotonic() + wait
        try:
            while len(received) < batch:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = incoming.get(timeout=remaining)
                except queue.Empty:
                    break
                if item is None:
                    break
                if isinstance(item, grpc.RpcError):
                    if received:
                        break  # keep what arrived; the next poll resumes after it and meets the error again
                    raise item
                received.extend(item.events)
                if item.latest_replay_id:
                    latest = bytes(item.latest_replay_id)
                if item.events:
                    deadline = min(deadline, time.monotonic() + IDLE_GAP)
        finally:
            outgoing.put(None)
            call.cancel()
            reader.join(2.0)
        events = []
        for consumer in received[:batch]:
            replay = bytes(consumer.replay_id).hex()
            events.append((replay, consumer.event.id, consumer.event.schema_id, self.decode(consumer.event)))
        resume = events[-1][0] if events else (latest.hex() if latest else None)
        return Batch(events, resume)
