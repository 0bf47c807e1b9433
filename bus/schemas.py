"""The canonical schema registry: load ``schemas/<name>.json`` and validate documents against them, fast.

Each canonical document type (``order.changed``, ``supplier.issue`` …) has one JSON Schema (draft 2020-12)
in the schema directory. Shared pieces live in ``common.json`` and are referenced by ``$id``; those
references are resolved from the directory itself and never over the network, so a bus without internet
access validates exactly like one with it.

Validators are compiled once per name (``jsonschema_rs``) and the hot path is a single ``is_valid`` call;
the (slower) error collection runs only when a document is invalid.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema_rs
import orjson
import structlog

from bus.errors import ConfigError, Location, SchemaViolation, UnknownNameError
from bus.limits import MAX_FILE_BYTES

__all__ = ["SCHEMA_DIR", "SchemaRegistry", "default_registry", "json_path"]

log = structlog.get_logger(__name__)

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
# Files in the directory that are not canonical document types.
_NOT_DOCUMENTS = {"common", "routes.schema"}
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MAX_ERRORS = 50

Validator = Callable[[Any], None]


def json_path(parts: list[str | int] | tuple[str | int, ...]) -> str:
    """A JSONPath string for an instance path: ``['lines', 0, 'unit']`` -> ``$.lines[0].unit``."""
    out = "$"
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENTIFIER.match(part):
            out += f".{part}"
        else:
            out += "[" + repr(part) + "]"
    return out


def _load_schema_file(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read schema file: {exc}", Location(str(path))) from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(f"schema file is larger than {MAX_FILE_BYTES} bytes", Location(str(path)))
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # orjson reports a character position; turn it into the line/column an editor can jump to.
        text = raw.decode("utf-8", errors="replace")
        pos = min(exc.pos, len(text))
        line = text.count("\n", 0, pos) + 1
        column = pos - (text.rfind("\n", 0, pos) + 1) + 1
        raise ConfigError(f"schema file is not valid JSON: {exc.msg}", Location(str(path), line, column)) from None
    if not isinstance(doc, dict):
        raise ConfigError(f"a schema file must hold a JSON object, got {type(doc).__name__}", Location(str(path)))
    try:
        jsonschema_rs.meta.validate(doc)
    except jsonschema_rs.ValidationError as exc:
        where = json_path(exc.instance_path)
        raise ConfigError(f"not a valid JSON Schema (2020-12) at {where}: {exc.message}", Location(str(path))) from None
    schema_id = doc.get("$id")
    if not isinstance(schema_id, str) or not schema_id:
        raise ConfigError("a schema file needs a non-empty '$id'", Location(str(path)))
    return doc


def _refuse_remote(uri: str) -> Any:
    # Schemas reference each other by $id; anything not in the directory is a mistake, never a download.
    raise ValueError(f"$ref {uri!r} is not a schema in the schema directory (remote references are not fetched)")


class SchemaRegistry:
    """The canonical schemas of one directory, with compiled validators.

    Files are read when the registry is created; a malformed or invalid schema file raises
    :class:`ConfigError` naming the file (with line and column for a JSON syntax error). Validators are
    compiled lazily, once per name, and are safe to share between threads.
    """

    def __init__(self, directory: Path = SCHEMA_DIR) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise ConfigError("schema directory not found", Location(str(self.directory)))
        self._schemas: dict[str, dict[str, Any]] = {}
        self._files: dict[str, Path] = {}
        resources: list[tuple[str, dict[str, Any]]] = []
        ids: dict[str, Path] = {}
        for path in sorted(self.directory.glob("*.json")):
            doc = _load_schema_file(path)
            schema_id = doc["$id"]
            if schema_id in ids:
                raise ConfigError(f"$id {schema_id!r} is also used by {ids[schema_id].name}", Location(str(path)))
            ids[schema_id] = path
            resources.append((schema_id, doc))
            name = path.name.removesuffix(".json")
            if name not in _NOT_DOCUMENTS:
                self._schemas[name] = doc
                self._files[name] = path
        try:
            self._registry = jsonschema_rs.Registry(resources, retriever=_refuse_remote)
        except (jsonschema_rs.ReferencingError, ValueError) as exc:
            raise ConfigError(f"unresolvable $ref: {exc}", self._file_mentioning(str(exc), ids)) from None
        self._validators: dict[str, Validator] = {}
        self._lock = threading.Lock()
        # Violations are not logged here: the caller knows the event and logs them with its id.
        log.debug("schemas loaded", directory=str(self.directory), schemas=len(self._schemas))

    @staticmethod
    def _file_mentioning(message: str, ids: dict[str, Path]) -> Location:
        # The referencing error names the URI, not the file; find the file whose text holds that URI.
        match = re.search(r"'([^']+)'", message)
        if match:
            for path in ids.values():
                if match.group(1) in path.read_text(encoding="utf-8", errors="replace"):
                    return Location(str(path))
        return Location(str(next(iter(ids.values()), Path("schemas"))))

    def names(self) -> list[str]:
        """The canonical document types, sorted (``common`` and ``routes.schema`` are not among them)."""
        return sorted(self._schemas)

    def schema(self, name: str) -> dict[str, Any]:
        """The schema document of ``name``; raises :class:`UnknownNameError` for an unknown name."""
        try:
            return self._schemas[name]
        except KeyError:
            raise UnknownNameError("schema", name, self.names()) from None

    def schema_id(self, name: str) -> str:
        """The ``$id`` of ``name`` (what :attr:`bus.envelope.Event.dataschema` carries)."""
        schema_id: str = self.schema(name)["$id"]
        return schema_id

    def validator(self, name: str) -> Validator:
        """A function that returns None for a valid document and raises :class:`SchemaViolation` otherwise.

        Compiled on first use and cached. A ``$ref`` that does not resolve inside the directory raises
        :class:`ConfigError` naming the schema file.
        """
        found = self._validators.get(name)
        if found is not None:
            return found
        with self._lock:
            found = self._validators.get(name)
            if found is None:
                found = self._compile(name)
                self._validators[name] = found
        return found

    def validate(self, name: str, doc: Any) -> None:
        """Raise :class:`SchemaViolation` when ``doc`` does not match schema ``name``."""
        self.validator(name)(doc)

    def _compile(self, name: str) -> Validator:
        schema = self.schema(name)
        try:
            compiled = jsonschema_rs.validator_for(
                schema, registry=self._registry, retriever=_refuse_remote, validate_formats=True
            )
        except (jsonschema_rs.ReferencingError, jsonschema_rs.ValidationError, ValueError) as exc:
            raise ConfigError(f"cannot compile schema {name!r}: {exc}", Location(str(self._files[name]))) from None
        is_valid = compiled.is_valid

        def validate(doc: Any) -> None:
            if is_valid(doc):
                return
            errors: list[tuple[str, str]] = []
            for error in compiled.iter_errors(doc):
                errors.append((json_path(error.instance_path), error.message))
                if len(errors) >= _MAX_ERRORS:
                    break
            if not errors:  # defensive: is_valid and iter_errors disagreeing must still fail loudly
                errors.append(("$", "document is not valid"))
            # jsonschema_rs reports in schema order; sorting by path reads top-down like the document.
            errors.sort(key=lambda e: e[0])
            raise SchemaViolation(name, errors)

        return validate


@cache
def default_registry() -> SchemaRegistry:
    """The registry of the repository's ``schemas/`` directory, created once per process."""
    return SchemaRegistry(SCHEMA_DIR)
