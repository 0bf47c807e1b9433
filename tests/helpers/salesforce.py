"""A local Salesforce for tests: the REST API (OAuth token endpoint, sObjects, /composite, /query, /limits)
over real HTTP, and the Pub/Sub API as a real gRPC server on the published proto, serving Avro-encoded change
events. Answers follow the REST API Developer Guide and the samples in tests/fixtures/samples/salesforce/.
"""

from __future__ import annotations

import functools
import io
import json
import re
import threading
import uuid
from collections.abc import Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import fastavro
import grpc
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from adapters.salesforce.pubsub import pubsub_api_pb2 as pb
from adapters.salesforce.pubsub import pubsub_api_pb2_grpc as pb_grpc

SAMPLES = Path(__file__).resolve().parent.parent / "fixtures" / "samples" / "salesforce"
ORG_ID = "00D5f000000J4xKEAS"
USER_ID = "0055f000005mc66AAA"
PREFIXES = {"Order": "801", "OrderItem": "802", "Opportunity": "006", "Task": "00T", "Account": "001"}
_DOUBLE = {"Amount", "Probability", "ExpectedRevenue", "TotalOpportunityQuantity", "AnnualRevenue", "Latitude",
           "Longitude", "TotalAmount", "UnitPrice", "Quantity"}


def sample(name: str) -> Any:
    text = (SAMPLES / name).read_text()
    return json.loads(text) if name.endswith(".json") else text


@functools.lru_cache(maxsize=1)
def rsa_key() -> tuple[str, str]:
    """(private PEM, public PEM) of a fresh RSA key: the connected app's certificate pair."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


# -- Avro schemas shaped like Salesforce's change event schemas ---------------------------------------------
HEADER_SCHEMA = {"type": "record", "name": "ChangeEventHeader", "namespace": "com.sforce.eventbus", "fields": [
    {"name": "entityName", "type": "string"},
    {"name": "recordIds", "type": {"type": "array", "items": "string"}},
    {"name": "changeType", "type": {"type": "enum", "name": "ChangeType", "namespace": "com.sforce.eventbus",
                                    "symbols": ["CREATE", "UPDATE", "DELETE", "UNDELETE", "GAP_CREATE", "GAP_UPDATE",
                                                "GAP_DELETE", "GAP_UNDELETE", "GAP_OVERFLOW", "SNAPSHOT"]}},
    {"name": "changeOrigin", "type": "string"},
    {"name": "transactionKey", "type": "string"},
    {"name": "sequenceNumber", "type": "int"},
    {"name": "commitTimestamp", "type": "long"},
    {"name": "commitNumber", "type": "long"},
    {"name": "commitUser", "type": "string"},
    {"name": "nulledFields", "type": {"type": "array", "items": "string"}},
    {"name": "diffFields", "type": {"type": "array", "items": "string"}},
    {"name": "changedFields", "type": {"type": "array", "items": "string"}},
]}


def _field_type(name: str, value: Any) -> Any:
    if isinstance(value, dict):
        return ["null", {"type": "record", "name": name, "fields": [
            {"name": k, "type": _field_type(k, v), "default": None} for k, v in value.items()]}]
    if name in _DOUBLE or isinstance(value, float):
        return ["null", "double"]
    if isinstance(value, bool):
        return ["null", "boolean"]
    if isinstance(value, int) or name.endswith("Date") or name.endswith("Date__c"):
        return ["null", "long"]
    return ["null", "string"]


def schema_from_sample(entity: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The change event schema of ``entity`` with the fields, in order, of a decoded sample payload."""
    fields: list[dict[str, Any]] = [{"name": "ChangeEventHeader", "type": HEADER_SCHEMA}]
    for name, value in payload.items():
        if name != "ChangeEventHeader":
            fields.append({"name": name, "type": _field_type(name, value), "default": None})
    return {"type": "record", "name": f"{entity}ChangeEvent", "namespace": "com.sforce.eventbus", "fields": fields}


ORDER_FIELDS: dict[str, Any] = {"AccountId": "001SM0000000iibYAA", "OrderNumber": "00000100", "Status": "Draft",
                                "EffectiveDate": 1, "EndDate": None, "TotalAmount": 1.0, "CurrencyIsoCode": "EUR",
                                "Description": None, "PoNumber": None, "Promised_Date__c": None, "OwnerId": None,
                                "CreatedDate": 1, "LastModifiedDate": 1}


