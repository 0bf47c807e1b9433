"""Poll triggers declared in the http adapter's settings, against a real local JSON API whose records change
between polls: watermarks from a field, a header or a cursor; offset, page, cursor and next-link paging."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from adapters.base import Adapter
from adapters.http import HttpAdapter
from bus.errors import ConfigError, PermanentError
from bus.testing import AdapterContract
from bus.triggers import MemoryWatermarkStore, TriggerPlan, TriggerRunner


class Api:
    """``GET /items?updated_since=&offset=&limit=&page=&per_page=&cursor=`` over records sorted by
    (updated_at, id); ``updated_since`` is inclusive, as the docs advise."""

    def __init__(self) -> None:
        self.items: dict[int, dict[str, Any]] = {}
        self.clock = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        self.lock = threading.Lock()
        self.calls: list[str] = []
        self.keys: list[str] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                api.calls.append(self.path)
                api.keys.append(self.headers.get("Idempotency-Key", ""))
                status, body, headers = api.answer(self.path)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def put(self, n: int, name: str) -> None:
        with self.lock:
            self.clock += dt.timedelta(seconds=1)
            self.items[n] = {"id": n, "name": name, "updated_at": self.clock.isoformat().replace("+00:00", "Z")}

    def answer(self, path: str) -> tuple[int, Any, dict[str, str]]:
        parts = urlsplit(path)
        if parts.path.startswith("/status/"):  # for the contract suite: a transient and a permanent failure
            code = int(parts.path.rsplit("/", 1)[1])
            return code, {"error": f"status {code} on purpose"}, {}
        q = {k: v[0] for k, v in parse_qs(parts.query).items()}
        with self.lock:
            rows = sorted(self.items.values(), key=lambda r: (r["updated_at"], r["id"]))
            now = self.clock.isoformat().replace("+00:00", "Z")
        if "updated_since" in q:
            rows = [r for r in rows if r["updated_at"] >= q["updated_since"]]
        if "sync" in q:  # an opaque cursor API: the token is the position in the change log
            rows = [r for r in rows if r["updated_at"] > q["sync"]]
        limit = int(q.get("limit") or q.get("per_page") or 1000)
        start = int(q.get("offset", 0)) if "offset" in q else (int(q["page"]) - 1) * limit if "page" in q else \
            int(q.get("cursor", 0))
        page = rows[start:start + limit]
        more = start + limit < len(rows)
        body: dict[str, Any] = {"data": page, "meta": {"next_cursor": str(start + limit) if more else None,
                                                       "sync_token": now}}
        headers = {"X-Server-Time": now}
        if more:
            body["links"] = {"next": f"{self.url}{parts.path}?{_with(q, cursor=str(start + limit))}"}
            headers["Link"] = f'<{body["links"]["next"]}>; rel="next"'
        return 200, body, headers


def _with(q: dict[str, str], **extra: str) -> str:
    from urllib.parse import urlencode
    return urlencode({**q, **extra})


@pytest.fixture
def api() -> Iterator[Api]:
    server = Api()
    yield server
    server.server.shutdown()
    server.server.server_close()


def settings(api: Api, **poll: Any) -> dict[str, Any]:
    spec = {"path": "/items", "records": "data", "key": "id", "watermark": {"field": "updated_at"},
            "query": {"updated_since": "{{ watermark }}"}, **poll}
    return {"base_url": api.url, "polls": {"items_changed": spec}}


def run_restarting(api: Api, doc: dict[str, Any], store: MemoryWatermarkStore, seen: list[Any]) -> int:
    adapter = HttpAdapter("crm", doc)  # a fresh process each time: only the store survives
    plan = TriggerPlan("crm", "items_changed")
    try:
        runner = TriggerRunner({"crm": adapter}, [plan], store,
                               lambda events: seen.extend((e.data["id"], e.data["name"]) for e in events))
        return runner.run_once(plan)
    finally:
        adapter.close()


@pytest.mark.parametrize("paging", [
    {"type": "cursor", "param": "cursor", "next": "meta.next_cursor", "size_param": "limit", "size": 2},
    {"type": "offset", "param": "offset", "size_param": "limit", "size": 2},
    {"type": "page", "param": "page", "size_param": "per_page", "size": 2},
    {"type": "next_link", "next": "links.next", "size_param": "limit", "size": 2},
    {"type": "next_link", "link_header": True, "size_param": "limit", "size": 2},
])
def test_poll_resumes_after_restart_without_gaps_or_repeats(api: Api, paging: dict[str, Any]) -> None:
    for n in range(1, 6):
        api.put(n, f"v1-{n}")
    store = MemoryWatermarkStore()
    seen: list[Any] = []
    doc = settings(api, paging=paging)
    assert run_restarting(api, doc, store, seen) == 5
    assert run_restarting(api, doc, store, seen) == 0, "a restart with nothing new emits nothing"
    api.put(2, "v2-2")
    api.put(6, "v1-6")
    api.put(7, "v1-7")
    assert run_restarting(api, doc, store, seen) == 3
    assert sorted(seen) == sorted([(n, f"v1-{n}") for n in range(1, 8)] + [(2, "v2-2")])
    assert len(api.calls) > 3, "several pages were read"


def test_header_and_cursor_watermarks(api: Api) -> None:
    for n in range(1, 4):
        api.put(n, "a")
    store = MemoryWatermarkStore()
    seen: list[Any] = []
    by_header = settings(api, watermark={"header": "X-Server-Time"}, version="updated_at")
    assert run_restarting(api, by_header, store, seen) == 3
    assert store.get_watermark("crm", "items_changed") == "2026-01-01T00:00:03Z"
    by_cursor = {"base_url": api.url, "polls": {"items_changed": {
        "path": "/items", "records": "data", "key": "id", "version": "updated_at",
        "watermark": {"cursor": "meta.sync_token", "initial": "2026-01-01T00:00:01Z"},
        "query": {"sync": "{{ watermark }}"}}}}
    other: list[Any] = []
    fresh = MemoryWatermarkStore()
    assert run_restarting(api, by_cursor, fresh, other) == 2, "initial: only what came after it"
    api.put(9, "b")
    assert run_restarting(api, by_cursor, fresh, other) == 1 and other[-1] == (9, "b")


def test_settings_are_checked(api: Api) -> None:
    with pytest.raises(ConfigError, match="paging"):
        HttpAdapter("crm", settings(api, paging={"type": "cursor", "param": "c"}))
    with pytest.raises(ConfigError, match="records"):
        HttpAdapter("crm", settings(api, records="data[?"))
    with pytest.raises(ConfigError):
        HttpAdapter("crm", {"base_url": api.url, "polls": {"x": {"path": "/items", "records": "data"}}})
    adapter = HttpAdapter("crm", settings(api))
    assert set(HttpAdapter.declared_triggers(adapter.settings)) == {"items_changed"}
    assert HttpAdapter.declared_triggers(adapter.settings)["items_changed"].kind == "poll"
    adapter.close()


def test_records_that_are_not_a_list_are_a_permanent_error(api: Api) -> None:
    api.put(1, "a")
    adapter = HttpAdapter("crm", settings(api, records="meta"))
    try:
        with pytest.raises(PermanentError, match="not a list"):
            adapter.poll("items_changed", None)
    finally:
        adapter.close()


class TestHttpPollContract(AdapterContract):
    """The contract suite for an http system that polls (and reads through an operation)."""

    @pytest.fixture
    def adapter_factory(self, api: Api) -> Any:
        self.api = api
        api.put(1, "first")
        return lambda doc: HttpAdapter("crm", doc)

    @pytest.fixture
    def good_settings(self, api: Api) -> dict[str, Any]:
        doc = settings(api, paging={"type": "offset", "param": "offset", "size_param": "limit", "size": 10})
        doc["operations"] = {"list": {"method": "GET", "path": "/items"},
                             "flaky": {"method": "GET", "path": "/status/503"},
                             "broken": {"method": "GET", "path": "/status/400"}}
        return doc

    def junk_settings(self, good_settings: dict[str, Any]) -> list[Any]:
        polls = good_settings["polls"]["items_changed"]
        return [{**good_settings, "polls": {"items_changed": {**polls, "paging": {"type": "sideways"}}}},
                {**good_settings, "polls": {"items_changed": {k: v for k, v in polls.items() if k != "records"}}},
                {"base_url": good_settings["base_url"]}]

    def arrange_success(self, adapter: Adapter) -> tuple[str, Any]:
        return "list", {}

    def arrange_transient(self, adapter: Adapter) -> tuple[str, Any]:
        return "flaky", {}

    def arrange_permanent(self, adapter: Adapter) -> tuple[str, Any]:
        return "broken", {}

    def observed_idempotency_key(self, adapter: Adapter) -> str | None:
        return self.api.keys[-1]

    def arrange_poll(self, adapter: Adapter) -> str:
        return "items_changed"


def test_lint_knows_the_declared_polls(tmp_path: Any) -> None:
    from bus.lint import lint

    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "version: 1\n"
        "systems:\n"
        "  api:\n"
        "    adapter: http\n"
        "    settings:\n"
        "      base_url: http://127.0.0.1:9\n"
        "      polls: {items_changed: {path: /items, records: data, watermark: {field: updated_at}}}\n"
        "  sink: {adapter: stub}\n"
        "routes:\n"
        "  - {name: good, from: api.items_changed, to: [sink.take]}\n"
        "  - {name: typo, from: api.itemz_changed, to: [sink.take]}\n")
    issues = [str(i) for i in lint(routes)]
    assert len(issues) == 1 and "itemz_changed" in issues[0] and "items_changed" in issues[0], issues
