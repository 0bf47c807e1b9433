"""The ``salesforce`` adapter: sObject writes over REST and /composite, CDC over the Pub/Sub API, outbound
messages, and SOQL polling."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import quote

import orjson
import structlog

from adapters.base import (
    Adapter,
    Call,
    Health,
    Outcome,
    PollResult,
    WebhookAnswer,
    WebhookRequest,
    operation,
    trigger,
)
from adapters.http import HttpClient, Response
from adapters.http.settings import make_transport, parse_client_settings, validate_settings
from adapters.salesforce import outbound
from adapters.salesforce.auth import SalesforceAuth, Session
from adapters.salesforce.cdc import PubSubClient, ReplayExpired, replay_from_watermark
from adapters.salesforce.errors import ApiBudget, BudgetTransport, SalesforceErrors
from adapters.salesforce.query import parse_modstamp, soql_for, soql_literal
from adapters.salesforce.rest import COMPOSITE_LIMIT, Write, outcome_for, plan_write
from adapters.salesforce.settings import SETTINGS_SCHEMA
from bus.config import parse_duration
from bus.errors import ConfigError, DeliveryError, PermanentError, TransientError

__all__ = ["SalesforceAdapter"]

log = structlog.get_logger(__name__)

_RECORD_ID = re.compile(r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$")
_ENTITY = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def _json(response: Response) -> Any:
    if not response.body:
        return None
    try:
        return orjson.loads(response.body)
    except ValueError:
        return None


class SalesforceAdapter(Adapter):
    """Salesforce: create / update / upsert any sObject (one by one or 25 per /composite request), Change Data
    Capture over the Pub/Sub API, outbound messages (SOAP, acknowledged), SOQL polling on SystemModstamp."""

    name: ClassVar[str] = "salesforce"
    summary: ClassVar[str] = "Salesforce: sObject writes (REST, composite), CDC (Pub/Sub API), outbound messages, SOQL"
    settings_schema: ClassVar[Mapping[str, Any]] = SETTINGS_SCHEMA
    webhook_blocking: ClassVar[bool] = False  # parsing a notification is CPU work only

    def __init__(self, system: str, settings: Mapping[str, Any]) -> None:
        super().__init__(system, settings)
        validate_settings(system, self.settings, self.settings_schema)
        client_settings = parse_client_settings(self.settings)
        self.budget = ApiBudget(float(self.settings.get("api_reserve", 0.05)))
        self.transport = BudgetTransport(make_transport(client_settings), self.budget)
        self.auth = SalesforceAuth(self.transport, self.settings,
                                   lifetime=parse_duration(self.settings.get("session_lifetime", "2h")))
        self.api = str(self.settings.get("api_version", "66.0"))
        self.client = HttpClient("", self.transport, self.auth, client_settings.policy,
                                 {"Accept": "application/json",
                                  "Sforce-Call-Options": f"client={self.client_tag}"},
                                 classify=SalesforceErrors(client_settings.policy))
        self._pubsub: PubSubClient | None = None

    @property
    def client_tag(self) -> str:
        return str(self.settings.get("call_options_client", "ironbus"))

    def _trigger_settings(self, name: str) -> dict[str, Any]:
        return dict((self.settings.get("triggers") or {}).get(name) or {})

    # -- plumbing --------------------------------------------------------------------------------------
    def _url(self, path: str) -> str:
        return self.auth.session().instance_url + path

    def _request(self, method: str, path: str, *, body: Any = None, what: str,
                 headers: Mapping[str, str] | None = None, success: set[int] | None = None) -> Response:
        # The path is resolved after the session, so a renewed session on another instance is followed.
        url = path if path.startswith("http") else self._url(path)
        if body is None:
            return self.client.request(method, url, headers=headers, what=what, success=success)
        return self.client.request(method, url, json=body, headers=headers, what=what, success=success)

    def _check_budget(self) -> None:
        wait = self.budget.exhausted_for()
        if wait is not None:
            snap = self.budget.snapshot()
            raise TransientError(f"{self.system}: Salesforce API budget down to its reserve "
                                 f"({snap['used']}/{snap['limit']} used); waiting", retry_after=wait)

    def health(self) -> Health:
        try:
            self._request("GET", f"/services/data/v{self.api}/limits", what="Salesforce limits")
        except Exception as exc:  # health() must never raise
            return Health(False, str(exc) if isinstance(exc, DeliveryError) else f"{type(exc).__name__}: {exc}")
        snap = self.budget.snapshot()
        return Health(True, f"API usage {snap['used']}/{snap['limit']}")

    def close(self) -> None:
        if not self.closed:
            if self._pubsub is not None:
                self._pubsub.close()
            self.client.close()
        super().close()

    # -- operations ------------------------------------------------------------------------------------
    def _plan(self, kind: str, call: Call) -> Write:
        return plan_write(kind, call, self.api, self.settings.get("idempotency_field"))

    def _write(self, kind: str, call: Call) -> Outcome:
        self._check_budget()
        write = self._plan(kind, call)
        what = f"{self.system}.{kind} {write.sobject}"
        response = self._request(write.method, write.path, body=write.body, what=what,
                                 success={200, 201, 204, 300})
        result = outcome_for(write, response.status, _json(response), what)
        if isinstance(result, Exception):
            raise result
        return self._read_back(call, result)

    def _read_back(self, call: Call, outcome: Outcome) -> Outcome:
        """``args.read_back: {sobject?, id_from?, fields}``: read fields of the written record (or of the
        record whose id the payload holds under ``id_from``) into the result, e.g. an Order's AccountId for the
        customer notice after a Task was added to it."""
        spec = call.args.get("read_back")
        if not spec:
            return outcome
        if not isinstance(spec, Mapping) or not isinstance(spec.get("fields"), list) or not spec["fields"]:
            raise PermanentError("args.read_back needs {fields: [...], sobject?, id_from?}")
        result = dict(outcome.result or {})
        record_id: Any = result.get("id")
        if spec.get("id_from"):
            payload = call.payload if isinstance(call.payload, Mapping) else {}
            inner = payload.get("fields")
            fields: Mapping[str, Any] = inner if isinstance(inner, Mapping) else payload
            record_id = payload.get(spec["id_from"], fields.get(spec["id_from"]))
        sobject = spec.get("sobject") or result.get("sobject")
        if not record_id or not sobject:
            raise PermanentError(f"args.read_back: no record id (id_from={spec.get('id_from')!r}) to read")
        names = ",".join(str(f) for f in spec["fields"])
        response = self._request("GET", f"/services/data/v{self.api}/sobjects/{sobject}/{quote(str(record_id))}"
                                 f"?fields={quote(names, safe=',')}", what=f"{self.system} read back {sobject}")
        record = _json(response)
        result["record"] = {k: v for k, v in (record or {}).items() if k != "attributes"}
        return Outcome(result=result, reference=outcome.reference, detail=outcome.detail)

    @operation(description="Create a record of any sObject; payload {sobject?, fields} (args.sobject)")
    def create(self, call: Call) -> Outcome:
        return self._write("create", call)

    @operation(description="Update a record by id; payload {sobject?, id, fields}")
    def update(self, call: Call) -> Outcome:
        return self._write("update", call)

    @operation(description="Upsert by external id; payload {sobject?, external_id_field?, external_id?, fields}")
    def upsert(self, call: Call) -> Outcome:
        return self._write("upsert", call)

    def call_many(self, operation_name: str, calls: Sequence[Call]) -> list[Outcome | Exception]:
        """A worker batch as /composite requests of up to ``composite_size`` writes; each call gets its own
        outcome or error (under all-or-none, the siblings of a failed write get a transient PROCESSING_HALTED)."""
        if operation_name not in ("create", "update", "upsert") or len(calls) < 2:
            return super().call_many(operation_name, calls)
        out: list[Outcome | Exception | None] = [None] * len(calls)
        planned: list[tuple[int, Write]] = []
        for index, one in enumerate(calls):
            try:
                planned.append((index, self._plan(operation_name, one)))
            except DeliveryError as exc:
                out[index] = exc
        size = int(self.settings.get("composite_size", COMPOSITE_LIMIT))
        for start in range(0, len(planned), size):
            chunk = planned[start:start + size]
            try:
                self._check_budget()
                answers = self._composite(operation_name, chunk)
            except DeliveryError as exc:
                answers = [exc] * len(chunk)
            for (index, _), answer in zip(chunk, answers, strict=True):
                if isinstance(answer, Outcome):
                    try:
                        answer = self._read_back(calls[index], answer)
                    except DeliveryError as exc:
                        answer = exc
                out[index] = answer
        return [o if o is not None else PermanentError("no answer") for o in out]

    def _composite(self, kind: str, chunk: Sequence[tuple[int, Write]]) -> list[Outcome | Exception]:
        subrequests = [{"method": w.method, "url": w.path, "referenceId": f"call{i}", "body": w.body}
                       for i, (_, w) in enumerate(chunk)]
        body = {"allOrNone": bool(self.settings.get("all_or_none", False)), "compositeRequest": subrequests}
        what = f"{self.system}.{kind} composite ({len(chunk)} writes)"
        doc = _json(self._request("POST", f"/services/data/v{self.api}/composite", body=body, what=what))
        answers = {str(r.get("referenceId")): r for r in (doc or {}).get("compositeResponse") or []
                   if isinstance(r, dict)}
        results: list[Outcome | Exception] = []
        for i, (_, write) in enumerate(chunk):
            found = answers.get(f"call{i}")
            sub_what = f"{self.system}.{kind} {write.sobject} (composite call{i})"
            if found is None:
                results.append(TransientError(f"{sub_what}: the composite answer does not mention it"))
                continue
            results.append(outcome_for(write, int(found.get("httpStatusCode") or 0), found.get("body"), sub_what))
        return results

    # -- triggers: Change Data Capture over the Pub/Sub API ------------------------------------------------
    def _credentials(self) -> tuple[str, str, str]:
        session: Session = self.auth.session()
        org = self.settings.get("organization_id") or session.org_id
        if not org:
            raise PermanentError("Pub/Sub API needs the org id: set settings organization_id")
        return session.token, session.instance_url, str(org)

    @property
    def pubsub(self) -> PubSubClient:
        if self._pubsub is None:
            self._pubsub = PubSubClient(str(self.settings.get("pubsub_url", "grpcs://api.pubsub.salesforce.com:7443")),
                                        self._credentials, self.auth.invalidate)
        return self._pubsub

    @trigger(kind="poll", interval=5.0, description="Change Data Capture events over the Pub/Sub API (replay id)")
    def change_events(self, watermark: str | None) -> PollResult:
        opts = self._trigger_settings("change_events")
        topic = opts.get("topic")
        if not topic:
            raise ConfigError(f"system {self.system!r}: settings/triggers/change_events/topic is needed "
                              "(e.g. /data/OrderChangeEvent)")
        after = replay_from_watermark(watermark) if watermark else None
        batch_size, wait = int(opts.get("batch", 100)), parse_duration(opts.get("wait", "2s"))
        try:
            batch = self.pubsub.fetch(topic, after, str(opts.get("start", "latest")), batch_size, wait)
        except ReplayExpired as exc:
            if opts.get("replay_expired", "fail") != "earliest":
                raise PermanentError(f"{exc}; events after the stored replay id are past retention. Set "
                                     "triggers.change_events.replay_expired: earliest to resume (a gap) or "
                                     "clear the watermark") from None
            log.error("pubsub_replay_expired_resuming_at_earliest", system=self.system, topic=topic)
            batch = self.pubsub.fetch(topic, None, "earliest", batch_size, wait)
        records: list[tuple[str, Any]] = []
        own = f"client={self.client_tag}"
        for replay, event_id, schema_id, record in batch.events:
            header = record.get("ChangeEventHeader") or {}
            if opts.get("ignore_own_changes", True) and own in str(header.get("changeOrigin") or ""):
                continue
            meta = {"replay_id": replay, "event_id": event_id, "schema_id": schema_id, "topic": topic}
            ids = [str(i) for i in header.get("recordIds") or []] or [""]
            per_record = ids if opts.get("split_records", True) else [ids[0]]
            for record_id in per_record:
                one = orjson.loads(orjson.dumps(record)) if len(per_record) > 1 else record
                if len(per_record) > 1:
                    one["ChangeEventHeader"]["recordIds"] = [record_id]
                one = self._enrich(one, header, record_id, opts.get("read_record", False))
                records.append((f"{replay}:{record_id}" if record_id else replay, {**one, "_event": meta}))
        log.info("salesforce_cdc_batch", system=self.system, topic=topic, events=len(batch.events),
                 payloads=len(records), resume_after=batch.resume_after)
        return PollResult(records=records, watermark=batch.resume_after)

    def _enrich(self, record: dict[str, Any], header: Mapping[str, Any], record_id: str,
                read: bool | list[str]) -> dict[str, Any]:
        change = str(header.get("changeType") or "")
        if not read or not record_id or change.endswith("DELETE"):
            return record
        entity = str(header.get("entityName") or "")
        if not _RECORD_ID.match(record_id) or not _ENTITY.match(entity):
            raise PermanentError(f"change event names record {record_id!r} of {entity!r}: not a Salesforce id "
                                 "and object name")
        if isinstance(read, list) and any(f.lstrip().startswith("(") for f in read):
            # Child records (an Order's OrderItems) come only with SOQL: one query for the record and its lines.
            soql = f"SELECT {', '.join(read)} FROM {entity} WHERE Id = '{record_id}'"
            doc = _json(self._request("GET", f"/services/data/v{self.api}/query?q={quote(soql, safe='')}",
                                      what=f"{self.system} read {entity} {record_id}")) or {}
            rows = doc.get("records") or [{}]
            found = rows[0] if isinstance(rows[0], dict) else {}
        else:
            query = f"?fields={','.join(read)}" if isinstance(read, list) else ""
            found = _json(self._request("GET", f"/services/data/v{self.api}/sobjects/{entity}/{record_id}{query}",
                                        what=f"{self.system} read {entity} {record_id}")) or {}
        current = {k: v for k, v in found.items() if k != "attributes"}
        # The record as it is now, plus the event's own values where it has one.
        return {**current, **{k: v for k, v in record.items() if v is not None}}

    # -- triggers: SOQL polling --------------------------------------------------------------------------
    @trigger(kind="poll", interval=60.0, description="Records whose SystemModstamp moved (SOQL /query, paged)")
    def modified_records(self, watermark: str | None) -> PollResult:
        opts = self._trigger_settings("modified_records")
        since = parse_modstamp(watermark or opts.get("start"))
        limit = int(opts.get("max_records", 2000))
        soql = soql_for(str(opts.get("sobject", "Order")), list(opts.get("fields") or []), since,
                        parse_duration(opts.get("overlap", "5s")), opts.get("where"), limit)
        path: str | None = f"/services/data/v{self.api}/query?q={quote(soql, safe='')}"
        records: list[tuple[str, Any]] = []
        newest = since
        while path and len(records) < limit:
            doc = _json(self._request("GET", path, what=f"{self.system}.modified_records query")) or {}
            for row in doc.get("records") or []:
                stamp = parse_modstamp(row.get("SystemModstamp"))
                if stamp is not None and (newest is None or stamp > newest):
                    newest = stamp
                records.append((f"{row.get('Id')}@{row.get('SystemModstamp')}", row))
            path = doc.get("nextRecordsUrl") if not doc.get("done", True) else None
        return PollResult(records=records, watermark=soql_literal(newest) if newest else watermark)

    # -- triggers: outbound messages ---------------------------------------------------------------------
    @functools.cached_property
    def _organization_id(self) -> str:
        org = self.settings.get("organization_id")
        if not org:
            raise ConfigError(f"system {self.system!r}: settings/organization_id is needed to accept outbound messages")
        return str(org)

    @trigger(kind="webhook", description="Outbound messages (SOAP notifications), acknowledged with Ack")
    def outbound_messages(self, request: WebhookRequest) -> list[Any]:
        actions = (self.settings.get("outbound_messages") or {}).get("action_ids") or ()
        return outbound.parse_notifications(request.body, self._organization_id, actions)

    def webhook_key(self, trigger_name: str) -> Callable[[Any], str | None] | None:
        return outbound.key_of if trigger_name == "outbound_messages" else None

    def webhook_content_types(self, trigger_name: str) -> tuple[str, ...]:
        return ("text/xml", "application/xml", "+xml") if trigger_name == "outbound_messages" else ()

    def webhook_answer(self, trigger_name: str, request: WebhookRequest | None, status: int, reason: str,
                       detail: str, accepted: Sequence[str]) -> WebhookAnswer | None:
        if trigger_name != "outbound_messages":
            return None
        if status == 202:  # journaled: Salesforce stops resending only on this acknowledgement
            return WebhookAnswer(200, outbound.ACK, "text/xml; charset=utf-8")
        return WebhookAnswer(status, outbound.fault(reason, detail), "text/xml; charset=utf-8")


