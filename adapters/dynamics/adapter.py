"""The ``dynamics`` adapter: Dataverse Web API writes (one by one or in $batch), change tracking polls.

Payload of an operation (after the route's mapping)::

    {"entity_set": "salesorders",               # or the target's args: {entity_set: salesorders}
     "id": "6c9a…",                              # update: the row's GUID
     "etag": "W/\\"1234567\\"",                  # update: only if unchanged since read (If-Match)
     "key": {"ordernumber": "SO-1001"},          # upsert: the alternate key's columns and values
     "fields": {"requestdeliveryby": "2026-12-01"},
     "binds": {"customerid_account": "/accounts(…)"}}  # lookups: sent as customerid_account@odata.bind

Upserts are ``PATCH entity_set(key=value)``: with no condition header they create or update; ``mode:
create_only`` sends ``If-None-Match: *`` (never update), ``update_only`` sends ``If-Match: *`` (never create).
Updates always send ``If-Match`` (the ETag, or ``*``) so an update of a deleted row fails instead of making it
anew. Authentication is the plain OAuth 2.0 client-credentials grant against Entra ID (the bus's own OAuth
client: a cached token renewed before ``expires_in`` ends and on a 401), which is all an application user
needs — MSAL would add a second HTTP stack for the same one request.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import parse_qs, quote, urlsplit

import orjson
import structlog

from adapters.base import Adapter, Call, Health, Outcome, PollResult, operation, trigger
from adapters.dynamics.batch import BatchPart, build_batch, parse_batch
from adapters.dynamics.errors import DynamicsErrors, error_for
from adapters.dynamics.settings import SETTINGS_SCHEMA
from adapters.http import HttpClient, OAuth2ClientCredentials, Response
from adapters.http.settings import make_transport, parse_client_settings, validate_settings
from bus.errors import DeliveryError, PermanentError, TransientError

__all__ = ["DynamicsAdapter", "key_segment", "primary_key"]

log = structlog.get_logger(__name__)

_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_ENTITY_ID = re.compile(r"\(([0-9a-fA-F-]{36})\)\s*$")
_ODATA = {"OData-MaxVersion": "4.0", "OData-Version": "4.0", "Accept": "application/json"}


def primary_key(entity_set: str) -> str:
    """The primary key column of a standard table from its entity set name (salesorders -> salesorderid)."""
    if entity_set.endswith("ies"):
        return entity_set[:-3] + "yid"
    return (entity_set[:-1] if entity_set.endswith("s") else entity_set) + "id"


def _literal(column: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if column.startswith("_") and column.endswith("_value") and isinstance(value, str) and _GUID.match(value):
        return value  # a lookup column in an alternate key: a bare GUID
    return "'" + quote(str(value).replace("'", "''"), safe="") + "'"


def key_segment(key: Any) -> str:
    """``(ordernumber='SO-1')`` for an alternate key given as a column -> value object."""
    if not isinstance(key, Mapping) or not key:
        raise PermanentError("upsert: 'key' must be an object of alternate key columns, e.g. {\"ordernumber\": "
                             "\"SO-1\"}")
    for column, value in key.items():
        if not _NAME.match(str(column)) or value in (None, "") or isinstance(value, dict | list):
            raise PermanentError(f"upsert: key column {column!r} needs a plain value, got {value!r}")
    return "(" + ",".join(f"{column}={_literal(str(column), value)}" for column, value in key.items()) + ")"


def _json(body: bytes) -> Any:
    if not body.strip():
        return None
    try:
        return orjson.loads(body)
    except ValueError:
        return None


class DynamicsAdapter(Adapter):
    """Dataverse: create / update / upsert rows of any table (alone or in $batch), change tracking."""

    name: ClassVar[str] = "dynamics"
    summary: ClassVar[str] = "Dynamics 365 / Dataverse Web API: rows, alternate-key upserts, $batch, change tracking"
    settings_schema: ClassVar[Mapping[str, Any]] = SETTINGS_SCHEMA

    def __init__(self, system: str, settings: Mapping[str, Any]) -> None:
        super().__init__(system, settings)
        validate_settings(system, self.settings, self.settings_schema)
        client_settings = parse_client_settings(self.settings)
        self.transport = make_transport(client_settings)
        url = str(self.settings["url"]).rstrip("/")
        token_url = self.settings.get("token_url") or \
            f"https://login.microsoftonline.com/{self.settings['tenant_id']}/oauth2/v2.0/token"
        self.auth = OAuth2ClientCredentials(self.transport, token_url, self.settings["client_id"],
                                            self.settings["client_secret"],
                                            scope=self.settings.get("scope") or f"{url}/.default")
        self.base = f"{url}/api/data/v{self.settings.get('api_version', '9.2')}"
        self.client = HttpClient(self.base, self.transport, self.auth, client_settings.policy, _ODATA,
                                 classify=DynamicsErrors(client_settings.policy))

    def health(self) -> Health:
        try:
            self.client.request("GET", "WhoAmI", what="Dataverse WhoAmI")
        except Exception as exc:  # health() must never raise
            return Health(False, str(exc) if isinstance(exc, DeliveryError) else f"{type(exc).__name__}: {exc}")
        return Health(True, "WhoAmI answered")

    def close(self) -> None:
        if not self.closed:
            self.client.close()
        super().close()

    # -- operations ------------------------------------------------------------------------------------
    def _prefer(self) -> dict[str, str]:
        return {"Prefer": "return=representation"} if self.settings.get("return_representation", True) else {}

    def _plan(self, kind: str, call: Call) -> tuple[BatchPart, str]:
        """The request of one call, and the entity set it writes."""
        payload = call.payload
        if not isinstance(payload, Mapping):
            raise PermanentError(f"{kind}: payload must be an object, got {type(payload).__name__}")
        entity_set = payload.get("entity_set") or call.args.get("entity_set")
        if not isinstance(entity_set, str) or not _NAME.match(entity_set):
            raise PermanentError(f"{kind}: 'entity_set' (payload or args) must be an entity set name such as "
                                 f"'salesorders', got {entity_set!r}")
        fields = payload.get("fields")
        if not isinstance(fields, Mapping) or not fields:
            raise PermanentError(f"{kind}: payload 'fields' must be a non-empty object of columns")
        binds = payload.get("binds") or {}
        if not isinstance(binds, Mapping) or not all(isinstance(v, str) and v.startswith("/") for v in binds.values()):
            raise PermanentError(f"{kind}: 'binds' must map navigation properties to '/entityset(id)' paths")
        # A mapping cannot write a key with dots; '@odata.bind' is added here.
        fields = {**fields, **{f"{name}@odata.bind": path for name, path in binds.items()}}
        headers = self._prefer()
        if kind == "update":
            row = payload.get("id")
            if not isinstance(row, str) or not _GUID.match(row):
                raise PermanentError(f"update: payload 'id' must be the row's GUID, got {row!r}")
            headers["If-Match"] = str(payload.get("etag") or "*")
            return BatchPart("PATCH", f"{self.base}/{entity_set}({row})", dict(fields), headers), entity_set
        if kind == "create":
            column = call.args.get("idempotency_key_field") or self.settings.get("idempotency_key_field")
            if not column:
                return BatchPart("POST", f"{self.base}/{entity_set}", dict(fields), headers), entity_set
            segment = key_segment({column: call.idempotency_key})
            return BatchPart("PATCH", f"{self.base}/{entity_set}{segment}", dict(fields), headers), entity_set
        segment = key_segment(payload.get("key") or {k: fields[k] for k in call.args.get("key") or () if k in fields})
        mode = payload.get("mode") or call.args.get("mode") or "upsert"
        if mode == "create_only":
            headers["If-None-Match"] = "*"
        elif mode == "update_only":
            headers["If-Match"] = "*"
        elif mode != "upsert":
            raise PermanentError(f"upsert: mode must be upsert, create_only or update_only, got {mode!r}")
        return BatchPart("PATCH", f"{self.base}/{entity_set}{segment}", dict(fields), headers), entity_set

    def _outcome(self, entity_set: str, status: int, headers: Mapping[str, str], body: bytes) -> Outcome:
        doc = _json(body)
        record = doc if isinstance(doc, dict) else {}
        found = _ENTITY_ID.search(headers.get("odata-entityid", "") or headers.get("location", ""))
        row = found.group(1) if found else record.get(primary_key(entity_set))
        result = {"id": row, "entity_set": entity_set, "created": status == 201,
                  "etag": record.get("@odata.etag") or headers.get("etag")}
        if record:
            result["record"] = {k: v for k, v in record.items() if not k.startswith("@odata.context")}
        return Outcome(result=result, reference=str(row) if row else None,
                       detail=f"{entity_set} {'created' if status == 201 else 'written'}")

    def _read_back(self, call: Call, outcome: Outcome) -> Outcome:
        """``args.read_back: {entity_set, id_from, select}``: columns of a related row into the result (e.g.
        the sales order's customer after a note was added to it)."""
        spec = call.args.get("read_back")
        if not spec:
            return outcome
        if not isinstance(spec, Mapping) or not spec.get("entity_set") or not isinstance(spec.get("select"), list):
            raise PermanentError("args.read_back needs {entity_set, select: [...], id_from?}")
        payload = call.payload if isinstance(call.payload, Mapping) else {}
        row = payload.get(spec["id_from"]) if spec.get("id_from") else (outcome.result or {}).get("id")
        if not isinstance(row, str) or not _GUID.match(row):
            raise PermanentError(f"args.read_back: payload {spec.get('id_from')!r} is not a row GUID: {row!r}")
        response = self.client.request("GET", f"{spec['entity_set']}({row})",
                                       params={"$select": ",".join(map(str, spec["select"]))},
                                       what=f"{self.system} read back {spec['entity_set']}")
        result = dict(outcome.result or {})
        result["related"] = {k: v for k, v in (_json(response.body) or {}).items() if not k.startswith("@")}
        return Outcome(result=result, reference=outcome.reference, detail=outcome.detail)

    def _write(self, kind: str, call: Call) -> Outcome:
        part, entity_set = self._plan(kind, call)
        response: Response = self.client.request(part.method, part.url, json=part.body, headers=part.headers,
                                                 what=f"{self.system}.{kind} {entity_set}")
        return self._read_back(call, self._outcome(entity_set, response.status, response.headers, response.body))

    @operation(description="Create a row; payload {entity_set?, fields} (an upsert with idempotency_key_field)")
    def create(self, call: Call) -> Outcome:
        return self._write("create", call)

    @operation(description="Update a row by GUID with If-Match (ETag or *); payload {entity_set?, id, etag?, fields}")
    def update(self, call: Call) -> Outcome:
        return self._write("update", call)

    @operation(description="Upsert by alternate key; payload {entity_set?, key: {column: value}, mode?, fields}")
    def upsert(self, call: Call) -> Outcome:
        return self._write("upsert", call)

    def call_many(self, operation_name: str, calls: Sequence[Call]) -> list[Outcome | Exception]:
        """A worker batch as $batch requests: independent requests (``Prefer: odata.continue-on-error``), or one
        change set per batch with ``atomic_batches`` — whose failure rolls back all of it, so every call of the
        set gets a transient error and is retried alone by the worker."""
        if operation_name not in ("create", "update", "upsert") or len(calls) < 2:
            return super().call_many(operation_name, calls)
        out: list[Outcome | Exception | None] = [None] * len(calls)
        planned: list[tuple[int, BatchPart, str]] = []
        for index, one in enumerate(calls):
            try:
                part, entity_set = self._plan(operation_name, one)
                planned.append((index, part, entity_set))
            except DeliveryError as exc:
                out[index] = exc
        size = int(self.settings.get("batch_size", 100))
        for start in range(0, len(planned), size):
            chunk = planned[start:start + size]
            try:
                answers = self._batch(operation_name, chunk)
            except DeliveryError as exc:
                answers = [exc] * len(chunk)
            for (index, _, _), answer in zip(chunk, answers, strict=True):
                if isinstance(answer, Outcome):
                    try:
                        answer = self._read_back(calls[index], answer)
                    except DeliveryError as exc:
                        answer = exc
                out[index] = answer
        return [o if o is not None else PermanentError("no answer") for o in out]

    def _batch(self, kind: str, chunk: Sequence[tuple[int, BatchPart, str]]) -> list[Outcome | Exception]:
        atomic = bool(self.settings.get("atomic_batches", False))
        content_type, body = build_batch([part for _, part, _ in chunk], change_set=atomic)
        headers = {"Content-Type": content_type}
        if not atomic:
            headers["Prefer"] = "odata.continue-on-error"
        what = f"{self.system}.{kind} $batch ({len(chunk)} requests)"
        response = self.client.request("POST", "$batch", body=body, headers=headers, what=what)
        try:
            answers = parse_batch(response.header("content-type") or "", response.body)
        except ValueError as exc:
            raise TransientError(f"{what}: unreadable answer: {exc}") from None
        results: list[Outcome | Exception] = []
        if atomic and len(answers) == 1 and len(chunk) > 1 and answers[0].status >= 400:
            error = error_for(answers[0].status, answers[0].headers, answers[0].body, what)
            rolled_back = TransientError(f"{what}: the change set was rolled back: {error}",
                                         retry_after=error.retry_after if isinstance(error, TransientError) else None)
            return [rolled_back] * len(chunk)
        by_id = {a.content_id: a for a in answers if a.content_id}
        for number, (_, _, entity_set) in enumerate(chunk, start=1):
            answer = by_id.get(str(number)) if atomic else (answers[number - 1] if number <= len(answers) else None)
            sub_what = f"{self.system}.{kind} {entity_set} ($batch part {number})"
            if answer is None:
                results.append(TransientError(f"{sub_what}: the $batch answer does not mention it"))
            elif answer.status >= 400:
                results.append(error_for(answer.status, answer.headers, answer.body, sub_what))
            else:
                results.append(self._outcome(entity_set, answer.status, answer.headers, answer.body))
        return results

    # -- trigger: change tracking --------------------------------------------------------------------------
    @trigger(kind="poll", interval=30.0, description="Rows changed or deleted since the delta link (change tracking)")
    def changes(self, watermark: str | None) -> PollResult:
        opts = dict((self.settings.get("triggers") or {}).get("changes") or {})
        entity_set = str(opts.get("entity_set", "salesorders"))
        id_field = str(opts.get("id_field") or primary_key(entity_set))
        link = watermark
        emit = True
        if not link:
            select = [c for c in opts.get("select") or [] if c not in (id_field, "versionnumber")]
            columns = ",".join([id_field, "versionnumber", *select]) if opts.get("select") else ""
            link = f"{self.base}/{entity_set}" + (f"?$select={columns}" if columns else "")
            emit = opts.get("initial", "all") == "all"
        prefer = f"odata.track-changes,odata.maxpagesize={int(opts.get('page_size', 500))}"
        records: list[tuple[str, Any]] = []
        # Skipping the initial load reads it to its delta link in one poll: a later poll must not resume inside it.
        pages = int(opts.get("max_pages", 10)) if emit else 1_000_000
        for _ in range(pages):
            token = (parse_qs(urlsplit(link).query).get("$deltatoken") or ["initial"])[0]
            doc = _json(self.client.request("GET", link, headers={"Prefer": prefer},
                                            what=f"{self.system}.changes {entity_set}").body) or {}
            for row in doc.get("value") or []:
                if not isinstance(row, dict) or not emit:
                    continue
                if "$deletedEntity" in str(row.get("@odata.context", "")) or row.get("reason") == "deleted":
                    row_id = str(row.get("id"))
                    records.append((f"{row_id}@deleted@{token}", {id_field: row_id, "entity_set": entity_set,
                                                                  "_change": "removed",
                                                                  "reason": row.get("reason", "deleted")}))
                    continue
                row_id = str(row.get(id_field))
                version = row.get("versionnumber") or row.get("modifiedon") or token
                records.append((f"{row_id}@{version}", {**row, "entity_set": entity_set, "_change": "changed"}))
            if doc.get("@odata.nextLink"):
                link = str(doc["@odata.nextLink"])
                continue
            if doc.get("@odata.deltaLink"):
                link = str(doc["@odata.deltaLink"])
            break
        log.info("dynamics_changes_polled", system=self.system, entity_set=entity_set, records=len(records))
        return PollResult(records=records, watermark=link)