def bitmap(schema: dict[str, Any], names: list[str]) -> str:
    """The top-level bitmap of ``names`` against ``schema`` (bit n = field n), as Salesforce encodes it."""
    positions = {f["name"]: i for i, f in enumerate(schema["fields"])}
    value = 0
    for name in names:
        value |= 1 << positions[name]
    return hex(value)


def change_event(entity: str, schema: dict[str, Any], change: str, record_ids: list[str], fields: dict[str, Any],
                 commit_number: int, origin: str = "com/salesforce/api/soap/60.0;client=SfdcInternalAPI/",
                 ) -> dict[str, Any]:
    """A decoded change event for ``schema``: every field present, the unchanged ones null."""
    record: dict[str, Any] = {f["name"]: None for f in schema["fields"][1:]}
    record.update(fields)
    record["ChangeEventHeader"] = {
        "entityName": entity, "recordIds": record_ids, "changeType": change, "changeOrigin": origin,
        "transactionKey": str(uuid.uuid4()), "sequenceNumber": 1, "commitTimestamp": 1714156703000,
        "commitNumber": commit_number, "commitUser": USER_ID, "nulledFields": [], "diffFields": [],
        "changedFields": [bitmap(schema, list(fields))] if change == "UPDATE" else []}
    return record


# -- the Pub/Sub API -----------------------------------------------------------------------------------------
class PubSubServer(pb_grpc.PubSubServicer):
    """The Pub/Sub API on 127.0.0.1: topics of Avro events, replay ids, flow control by num_requested."""

    def __init__(self, tokens: set[str], instance_url: str) -> None:
        self.tokens = tokens
        self.instance_url = instance_url
        self.schemas: dict[str, str] = {}
        self.parsed: dict[str, Any] = {}
        self.topics: dict[str, list[tuple[bytes, pb.ProducerEvent]]] = {}
        self.cond = threading.Condition()
        self.first_requests: list[pb.FetchRequest] = []
        self.fetch_credits: list[int] = []
        self.schema_requests = 0
        self.expired_before = 0  # replay ids below this number are past retention
        self.end_streams_after: int | None = None  # end every stream after sending this many events
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        pb_grpc.add_PubSubServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self._counter = 1000

    @property
    def url(self) -> str:
        return f"grpc://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        with self.cond:
            self.cond.notify_all()
        self.server.stop(grace=0.05).wait(2)

    def add_schema(self, schema: dict[str, Any]) -> str:
        schema_id = uuid.uuid5(uuid.NAMESPACE_URL, json.dumps(schema, sort_keys=True)).hex[:22]
        self.schemas[schema_id] = json.dumps(schema)
        self.parsed[schema_id] = fastavro.parse_schema(schema)
        return schema_id

    def publish(self, topic: str, schema_id: str, record: dict[str, Any]) -> bytes:
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, self.parsed[schema_id], record)
        with self.cond:
            self._counter += 1
            replay = self._counter.to_bytes(8, "big")  # opaque bytes, as Salesforce's are
            event = pb.ProducerEvent(id=str(uuid.uuid4()), schema_id=schema_id, payload=buffer.getvalue())
            self.topics.setdefault(topic, []).append((replay, event))
            self.cond.notify_all()
        return replay

    def _check(self, context: grpc.ServicerContext) -> None:
        md = dict(context.invocation_metadata())
        if md.get("accesstoken") not in self.tokens or md.get("tenantid") != ORG_ID \
                or md.get("instanceurl") != self.instance_url:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "Invalid session id or tenant")

    def GetSchema(self, request: pb.SchemaRequest, context: grpc.ServicerContext) -> pb.SchemaInfo:  # noqa: N802
        self._check(context)
        self.schema_requests += 1
        if request.schema_id not in self.schemas:
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown schema {request.schema_id}")
        return pb.SchemaInfo(schema_json=self.schemas[request.schema_id], schema_id=request.schema_id)

    def GetTopic(self, request: pb.TopicRequest, context: grpc.ServicerContext) -> pb.TopicInfo:  # noqa: N802
        self._check(context)
        return pb.TopicInfo(topic_name=request.topic_name, tenant_guid=ORG_ID, can_subscribe=True)

    def Subscribe(self, requests: Iterator[pb.FetchRequest], context: grpc.ServicerContext,  # noqa: N802
                  ) -> Iterator[pb.FetchResponse]:
        self._check(context)
        first = next(requests)
        credits = [first.num_requested]
        with self.cond:
            self.first_requests.append(first)
            events = self.topics.setdefault(first.topic_name, [])
            if first.replay_preset == pb.CUSTOM:
                number = int.from_bytes(first.replay_id, "big")
                if number < self.expired_before or not any(r == first.replay_id for r, _ in events):
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, "The Replay ID validation failed.")
                position = next(i for i, (r, _) in enumerate(events) if r == first.replay_id) + 1
            elif first.replay_preset == pb.EARLIEST:
                position = 0
            else:
                position = len(events)

        def more() -> None:
            try:
                for request in requests:
                    with self.cond:
                        credits[0] += request.num_requested
                        self.fetch_credits.append(request.num_requested)
                        self.cond.notify_all()
            except grpc.RpcError:
                pass  # the client closed the stream

        threading.Thread(target=more, daemon=True).start()
        events = self.topics[first.topic_name]  # appended to in place by publish()
        sent = 0

        def ready() -> bool:
            return (position < len(events) and credits[0] > 0) or not context.is_active()

        while context.is_active():
            with self.cond:
                self.cond.wait_for(ready, timeout=0.2)
                take = min(credits[0], len(events) - position, 3)  # answers may split a request
                if take <= 0:
                    continue
                batch = events[position:position + take]
                position += take
                credits[0] -= take
            yield pb.FetchResponse(events=[pb.ConsumerEvent(event=e, replay_id=r) for r, e in batch],
                                   latest_replay_id=batch[-1][0], pending_num_requested=credits[0])
            sent += len(batch)
            if self.end_streams_after is not None and sent >= self.end_streams_after:
                return  # the server ends the stream, as Salesforce may at any time


