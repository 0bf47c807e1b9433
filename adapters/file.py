"""Files in folders: the poll trigger ``dropped`` and the operation ``write`` (registry name ``file``).

**Inbound** — ``dropped`` polls an inbox folder for ``*.json``, ``*.jsonl`` / ``*.ndjson`` and ``*.csv`` files:

* a JSON file is one payload, or one payload per item when it holds a top-level array; JSON Lines give one
  payload per non-empty line; a CSV file gives one payload per row (the header row names the fields);
* a file is moved to ``processed/`` only on the poll AFTER the one that read it, i.e. once the bus stored the
  watermark, which it does only after the file's events were journaled: a crash in between re-reads the file
  (same dedup keys, same event ids) instead of losing it;
* a malformed file is moved to ``failed/`` at once, next to a ``<name>.error.txt`` saying what is wrong and
  on which line; it is never emitted in part and never deleted;
* files younger than ``settle`` seconds, hidden files and ``*.tmp`` / ``*.part`` are left alone, because a
  producer may still be writing them (producers should write to a temporary name and rename).

**Outbound** — ``write`` writes ONE file per delivery, atomically: a temporary file in the target folder,
fsync, then ``os.replace``. A reader never sees half a file, and a retried delivery rewrites the same name
with the same content. CSV output therefore also means one file per event (with a header row): appending to a
shared file cannot be made atomic and idempotent at once. The file name comes from the ``name`` template
(``{{ jmespath }}`` on the payload) or, by default, from the delivery's idempotency key.
"""

from __future__ import annotations

import csv
import errno
import fnmatch
import io
import json
import os
import re
import tempfile
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import orjson
import structlog

from adapters.base import Adapter, Call, Health, Outcome, PollResult, operation, trigger
from adapters.templates import Template
from bus.errors import ConfigError, DeliveryError, PermanentError, TransientError

__all__ = ["FileAdapter", "MalformedFile"]

log = structlog.get_logger(__name__)

