"""The email adapter against a real SMTP server (aiosmtpd, in-process on 127.0.0.1)."""

from __future__ import annotations

import email
import email.policy
import socket
import ssl
import threading
from collections.abc import Callable, Iterator, Mapping
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from adapters.base import Adapter
from adapters.email import EmailAdapter, message_id
from adapters.templates import Template, cached_template
from bus.errors import ConfigError, PermanentError, TransientError
from bus.testing import AdapterContract, make_call

# The auth test server allows AUTH without TLS (no certificates in a unit test); aiosmtpd warns about that.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Recorder:
    """Accepts mail; recipients starting with 'busy' get 451, 'nobody' get 550."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], EmailMessage]] = []
        self.lock = threading.Lock()

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address.startswith("busy"):
            return "451 4.3.0 mailbox busy, try again later"
        if address.startswith("nobody"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        with self.lock:
            self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), parsed))
        return "250 Message accepted"

    def last(self) -> EmailMessage:
        with self.lock:
            return self.messages[-1][2]


class Smtp:
    def __init__(self, recorder: Recorder, port: int) -> None:
        self.recorder = recorder
        self.port = port


@pytest.fixture(scope="module")
def smtp() -> Iterator[Smtp]:
    recorder = Recorder()
    port = free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield Smtp(recorder, port)
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def smtp_auth() -> Iterator[Smtp]:
    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and data.login == b"bus" and data.password == b"s3cret"
        return AuthResult(success=ok, handled=False)

    recorder = Recorder()
    port = free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=port, authenticator=authenticator,
                            auth_required=True, auth_require_tls=False)
    controller.start()
    try:
        yield Smtp(recorder, port)
    finally:
        controller.stop()


def settings_for(smtp: Smtp, **extra: Any) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": smtp.port, "security": "none", "from": "Orders <orders@ironbus.test>",
            "timeout": 5, **extra}


class TestEmailContract(AdapterContract):
    @pytest.fixture
    def adapter_factory(self) -> Callable[[Mapping[str, Any]], Adapter]:
        return lambda settings: EmailAdapter("mail", settings)

    @pytest.fixture
    def good_settings(self, smtp: Smtp) -> Mapping[str, Any]:
        self.smtp = smtp
        return settings_for(smtp)

    def junk_settings(self, good_settings: Mapping[str, Any]) -> list[Any]:
        return [{"host": "x"}, {**good_settings, "security": "tls1"}, {**good_settings, "port": "25"}]

    def arrange_success(self, adapter: Adapter) -> tuple[str, Any]:
        return "send", {"to": ["buyer@example.com"], "subject": "Order SO-1", "body": "Confirmed."}

    def arrange_transient(self, adapter: Adapter) -> tuple[str, Any]:
        return "send", {"to": ["busy@example.com"], "subject": "s", "body": "b"}

    def arrange_permanent(self, adapter: Adapter) -> tuple[str, Any]:
        return "send", {"to": ["nobody@example.com"], "subject": "s", "body": "b"}

    def observed_idempotency_key(self, adapter: Adapter) -> str | None:
        received = self.smtp.recorder.last()
        key = received["X-Ironbus-Idempotency-Key"]
        assert received["Message-ID"] == message_id(key, "ironbus.test")
        return str(key)


def test_message_arrives_with_all_fields(smtp: Smtp) -> None:
    adapter = EmailAdapter("mail", settings_for(smtp, reply_to="support@ironbus.test"))
    payload = {"to": ["a@example.com", "b@example.com"], "cc": "c@example.com", "subject": "Your order SO-9",
               "body": "Plain text", "html": "<p>HTML</p>"}
    outcome = adapter.call("send", make_call(payload, idempotency_key="evt-9:notify.send"))
    mail_from, rcpts, received = smtp.recorder.messages[-1]
    assert mail_from == "orders@ironbus.test"
    assert sorted(rcpts) == ["a@example.com", "b@example.com", "c@example.com"]
    assert received["Subject"] == "Your order SO-9"
    assert received["Reply-To"] == "support@ironbus.test"
    assert received.get_body(("plain",)).get_content().strip() == "Plain text"  # type: ignore[union-attr]
    assert received.get_body(("html",)).get_content().strip() == "<p>HTML</p>"  # type: ignore[union-attr]
    assert outcome.reference == received["Message-ID"]
    assert outcome.result["accepted"] == ["a@example.com", "b@example.com", "c@example.com"]


def test_resend_has_the_same_message_id(smtp: Smtp) -> None:
    adapter = EmailAdapter("mail", settings_for(smtp))
    payload = {"to": "x@example.com", "subject": "s", "body": "b"}
    first = adapter.call("send", make_call(payload, idempotency_key="evt-1:t")).reference
    second = adapter.call("send", make_call(payload, idempotency_key="evt-1:t")).reference
    other = adapter.call("send", make_call(payload, idempotency_key="evt-2:t")).reference
    assert first == second != other


def test_named_template_renders_from_the_payload_and_escapes_html(smtp: Smtp) -> None:
    templates = {"changed": {
        "to": "{{ customer.emails }}",
        "subject": "Order {{ order_id }}: new date {{ promised_date }}",
        "body": "Dear {{ customer.name || 'customer' }}, {{ length(lines) }} lines moved.",
        "html": "<p style=\"x{}\">Dear {{ customer.name }}</p>",
    }}
    adapter = EmailAdapter("mail", settings_for(smtp, templates=templates))
    payload = {"order_id": "SO-7", "promised_date": "2026-12-01", "lines": [1, 2],
               "customer": {"name": "<Ann & Co>", "emails": ["ann@example.com", "ops@example.com"]}}
    adapter.call("send", make_call(payload, args={"template": "changed"}))
    _, rcpts, received = smtp.recorder.messages[-1]
    assert rcpts == ["ann@example.com", "ops@example.com"]
    assert received["Subject"] == "Order SO-7: new date 2026-12-01"
    assert "Dear <Ann & Co>, 2 lines moved." in received.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html_part = received.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "Dear &lt;Ann &amp; Co&gt;" in html_part and 'style="x{}"' in html_part


def test_inline_template_in_route_args(smtp: Smtp) -> None:
    adapter = EmailAdapter("mail", settings_for(smtp))
    adapter.call("send", make_call({"id": 5}, args={"to": ["ops@example.com"], "subject": "Issue {{ id }}",
                                                    "body": "see {{ id }}"}))
    assert smtp.recorder.last()["Subject"] == "Issue 5"


def test_inline_templates_share_the_compiled_template_cache() -> None:
    # Given two systems whose routes pass the same inline message in args
    args = {"to": ["ops@example.com", "{{ owner }}"], "subject": "Issue {{ id }}", "body": "see {{ id }}"}
    first = EmailAdapter("mail", {"host": "h", "from": "a@b.test"})
    second = EmailAdapter("mail2", {"host": "h", "from": "a@b.test"})
    # When each builds its message template
    one = first._template_for(make_call({}, route="r", args=args))
    two = second._template_for(make_call({}, route="r", args=args))
    # Then the templates are the shared compiled ones, not a copy per adapter
    assert one["subject"][0] is two["subject"][0] is cached_template("Issue {{ id }}", "route 'r' args.subject")
    assert one["to"][1] is cached_template("{{ owner }}", "route 'r' args.to")
    # and a broken inline template is still a permanent error naming the route's args
    with pytest.raises(PermanentError, match=r"route 'r' args.subject"):
        first._template_for(make_call({}, route="r", args={"subject": "{{ a[ }}"}))


def test_missing_template_field_is_permanent_and_names_it(smtp: Smtp) -> None:
    adapter = EmailAdapter("mail", settings_for(smtp))
    with pytest.raises(PermanentError, match=r"\{\{ customer.email \}\} is null or missing"):
        adapter.call("send", make_call({}, args={"to": "{{ customer.email }}", "subject": "s", "body": "b"}))
    with pytest.raises(PermanentError, match="not defined"):
        adapter.call("send", make_call({}, args={"template": "nope"}))
    with pytest.raises(PermanentError, match="not an email address"):
        adapter.call("send", make_call({"to": "not-an-address", "subject": "s", "body": "b"}))


def test_bad_template_in_settings_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"templates.t.subject"):
        EmailAdapter("mail", {"host": "h", "from": "a@b", "templates": {"t": {"subject": "{{ a[ }}"}}})


def test_authentication(smtp_auth: Smtp) -> None:
    payload = {"to": "a@example.com", "subject": "s", "body": "b"}
    good = EmailAdapter("mail", settings_for(smtp_auth, username="bus", password="s3cret"))
    good.call("send", make_call(payload))
    assert len(smtp_auth.recorder.messages) == 1
    bad = EmailAdapter("mail", settings_for(smtp_auth, username="bus", password="wrong"))
    with pytest.raises(PermanentError, match="535"):
        bad.call("send", make_call(payload))
    anonymous = EmailAdapter("mail", settings_for(smtp_auth))
    with pytest.raises(PermanentError, match="530"):
        anonymous.call("send", make_call(payload))


def test_starttls_against_a_relay_without_it_is_permanent(smtp: Smtp) -> None:
    adapter = EmailAdapter("mail", settings_for(smtp, security="starttls"))
    with pytest.raises(PermanentError, match="does not support"):
        adapter.call("send", make_call({"to": "a@example.com", "subject": "s", "body": "b"}))


def test_connection_refused_is_transient_and_health_says_so() -> None:
    adapter = EmailAdapter("mail", {"host": "127.0.0.1", "port": free_port(), "security": "none",
                                    "from": "a@ironbus.test", "timeout": 2})
    with pytest.raises(TransientError):
        adapter.call("send", make_call({"to": "a@example.com", "subject": "s", "body": "b"}))
    assert not adapter.health().ok


def test_health_ok(smtp: Smtp) -> None:
    assert EmailAdapter("mail", settings_for(smtp)).health().ok


def test_text_template_single_placeholder_keeps_the_raw_value() -> None:
    assert Template("{{ a }}").render_value({"a": [1, 2]}) == [1, 2]
    assert Template("n={{ a }}").render_value({"a": [1, 2]}) == "n=1, 2"
    assert Template("{ literal }").render({}) == "{ literal }"


# -- TLS: STARTTLS and implicit TLS against a relay with a self-signed certificate ---------------------------

@pytest.fixture(scope="module", params=["starttls", "ssl"])
def tls_smtp(request: pytest.FixtureRequest, tls_cert: tuple[Path, Path]) -> Iterator[tuple[str, Smtp, Path]]:
    cert, key = tls_cert
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    recorder = Recorder()
    port = free_port()
    if request.param == "starttls":
        controller = Controller(recorder, hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True)
    else:
        controller = Controller(recorder, hostname="127.0.0.1", port=port, ssl_context=context)
    controller.start()
    try:
        yield request.param, Smtp(recorder, port), cert
    finally:
        controller.stop()


def test_tls_relay_with_its_ca_trusted(tls_smtp: tuple[str, Smtp, Path]) -> None:
    security, server, cert = tls_smtp
    adapter = EmailAdapter("mail", settings_for(server, security=security, ca_file=str(cert)))
    adapter.call("send", make_call({"to": "a@example.com", "subject": f"over {security}", "body": "b"}))
    assert server.recorder.last()["Subject"] == f"over {security}"


def test_tls_relay_with_an_untrusted_certificate_is_refused(tls_smtp: tuple[str, Smtp, Path]) -> None:
    security, server, _ = tls_smtp
    adapter = EmailAdapter("mail", settings_for(server, security=security))
    before = len(server.recorder.messages)
    with pytest.raises(TransientError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        adapter.call("send", make_call({"to": "a@example.com", "subject": "s", "body": "b"}))
    assert len(server.recorder.messages) == before
    unverified = EmailAdapter("mail", settings_for(server, security=security, verify_tls=False))
    unverified.call("send", make_call({"to": "a@example.com", "subject": "s", "body": "b"}))
    assert len(server.recorder.messages) == before + 1