# -- the REST API ---------------------------------------------------------------------------------------------
class FakeSalesforce:
    """Salesforce's REST API on 127.0.0.1 (records in memory), with the Pub/Sub API beside it."""

    def __init__(self, api_limit: int = 5000) -> None:
        self.client_id, self.client_secret, self.username = "3MVG9-test-consumer-key", "s3cr3t-value", "bus@acme.test"
        self.private_key, self.public_key = rsa_key()
        self.tokens: set[str] = set()
        self.token_requests: list[dict[str, str]] = []
        self.records: dict[str, dict[str, dict[str, Any]]] = {}
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        self.api_used, self.api_limit = 0, api_limit
        self.lock = threading.RLock()
        self.clock = 1714156703
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                status, body, headers = fake.handle(self.command, self.path, dict(self.headers), raw)
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                if data:
                    self.send_header("Content-Type", "application/json;charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = _serve  # noqa: N815

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        self.pubsub = PubSubServer(self.tokens, self.url)

    def __enter__(self) -> FakeSalesforce:
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.pubsub.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.pubsub.stop()
        self.http.shutdown()
        self.http.server_close()

    def settings(self, **extra: Any) -> dict[str, Any]:
        return {"login_url": self.url, "organization_id": ORG_ID, "pubsub_url": self.pubsub.url,
                "auth": {"type": "client_credentials", "client_id": self.client_id,
                         "client_secret": self.client_secret}, **extra}

    # -- request handling ------------------------------------------------------------------------------
    def handle(self, method: str, path: str, headers: dict[str, str], raw: bytes,
               ) -> tuple[int, Any, dict[str, str]]:
        lower = {k.lower(): v for k, v in headers.items()}
        split = urlsplit(path)
        body = json.loads(raw) if raw and "json" in lower.get("content-type", "") else raw.decode()
        with self.lock:
            self.requests.append((method, path, lower, body))
        if split.path == "/services/oauth2/token":
            return self.token(parse_qs(raw.decode()))
        if lower.get("authorization", "").removeprefix("Bearer ") not in self.tokens:
            return 401, [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}], {}
        with self.lock:
            self.api_used += 1
            limit_header = {"Sforce-Limit-Info": f"api-usage={self.api_used}/{self.api_limit}"}
            if self.api_used > self.api_limit:
                return 403, sample("error_403_REQUEST_LIMIT_EXCEEDED.json"), limit_header
        status, answer = self.route(method, split.path, parse_qs(split.query), body)
        return status, answer, limit_header

    def token(self, form: dict[str, list[str]]) -> tuple[int, Any, dict[str, str]]:
        one = {k: v[0] for k, v in form.items()}
        self.token_requests.append(one)
        if one.get("grant_type") == "client_credentials":
            ok = one.get("client_id") == self.client_id and one.get("client_secret") == self.client_secret
        elif one.get("grant_type") == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            try:
                claims = jwt.decode(one.get("assertion", ""), self.public_key, algorithms=["RS256"],
                                    audience=self.url)
                ok = claims["iss"] == self.client_id and claims["sub"] == self.username
            except jwt.PyJWTError:
                ok = False
        else:
            return 400, {"error": "unsupported_grant_type", "error_description": "grant type not supported"}, {}
        if not ok:
            return 400, {"error": "invalid_client", "error_description": "invalid client credentials"}, {}
        token = f"{ORG_ID}!{uuid.uuid4().hex}"
        self.tokens.add(token)
        return 200, {"access_token": token, "signature": "c2lnbmF0dXJl", "token_format": "opaque",
                     "instance_url": self.url, "id": f"{self.url}/id/{ORG_ID}/{USER_ID}", "token_type": "Bearer",
                     "issued_at": "1714156703000"}, {}

    def expire_sessions(self) -> None:
        self.tokens.clear()

    def new_id(self, sobject: str) -> str:
        return PREFIXES.get(sobject, "a00") + uuid.uuid4().hex[:12].upper() + "AAA"

    def modstamp(self) -> str:
        self.clock += 1
        return f"2024-04-26T{(self.clock // 3600) % 24:02d}:{(self.clock // 60) % 60:02d}:{self.clock % 60:02d}" \
               ".000+0000"

    def _validate(self, fields: dict[str, Any]) -> tuple[int, Any] | None:
        for name in fields:
            if "Bogus" in name:
                return 400, [{"message": f"No such column '{name}' on sobject", "errorCode": "INVALID_FIELD"}]
        if fields.get("Description") == "answer-lock":
            return 400, [{"message": "unable to obtain exclusive access to this record",
                          "errorCode": "UNABLE_TO_LOCK_ROW", "fields": []}]
        if fields.get("Description") == "answer-validation":
            return 400, [{"message": "Promised date cannot be in the past",
                          "errorCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION", "fields": ["Promised_Date__c"]}]
        return None

    def route(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        parts = [unquote(p) for p in path.split("/") if p]
        if parts[:2] != ["services", "data"] or len(parts) < 4:
            return 404, [{"message": "The requested resource does not exist", "errorCode": "NOT_FOUND"}]
        rest = parts[3:]
        if rest == ["limits"]:
            return 200, {"DailyApiRequests": {"Max": self.api_limit, "Remaining": self.api_limit - self.api_used}}
        if rest == ["composite"] and method == "POST":
            return 200, self.composite(body)
        if rest[0] == "query":
            return self.query(query, rest)
        if rest[0] == "sobjects" and len(rest) >= 2:
            return self.sobject(method, rest[1:], query, body)
        return 404, [{"message": "The requested resource does not exist", "errorCode": "NOT_FOUND"}]

    def sobject(self, method: str, rest: list[str], query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        sobject = rest[0]
        table = self.records.setdefault(sobject, {})
        if method == "POST" and len(rest) == 1:
            failed = self._validate(body)
            if failed:
                return failed
            record_id = self.new_id(sobject)
            table[record_id] = {**body, "Id": record_id, "SystemModstamp": self.modstamp()}
            return 201, {"id": record_id, "success": True, "errors": []}
        if method == "PATCH" and len(rest) == 2:
            if rest[1] not in table:
                return 404, [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]
            failed = self._validate(body)
            if failed:
                return failed
            table[rest[1]].update(body, SystemModstamp=self.modstamp())
            return 204, None
        if method == "PATCH" and len(rest) == 3:
            field, value = rest[1], rest[2]
            failed = self._validate(body)
            if failed:
                return failed
            found = [r for r in table.values() if str(r.get(field)) == value]
            if len(found) > 1:
                return 300, [f"/services/data/v66.0/sobjects/{sobject}/{r['Id']}" for r in found]
            if found:
                found[0].update(body, SystemModstamp=self.modstamp())
                return 200, {"id": found[0]["Id"], "success": True, "errors": [], "created": False}
            record_id = self.new_id(sobject)
            table[record_id] = {**body, field: value, "Id": record_id, "SystemModstamp": self.modstamp()}
            return 201, {"id": record_id, "success": True, "errors": [], "created": True}
        if method == "GET" and len(rest) == 2:
            record = table.get(rest[1])
            if record is None:
                return 404, [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]
            wanted = (query.get("fields") or [""])[0].split(",")
            shown = {k: record.get(k) for k in wanted if k} if wanted != [""] else dict(record)
            return 200, {"attributes": {"type": sobject, "url": f"/services/data/v66.0/sobjects/{sobject}/{rest[1]}"},
                         **shown, "Id": rest[1]}
        return 405, [{"errorCode": "METHOD_NOT_ALLOWED", "message": f"HTTP Method '{method}' not allowed"}]

    def composite(self, body: dict[str, Any]) -> dict[str, Any]:
        subrequests = body["compositeRequest"]
        assert len(subrequests) <= 25, "Salesforce allows 25 subrequests"
        snapshot = json.loads(json.dumps(self.records))
        answers = []
        failed = False
        for sub in subrequests:
            parts = [unquote(p) for p in urlsplit(sub["url"]).path.split("/") if p]
            status, answer = self.sobject(sub["method"], parts[4:], {}, sub.get("body"))
            failed = failed or status >= 400
            answers.append({"body": answer, "httpHeaders": {}, "httpStatusCode": status,
                            "referenceId": sub["referenceId"]})
        if failed and body.get("allOrNone"):
            self.records = snapshot
            for answer in answers:
                if answer["httpStatusCode"] < 400:
                    answer.update(httpStatusCode=400, body=[{
                        "errorCode": "PROCESSING_HALTED",
                        "message": "The transaction was rolled back since another operation in the same "
                                   "transaction failed."}])
        return {"compositeResponse": answers}

    def query(self, query: dict[str, list[str]], rest: list[str]) -> tuple[int, Any]:
        if len(rest) == 2:  # nextRecordsUrl: /query/<locator>-<offset>
            locator, _, offset = rest[1].rpartition("-")
            rows = self._cursors[locator]
            start = int(offset)
        else:
            soql = query["q"][0]
            by_id = re.match(r"SELECT (.+) FROM (\w+) WHERE Id = '(\w+)'$", soql)
            if by_id:
                return 200, self.select_by_id(by_id.group(2), by_id.group(3), by_id.group(1))
            match = re.match(r"SELECT (.+) FROM (\w+)(?: WHERE SystemModstamp >= (\S+))?.* LIMIT (\d+)$", soql)
            assert match, soql
            fields = [f.strip() for f in match.group(1).split(",")]
            since = match.group(3)
            rows = sorted((r for r in self.records.get(match.group(2), {}).values()
                           if since is None or r["SystemModstamp"][:19] >= since.rstrip("Z")),
                          key=lambda r: (r["SystemModstamp"], r["Id"]))[: int(match.group(4))]
            rows = [{"attributes": {"type": match.group(2)}, **{f: r.get(f) for f in fields}} for r in rows]
            locator = "01g" + uuid.uuid4().hex[:15]
            self._cursors[locator] = rows
            start = 0
        page = rows[start:start + 2]  # small pages, so paging is exercised
        done = start + 2 >= len(rows)
        answer: dict[str, Any] = {"totalSize": len(rows), "done": done, "records": page}
        if not done:
            answer["nextRecordsUrl"] = f"/services/data/v66.0/query/{locator}-{start + 2}"
        return 200, answer

    _cursors: dict[str, list[dict[str, Any]]] = {}

    def select_by_id(self, sobject: str, record_id: str, select: str) -> dict[str, Any]:
        """SOQL by Id with child subqueries, e.g. ``Id, Status, (SELECT Id, Quantity FROM OrderItems)``."""
        record = self.records.get(sobject, {}).get(record_id)
        if record is None:
            return {"totalSize": 0, "done": True, "records": []}
        children = re.findall(r"\(SELECT (.+?) FROM (\w+)\)", select)
        plain = [f.strip() for f in re.sub(r"\(SELECT .+? FROM \w+\)", "", select).split(",") if f.strip()]
        row: dict[str, Any] = {"attributes": {"type": sobject}, **{f: record.get(f) for f in plain}}
        for child_fields, relation in children:
            names = [f.strip() for f in child_fields.split(",")]
            kids = [{"attributes": {"type": "OrderItem"}, **{f: kid.get(f) for f in names}}
                    for kid in self.records.get("OrderItem", {}).values() if kid.get("OrderId") == record_id]
            row[relation] = {"totalSize": len(kids), "done": True, "records": kids} if kids else None
        return {"totalSize": 1, "done": True, "records": [row]}
