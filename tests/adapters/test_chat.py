"""The chat webhook adapter against a real local HTTP server."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from adapters.base import Adapter
from adapters.chat import ChatWebhookAdapter
from bus.errors import PermanentError, TransientError
from bus.testing import AdapterContract, make_call


class Hook:
    """A webhook endpoint: /ok answers 200, /busy 503, /slow 429 with Retry-After, /gone 410."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], Any]] = []
        self.lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with hook.lock:
                    hook.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()},
                                          json.loads(body)))
                status, extra = {"/ok": (200, {}), "/busy": (503, {}), "/slow": (429, {"Retry-After": "7"}),
                                 "/gone": (410, {})}.get(self.path, (404, {}))
                reply = b"ok" if status == 200 else b"no_service: webhook disabled"
                self.send_response(status)
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def do_HEAD(self) -> None:
                self.send_response(405)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def last(self) -> tuple[str, dict[str, str], Any]:
        with self.lock:
            return self.requests[-1]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def hook() -> Iterator[Hook]:
    server = Hook()
    yield server
    server.stop()


class TestChatContract(AdapterContract):
    @pytest.fixture
    def adapter_factory(self) -> Callable[[Mapping[str, Any]], Adapter]:
        return lambda settings: ChatWebhookAdapter("chat", settings)

    @pytest.fixture
    def good_settings(self, hook: Hook) -> Mapping[str, Any]:
        self.hook = hook
        return {"url": f"{hook.url}/ok", "style": "slack", "timeout": 5}

    def junk_settings(self, good_settings: Mapping[str, Any]) -> list[Any]:
        return [{"style": "slack"}, {**good_settings, "style": "discord"}, {"url": "ftp://x"}]

    def arrange_success(self, adapter: Adapter) -> tuple[str, Any]:
        return "post", {"text": "Order SO-1 confirmed"}

    def arrange_transient(self, adapter: Adapter) -> tuple[str, Any]:
        assert isinstance(adapter, ChatWebhookAdapter)
        adapter.url = f"{self.hook.url}/busy"
        return "post", {"text": "x"}

    def arrange_permanent(self, adapter: Adapter) -> tuple[str, Any]:
        assert isinstance(adapter, ChatWebhookAdapter)
        adapter.url = f"{self.hook.url}/gone"
        return "post", {"text": "x"}

    def observed_idempotency_key(self, adapter: Adapter) -> str | None:
        return self.hook.last()[1]["idempotency-key"]


def test_slack_body(hook: Hook) -> None:
    adapter = ChatWebhookAdapter("chat", {"url": f"{hook.url}/ok"})
    outcome = adapter.call("post", make_call({"text": "Order SO-1 moved", "title": "Supplier issue"}))
    assert hook.last()[2] == {"text": "*Supplier issue*\nOrder SO-1 moved"}
    assert outcome.result["status"] == 200
    adapter.close()


def test_teams_adaptive_card_from_a_settings_template(hook: Hook) -> None:
    adapter = ChatWebhookAdapter("chat", {"url": f"{hook.url}/ok", "style": "teams",
                                          "title": "Order {{ order_id }}", "text": "New date {{ date }}"})
    adapter.call("post", make_call({"order_id": "SO-2", "date": "2026-12-01"}))
    body = hook.last()[2]
    content = body["attachments"][0]["content"]
    assert body["type"] == "message" and content["type"] == "AdaptiveCard"
    assert [b["text"] for b in content["body"]] == ["Order SO-2", "New date 2026-12-01"]
    adapter.close()


def test_teams_legacy_message_card_from_route_args(hook: Hook) -> None:
    adapter = ChatWebhookAdapter("chat", {"url": f"{hook.url}/ok", "style": "teams_legacy"})
    adapter.call("post", make_call({"n": 3}, args={"text": "{{ n }} orders late"}))
    body = hook.last()[2]
    assert body["@type"] == "MessageCard" and body["text"] == "3 orders late" and body["summary"] == "3 orders late"
    adapter.close()


def test_429_is_transient_with_retry_after(hook: Hook) -> None:
    adapter = ChatWebhookAdapter("chat", {"url": f"{hook.url}/slow"})
    with pytest.raises(TransientError) as info:
        adapter.call("post", make_call({"text": "x"}))
    assert info.value.retry_after == 7.0
    adapter.close()


def test_error_message_carries_the_answer_but_not_the_secret_url(hook: Hook) -> None:
    adapter = ChatWebhookAdapter("chat", {"url": f"{hook.url}/gone"})
    with pytest.raises(PermanentError) as info:
        adapter.call("post", make_call({"text": "x"}))
    assert "410" in str(info.value) and "no_service" in str(info.value)
    assert "/gone" not in str(info.value)
    adapter.close()


def test_missing_text_is_permanent(hook: Hook) -> None:
    adapter = ChatWebhookAdapter("chat", {"url": f"{hook.url}/ok"})
    with pytest.raises(PermanentError, match="no 'text'"):
        adapter.call("post", make_call({"other": 1}))
    with pytest.raises(PermanentError, match="null or missing"):
        adapter.call("post", make_call({}, args={"text": "{{ missing }}"}))
    adapter.close()


def test_unreachable_is_transient_and_unhealthy() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    adapter = ChatWebhookAdapter("chat", {"url": f"http://127.0.0.1:{port}/x", "timeout": 2})
    with pytest.raises(TransientError, match="unreachable"):
        adapter.call("post", make_call({"text": "x"}))
    assert not adapter.health().ok
    adapter.close()
