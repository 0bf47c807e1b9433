"""A local Dataverse Web API for tests: an Entra ID token endpoint and the OData v4 endpoints the dynamics
adapter uses (rows, alternate-key upserts with If-Match / If-None-Match, $batch with change sets, change
tracking with next/delta links and $deletedEntity), answering as Microsoft Learn documents them.

$batch bodies are read with the standard library's MIME parser, independently of the adapter's own builder.
"""

from __future__ import annotations

import email
import email.policy
import json
import re
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

API = "/api/data/v9.2"
KEYS = {"salesorders": "ordernumber", "accounts": "accountnumber", "annotations": "ironbus_key",
        "salesorderdetails": "ironbus_key"}
_ENTITY = re.compile(r"^(\w+)(?:\((.*)\))?$")


def primary(entity_set: str) -> str:
    return (entity_set[:-3] + "y" if entity_set.endswith("ies") else entity_set[:-1]) + "id"


class FakeDataverse:
    def __init__(self) -> None:
        self.tenant, self.client_id, self.client_secret = "contoso.onmicrosoft.com", "app-id-1", "app-secret-1"
        self.tokens: set[str] = set()
        self.token_requests: list[dict[str, str]] = []
        self.rows: dict[str, dict[str, dict[str, Any]]] = {}
        self.deleted: dict[str, list[tuple[int, str]]] = {}
        self.version = 1000
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.throttle: list[str] = []  # error codes to answer 429 with, one per request
        self.cursors: dict[str, list[dict[str, Any]]] = {}
        self.lock = threading.RLock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, headers, body = fake.handle(self.command, self.path, {k.lower(): v for k, v in
                                                                               self.headers.items()}, raw)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PATCH = do_DELETE = _serve  # noqa: N815

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"

    def __enter__(self) -> FakeDataverse:
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.shutdown()
        self.http.server_close()

    def settings(self, **extra: Any) -> dict[str, Any]:
        return {"url": self.url, "tenant_id": self.tenant, "client_id": self.client_id,
                "client_secret": self.client_secret, "token_url": f"{self.url}/{self.tenant}/oauth2/v2.0/token",
                **extra}

    # -- helpers for tests -------------------------------------------------------------------------------
    def put(self, entity_set: str, fields: dict[str, Any]) -> str:
        with self.lock:
            row_id = str(uuid.uuid4())
            self._store(entity_set, row_id, dict(fields))
            return row_id

    def delete(self, entity_set: str, row_id: str) -> None:
        with self.lock:
            self.rows[entity_set].pop(row_id)
            self.version += 1
            self.deleted.setdefault(entity_set, []).append((self.version, row_id))

    def _store(self, entity_set: str, row_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        table = self.rows.setdefault(entity_set, {})
        row = {**table.get(row_id, {}), **fields, primary(entity_set): row_id, "versionnumber": self.version,
               "modifiedon": f"2026-12-07T01:{self.version % 60:02d}:00Z"}
        table[row_id] = row
        return row

    @staticmethod
    def _etag(row: dict[str, Any]) -> str:
        return f'W/"{row["versionnumber"]}"'

    def _represent(self, entity_set: str, row: dict[str, Any], select: list[str] | None = None) -> dict[str, Any]:
        shown = {k: v for k, v in row.items() if not select or k in select or k == primary(entity_set)}
        return {"@odata.context": f"{self.url}{API}/$metadata#{entity_set}/$entity",
                "@odata.etag": self._etag(row), **shown}

    # -- dispatch ----------------------------------------------------------------------------------------
    def handle(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, str], bytes]:
        with self.lock:
            self.requests.append((method, path, headers, raw))
        split = urlsplit(path)
        if split.path == f"/{self.tenant}/oauth2/v2.0/token":
            return self.token({k: v[0] for k, v in parse_qs(raw.decode()).items()})
        if headers.get("authorization", "").removeprefix("Bearer ") not in self.tokens:
            return self.error(401, "0x80072560", "The user is not a member of the organization.")
        if headers.get("odata-version") != "4.0" or headers.get("odata-maxversion") != "4.0":
            return self.error(400, "0x0", "OData-Version and OData-MaxVersion 4.0 are expected")
        if self.throttle:
            code = self.throttle.pop(0)
            status, answer_headers, body = self.error(429, code, "Number of requests exceeded the limit of 6000 "
                                                                 "over time window of 300 seconds.")
            return status, {**answer_headers, "Retry-After": "7"}, body
        if split.path == f"{API}/$batch" and method == "POST":
            return self.batch(headers.get("content-type", ""), raw, headers)
        status, answer_headers, doc = self.one(method, split.path.removeprefix(API + "/"), parse_qs(split.query),
                                               headers, raw)
        return status, answer_headers, b"" if doc is None else json.dumps(doc).encode()

    def token(self, form: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        self.token_requests.append(form)
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            return 401, {"Content-Type": "application/json"}, json.dumps(
                {"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."}
            ).encode()
        if form.get("scope") != f"{self.url}/.default" or form.get("grant_type") != "client_credentials":
            return 400, {"Content-Type": "application/json"}, json.dumps({"error": "invalid_scope"}).encode()
        token = uuid.uuid4().hex
        self.tokens.add(token)
        return 200, {"Content-Type": "application/json"}, json.dumps(
            {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token}).encode()

    def error(self, status: int, code: str, message: str) -> tuple[int, dict[str, str], bytes]:
        return status, {"Content-Type": "application/json; odata.metadata=minimal", "OData-Version": "4.0"}, \
            json.dumps({"error": {"code": code, "message": message}}).encode()

    def _err(self, status: int, code: str, message: str) -> tuple[int, dict[str, str], Any]:
        return status, {"Content-Type": "application/json"}, {"error": {"code": code, "message": message}}

    def _find(self, entity_set: str, key: str) -> tuple[str | None, dict[str, Any] | None]:
        table = self.rows.setdefault(entity_set, {})
        if re.fullmatch(r"[0-9a-f-]{36}", key):
            return key, table.get(key)
        pairs = dict(p.split("=", 1) for p in key.split(","))
        wanted = {k: unquote(v).strip("'").replace("''", "'") for k, v in pairs.items()}
        for row_id, row in table.items():
            if all(str(row.get(k)) == v for k, v in wanted.items()):
                return row_id, row
        return None, None

    def one(self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str], raw: bytes,
            ) -> tuple[int, dict[str, str], Any]:
        match = _ENTITY.match(path)
        if not match:
            return self._err(404, "0x80060888", f"Resource not found for the segment '{path}'.")
        entity_set, key = match.group(1), match.group(2)
        if entity_set == "WhoAmI":
            return 200, {}, {"UserId": str(uuid.uuid4())}
        body = json.loads(raw) if raw else {}
        for column in body:
            if "bogus" in column:
                return self._err(400, "0x80060888", f"Could not find a property named '{column}' on type "
                                                    f"'Microsoft.Dynamics.CRM.{entity_set[:-1]}'.")
        represent = "return=representation" in headers.get("prefer", "")
        if method == "GET" and key is None:
            return self.changes(entity_set, query, headers)
        if method == "GET":
            _, row = self._find(entity_set, key)
            if row is None:
                return self._err(404, "0x80040217", f"{entity_set[:-1]} With Id = {key} Does Not Exist")
            select = (query.get("$select") or [""])[0].split(",")
            return 200, {}, self._represent(entity_set, row, [s for s in select if s])
        if method == "POST" and key is None:
            row = self._store(entity_set, str(uuid.uuid4()), body)
            return self._written(201, entity_set, row, represent)
        if method == "PATCH" and key is not None:
            row_id, row = self._find(entity_set, key)
            if_match, if_none = headers.get("if-match"), headers.get("if-none-match")
            if row is None and if_match:
                return self._err(404, "0x80040217", f"{entity_set[:-1]} With Id = {key} Does Not Exist")
            if row is not None and if_none == "*":
                return self._err(412, "0x80040237", "A record with matching key values already exists.")
            if row is not None and if_match not in (None, "*") and if_match != self._etag(row):
                return self._err(412, "0x80060882", "The version of the existing record doesn't match the "
                                                    "RowVersion property provided.")
            if row is None:
                fields = dict(body)
                if not re.fullmatch(r"[0-9a-f-]{36}", key):
                    for pair in key.split(","):
                        column, value = pair.split("=", 1)
                        fields[column] = unquote(value).strip("'").replace("''", "'")
                return self._written(201, entity_set, self._store(entity_set, str(uuid.uuid4()), fields), represent)
            return self._written(200 if represent else 204, entity_set, self._store(entity_set, str(row_id), body),
                                 represent)
        return self._err(405, "0x80060888", f"{method} is not supported here")

    def _written(self, status: int, entity_set: str, row: dict[str, Any], represent: bool,
                 ) -> tuple[int, dict[str, str], Any]:
        entity_id = f"{self.url}{API}/{entity_set}({row[primary(entity_set)]})"
        headers = {"OData-EntityId": entity_id, "OData-Version": "4.0", "ETag": self._etag(row)}
        if represent:
            return status, {**headers, "Content-Type": "application/json"}, self._represent(entity_set, row)
        return 204, headers, None

    def changes(self, entity_set: str, query: dict[str, list[str]], headers: dict[str, str],
                ) -> tuple[int, dict[str, str], Any]:
        select = (query.get("$select") or [""])[0]
        base = f"{self.url}{API}/{entity_set}" + (f"?$select={select}&" if select else "?")
        prefer = headers.get("prefer", "")
        size_match = re.search(r"odata\.maxpagesize=(\d+)", prefer)
        size = int(size_match.group(1)) if size_match else 5000
        if "$skiptoken" in query:
            cursor, _, offset_text = query["$skiptoken"][0].rpartition("-")
            items, upto = self.cursors[cursor], int(cursor.split("_")[1])
            offset = int(offset_text)
        else:
            if "odata.track-changes" not in prefer:
                return self._err(400, "0x0", "this fake only serves change tracking queries")
            since = int(query["$deltatoken"][0].split("!")[0]) if "$deltatoken" in query else 0
            upto = self.version
            columns = [c for c in select.split(",") if c]
            rows = [r for r in self.rows.get(entity_set, {}).values() if since < r["versionnumber"] <= upto]
            items = [{"@odata.etag": self._etag(r), **{k: v for k, v in r.items()
                                                       if not columns or k in columns or k == primary(entity_set)}}
                     for r in sorted(rows, key=lambda r: r["versionnumber"])]
            if since:
                items += [{"@odata.context": f"{self.url}{API}/$metadata#{entity_set}/$deletedEntity",
                           "id": row_id, "reason": "deleted"}
                          for version, row_id in self.deleted.get(entity_set, []) if since < version <= upto]
            cursor = f"c_{upto}_{uuid.uuid4().hex[:8]}"
            self.cursors[cursor] = items
            offset = 0
        page = items[offset:offset + size]
        doc: dict[str, Any] = {"@odata.context": f"{self.url}{API}/$metadata#{entity_set}/$delta", "value": page}
        if offset + size < len(items):
            doc["@odata.nextLink"] = f"{base}$skiptoken={cursor}-{offset + size}"
        else:
            doc["@odata.deltaLink"] = f"{base}$deltatoken={quote(f'{upto}!12/07/2026 01:10:44', safe='')}"
        return 200, {"Content-Type": "application/json", "Preference-Applied": "odata.track-changes"}, doc

    # -- $batch ------------------------------------------------------------------------------------------
    def batch(self, content_type: str, raw: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        message = email.message_from_bytes(f"Content-Type: {content_type}\r\n\r\n".encode() + raw,
                                           policy=email.policy.HTTP)
        outer = f"batchresponse_{uuid.uuid4()}"
        chunks: list[str] = []
        continue_on_error = "odata.continue-on-error" in headers.get("prefer", "")
        stop = False
        for part in message.iter_parts():
            if part.get_content_type() == "multipart/mixed":
                snapshot = json.loads(json.dumps(self.rows))
                answers = [(sub.get("Content-ID"), self._part(sub, headers)) for sub in part.iter_parts()]
                failed = next((a for _, a in answers if a[0] >= 400), None)
                if failed is not None:  # the change set is rolled back; one error answers it
                    self.rows = snapshot
                    chunks.append(f"--{outer}\r\n{self._http_part(None, failed)}")
                    continue
                inner = f"changesetresponse_{uuid.uuid4()}"
                body = "".join(f"--{inner}\r\n{self._http_part(cid, a)}" for cid, a in answers)
                chunks.append(f"--{outer}\r\nContent-Type: multipart/mixed; boundary={inner}\r\n\r\n{body}"
                              f"--{inner}--\r\n")
            else:
                if stop:
                    break
                answer = self._part(part, headers)
                chunks.append(f"--{outer}\r\n{self._http_part(None, answer)}")
                stop = answer[0] >= 400 and not continue_on_error
        body = "".join(chunks) + f"--{outer}--\r\n"
        return 200, {"Content-Type": f"multipart/mixed; boundary={outer}", "OData-Version": "4.0"}, body.encode()

    def _part(self, part: Any, outer_headers: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        assert part.get_content_type() == "application/http", part.get_content_type()
        text = part.get_payload(decode=True).decode()
        head, _, body = text.replace("\r\n", "\n").partition("\n\n")
        request_line, *header_lines = head.split("\n")
        method, url, _ = request_line.split(" ")
        inner = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines if ":" in h)}
        split = urlsplit(url)
        return self.one(method, split.path.removeprefix(API + "/"), parse_qs(split.query),
                        {**outer_headers, **inner}, body.strip().encode())

    @staticmethod
    def _http_part(content_id: str | None, answer: tuple[int, dict[str, str], Any]) -> str:
        status, headers, doc = answer
        lines = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
        if content_id:
            lines.append(f"Content-ID: {content_id}")
        reason = {200: "OK", 201: "Created", 204: "No Content"}.get(status, "Error")
        lines += ["", f"HTTP/1.1 {status} {reason}", *[f"{k}: {v}" for k, v in headers.items()], ""]
        if doc is not None:
            lines.append(json.dumps(doc))
        return "\r\n".join(lines) + "\r\n"