_IN_PROGRESS = ("*.tmp", "*.part", "*.partial", "*~")
# Errors that a retry cannot fix; every other OSError (disk full, mount gone, permissions) waits for an operator.
_PERMANENT_ERRNO = {errno.ENAMETOOLONG, errno.EINVAL, errno.EISDIR, errno.ENOTDIR}
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class MalformedFile(Exception):
    """A dropped file that cannot be read; ``line`` is 1-based when known."""

    def __init__(self, reason: str, line: int | None = None) -> None:
        self.reason = reason
        self.line = line
        super().__init__(f"line {line}: {reason}" if line else reason)


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def parse_file(name: str, data: bytes, encoding: str = "utf-8", delimiter: str = ",") -> list[tuple[int, Any]]:
    """The payloads in one dropped file as ``(position, payload)``; raises :class:`MalformedFile`.

    The position is the line number for CSV and JSON Lines, and the 1-based item number for a JSON file.
    """
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise MalformedFile(f"not valid {encoding} text (byte {exc.start})", _line_of(data, exc.start)) from None
    text = text.removeprefix("\ufeff")  # Excel writes a BOM
    lower = name.lower()
    if lower.endswith((".jsonl", ".ndjson")):
        out: list[tuple[int, Any]] = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    out.append((number, json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise MalformedFile(f"invalid JSON at column {exc.colno}: {exc.msg}", number) from None
        return out
    if lower.endswith(".json"):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise MalformedFile(f"invalid JSON at column {exc.colno}: {exc.msg}", exc.lineno) from None
        return list(enumerate(doc, start=1)) if isinstance(doc, list) else [(1, doc)]
    if lower.endswith(".csv"):
        return _parse_csv(text, delimiter)
    raise MalformedFile("unsupported file type (expected .json, .jsonl, .ndjson or .csv)")


def _parse_csv(text: str, delimiter: str) -> list[tuple[int, dict[str, Any]]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = next(reader, None)
        if header is None or not any(h.strip() for h in header):
            raise MalformedFile("empty file: expected a header row naming the columns", 1)
        names = [h.strip() for h in header]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates or "" in names:
            raise MalformedFile(f"header has {'duplicate' if duplicates else 'empty'} column names "
                                f"{duplicates or ['']}", 1)
        rows: list[tuple[int, dict[str, Any]]] = []
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            if len(row) != len(names):
                raise MalformedFile(f"expected {len(names)} fields as in the header ({', '.join(names)}), "
                                    f"got {len(row)}", reader.line_num)
            rows.append((reader.line_num, dict(zip(names, row, strict=True))))
    except csv.Error as exc:
        raise MalformedFile(f"CSV syntax: {exc}", reader.line_num) from None
    return rows


def _move_aside(path: Path, folder: Path) -> Path:
    """Move ``path`` into ``folder`` without overwriting an earlier file of the same name."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    if target.exists():
        target = folder / f"{path.stem}.{time.time_ns()}{path.suffix}"
    os.replace(path, target)
    return target


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # not supported on this platform / filesystem
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(folder: Path, name: str, content: bytes) -> Path:
    """Write ``folder/name`` so that readers see the old file or the whole new one, never a part."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        target = folder / name
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(folder)  # make the rename itself durable
    return target


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    return orjson.dumps(value).decode()


def to_csv(payload: Any, columns: list[str] | None, delimiter: str) -> bytes:
    """A CSV document (header + rows) from one object or a list of objects."""
    rows = payload if isinstance(payload, list) else [payload]
    if not rows or not all(isinstance(r, dict) for r in rows):
        raise PermanentError("file write (csv): the payload must be an object or a non-empty list of objects")
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
    out = io.StringIO(newline="")
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    return out.getvalue().encode()


class FileAdapter(Adapter):
    """Reads JSON/CSV files dropped in an inbox folder; writes one JSON/CSV file per event to an outbox."""

    name: ClassVar[str] = "file"
    summary: ClassVar[str] = "Drop-folder poll trigger (JSON, JSON Lines, CSV) and atomic file writes"
    settings_schema: ClassVar[Mapping[str, Any]] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "anyOf": [{"required": ["inbox"]}, {"required": ["outbox"]}],
        "properties": {
            "inbox": {"type": "string", "minLength": 1, "description": "Folder the 'dropped' trigger reads."},
            "patterns": {"type": "array", "items": {"type": "string"}, "minItems": 1,
                         "default": ["*.json", "*.jsonl", "*.ndjson", "*.csv"]},
            "processed": {"type": "string", "default": "processed",
                          "description": "Where read files go (relative to the inbox)."},
            "failed": {"type": "string", "default": "failed",
                       "description": "Where malformed files go, with <name>.error.txt (relative to the inbox)."},
            "settle": {"type": "number", "minimum": 0, "default": 1,
                       "description": "Ignore files modified less than this many seconds ago (still being written)."},
            "max_files": {"type": "integer", "minimum": 1, "default": 100, "description": "Files read per poll."},
            "source_field": {"type": "string", "description": "Add {file, line} under this key to object payloads."},
            "outbox": {"type": "string", "minLength": 1, "description": "Folder the 'write' operation writes to."},
            "format": {"enum": ["json", "csv"], "default": "json"},
            "name": {"type": "string", "description": "File name template, e.g. 'order-{{ order_id }}.json'. "
                                                      "Default: the delivery's idempotency key."},
            "columns": {"type": "array", "items": {"type": "string"},
                        "description": "CSV output columns, in order (default: the payload's keys)."},
            "create_dirs": {"type": "boolean", "default": True,
                            "description": "Create a missing outbox; false treats a missing one as an outage."},
            "encoding": {"type": "string", "default": "utf-8"},
            "delimiter": {"type": "string", "minLength": 1, "maxLength": 1, "default": ","},
            "triggers": {"type": "object", "description": "Poll timing: {dropped: {interval: '30s'}} or a cron "
                                                          "schedule: {dropped: {schedule: '*/5 * * * *'}}."},
        },
    }

    def __init__(self, system: str, settings: Mapping[str, Any]) -> None:
        super().__init__(system, settings)
        s = self.settings
        self.inbox = Path(s["inbox"]) if s.get("inbox") else None
        self.outbox = Path(s["outbox"]) if s.get("outbox") else None
        self.patterns: list[str] = list(s.get("patterns") or ["*.json", "*.jsonl", "*.ndjson", "*.csv"])
        self.settle = float(s.get("settle", 1.0))
        self.max_files = int(s.get("max_files", 100))
        self.format: str = s.get("format", "json")
        self.create_dirs = bool(s.get("create_dirs", True))
        self.encoding: str = s.get("encoding", "utf-8")
        self.delimiter: str = s.get("delimiter", ",")
        self.columns: list[str] | None = s.get("columns")
        self.source_field: str | None = s.get("source_field")
        self.name_template = Template(s["name"], f"systems.{system}.settings.name") if s.get("name") else None

    def _folder(self, key: str) -> Path:
        assert self.inbox is not None
        return self.inbox / str(self.settings.get(key, key))

    # -- inbound ------------------------------------------------------------------------------------------
    def _candidates(self) -> list[tuple[Path, os.stat_result]]:
        assert self.inbox is not None
        now = time.time()
        found: list[tuple[Path, os.stat_result]] = []
        for entry in os.scandir(self.inbox):
            name = entry.name
            if name.startswith(".") or not entry.is_file() or name.endswith(".error.txt"):
                continue
            if any(fnmatch.fnmatch(name, p) for p in _IN_PROGRESS):
                continue
            if not any(fnmatch.fnmatch(name, p) for p in self.patterns):
                continue
            stat = entry.stat()
            if now - stat.st_mtime < self.settle:
                continue
            found.append((Path(entry.path), stat))
        found.sort(key=lambda item: (item[1].st_mtime_ns, item[0].name))
        return found[: self.max_files]

    def _settle_previous(self, watermark: str | None) -> None:
        """Move the files the previous poll emitted (now safely journaled) to ``processed/``."""
        if not watermark:
            return
        try:
            pending = orjson.loads(watermark).get("pending", [])
        except (orjson.JSONDecodeError, AttributeError):
            log.warning("ignoring unreadable file watermark", system=self.system, watermark=watermark[:100])
            return
        assert self.inbox is not None
        for name, mtime_ns, size in pending:
            path = self.inbox / name
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue  # moved by an operator, or by another process sharing the folder
            if stat.st_mtime_ns == mtime_ns and stat.st_size == size:
                try:
                    _move_aside(path, self._folder("processed"))
                except FileNotFoundError:
                    pass  # another process sharing the inbox moved it first
            # else: rewritten since it was read; the scan below reads the new version

    def _fail(self, path: Path, error: MalformedFile) -> None:
        moved = _move_aside(path, self._folder("failed"))
        where = f"line {error.line}" if error.line else "file"
        report = (f"file: {path.name}\nmoved to: {moved}\nat: {datetime.now(UTC).isoformat(timespec='seconds')}\n"
                  f"where: {where}\nerror: {error.reason}\n")
        atomic_write(moved.parent, f"{moved.name}.error.txt", report.encode())
        log.error("dropped file is malformed; moved to failed/", system=self.system, file=path.name,
                  line=error.line, error=error.reason)

    @trigger("dropped", kind="poll", interval=10.0, description="JSON / JSON Lines / CSV files dropped in the inbox")
    def dropped(self, watermark: str | None) -> PollResult:
        if self.inbox is None:
            raise PermanentError(f"{self.system}: 'inbox' is not set, so the 'dropped' trigger has nothing to read")
        try:
            self._settle_previous(watermark)
            records: list[tuple[str, Any]] = []
            pending: list[list[Any]] = []
            for path, stat in self._candidates():
                try:
                    payloads = parse_file(path.name, path.read_bytes(), self.encoding, self.delimiter)
                except FileNotFoundError:
                    continue  # taken away since the listing (an operator, or another process on this inbox)
                except MalformedFile as exc:
                    try:
                        self._fail(path, exc)
                    except FileNotFoundError:
                        pass
                    continue
                label = "item" if path.name.lower().endswith(".json") else "line"
                for position, payload in payloads:
                    if self.source_field and isinstance(payload, dict):
                        payload = {**payload, self.source_field: {"file": path.name, label: position}}
                    records.append((f"{path.name}@{stat.st_mtime_ns}#{position}", payload))
                pending.append([path.name, stat.st_mtime_ns, stat.st_size])
        except OSError as exc:
            raise TransientError(f"{self.system}: inbox {self.inbox}: {exc}") from None
        return PollResult(records, orjson.dumps({"pending": pending}).decode())

    # -- outbound -----------------------------------------------------------------------------------------
    def _file_name(self, call: Call) -> str:
        extension = "csv" if self.format == "csv" else "json"
        if self.name_template is None:
            return f"{_SAFE_NAME.sub('_', call.idempotency_key)}.{extension}"
        name = self.name_template.render(call.payload)
        if not name or name.startswith(".") or any(c in name for c in "/\\\x00"):
            raise PermanentError(f"file name {name!r} from template {self.name_template.text!r} is not a plain "
                                 "file name (no folders, not hidden)")
        return name

    @operation("write", description="Write the payload to one file (JSON or CSV), atomically")
    def write(self, call: Call) -> Outcome:
        if self.outbox is None:
            raise PermanentError(f"{self.system}: 'outbox' is not set, so 'write' has nowhere to write")
        name = self._file_name(call)
        if self.format == "csv":
            content = to_csv(call.payload, self.columns, self.delimiter)
        else:
            try:
                content = orjson.dumps(call.payload, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
            except TypeError as exc:
                raise PermanentError(f"file write: payload is not JSON-serialisable: {exc}") from None
        try:
            if self.create_dirs:
                self.outbox.mkdir(parents=True, exist_ok=True)
            path = atomic_write(self.outbox, name, content)
        except DeliveryError:
            raise
        except OSError as exc:
            message = f"{self.system}: writing {self.outbox / name}: {exc.strerror or exc}"
            if exc.errno in _PERMANENT_ERRNO:
                raise PermanentError(message) from None
            raise TransientError(message) from None
        log.info("file written", system=self.system, file=str(path), bytes=len(content), event_id=call.event.id,
                 correlation_id=call.event.correlationid)
        return Outcome(result={"path": str(path), "bytes": len(content)}, reference=name)

    def health(self) -> Health:
        problems = [f"{label} {folder} is not a writable folder" for label, folder in
                    (("inbox", self.inbox), ("outbox", self.outbox))
                    if folder is not None and not (folder.is_dir() and os.access(folder, os.W_OK))
                    and not (label == "outbox" and self.create_dirs)]
        return Health(not problems, "; ".join(problems))

    def open(self) -> None:
        if self.inbox is not None and not self.inbox.is_dir():
            raise ConfigError(f"systems.{self.system}.settings.inbox: {self.inbox} is not a folder")
