"""Email over SMTP: the ``send`` operation (registry name ``email``).

A message is either given whole by the payload (``{to, cc?, subject, body, html?, reply_to?}``) or built
from a template whose ``{{ expression }}`` placeholders are JMESPath on the payload (see
:class:`Template`). The Message-ID is derived from the delivery's idempotency key, so a resent message
(a retry after a lost reply, a replay) carries the same Message-ID and mail clients and archives can
recognise it as the same message.

Errors: connection problems and SMTP 4xx replies are transient; 5xx replies (unknown mailbox, message
rejected, authentication failed) and messages we cannot build are permanent.
"""

from __future__ import annotations

import functools
import hashlib
import smtplib
import ssl
from collections.abc import Callable, Mapping
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any, ClassVar

import structlog

from adapters.base import Adapter, Call, Health, Outcome, operation
from adapters.templates import Template, cached_template, html_escape
from adapters.tls import client_context
from bus.errors import ConfigError, DeliveryError, PermanentError, TransientError

__all__ = ["EmailAdapter"]

log = structlog.get_logger(__name__)

_FIELDS = ("to", "cc", "subject", "body", "html", "reply_to")
_TEMPLATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "to": {"type": ["string", "array"], "items": {"type": "string"},
               "description": "Recipients: addresses or templates; '{{ customer.emails }}' may yield a list."},
        "cc": {"type": ["string", "array"], "items": {"type": "string"}},
        "reply_to": {"type": "string"},
        "subject": {"type": "string"},
        "body": {"type": "string", "description": "Plain-text body."},
        "html": {"type": "string", "description": "HTML alternative; substituted values are HTML-escaped."},
    },
}


def compile_message_template(doc: Mapping[str, Any], where: str,
                             make: Callable[[str, str], Template] = Template) -> dict[str, list[Template]]:
    """Compile the fields of a message template; list fields (to, cc) keep one template per item.

    ``make(text, where)`` compiles one field: :class:`Template` for settings (compiled once with the
    system), :func:`~adapters.templates.cached_template` for route args (they come with every call).
    """
    compiled: dict[str, list[Template]] = {}
    for name in _FIELDS:
        if name not in doc:
            continue
        value = doc[name]
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str) for v in items):
            raise ConfigError(f"{where}.{name}: expected a string or a list of strings, got {value!r}")
        compiled[name] = [make(v, f"{where}.{name}") for v in items]
    return compiled


def _flatten(value: Any) -> list[Any]:
    if isinstance(value, list):
        return [inner for item in value for inner in _flatten(item)]
    return [value]


def _addresses(value: Any, field: str) -> list[str]:
    out: list[str] = []
    for item in _flatten(value):
        for address in (item.split(",") if isinstance(item, str) else [item]):
            if not isinstance(address, str) or "@" not in address:
                raise PermanentError(f"email {field}: {address!r} is not an email address")
            out.append(address.strip())
    return out


def message_id(idempotency_key: str, domain: str) -> str:
    """The Message-ID for a delivery: the same idempotency key always gives the same id."""
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:40]
    return f"<{digest}@{domain}>"


class EmailAdapter(Adapter):
    """Sends email through an SMTP relay (STARTTLS, implicit TLS or plain; authentication optional)."""

    name: ClassVar[str] = "email"
    summary: ClassVar[str] = "Send email through an SMTP relay; message from the payload or a template"
    settings_schema: ClassVar[Mapping[str, Any]] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "required": ["host", "from"],
        "properties": {
            "host": {"type": "string", "minLength": 1, "description": "SMTP relay host name."},
            "port": {"type": "integer", "minimum": 1, "maximum": 65535,
                     "description": "Default 587 for starttls, 465 for ssl, 25 for none."},
            "security": {"enum": ["starttls", "ssl", "none"], "default": "starttls"},
            "verify_tls": {"type": "boolean", "default": True, "description": "Check the relay's certificate."},
            "ca_file": {"type": "string", "description": "PEM bundle of the CA(s) that signed the relay's "
                                                         "certificate (an internal CA); default: the system's."},
            "username": {"type": "string"},
            "password": {"type": "string", "description": "Use ${SMTP_PASSWORD}; never commit it."},
            "from": {"type": "string", "pattern": "@", "description": "Sender, e.g. 'Orders <orders@example.com>'."},
            "reply_to": {"type": "string"},
            "timeout": {"type": "number", "exclusiveMinimum": 0, "default": 30},
            "message_id_domain": {"type": "string", "description": "Right side of Message-IDs (default: sender's)."},
            "templates": {"type": "object", "additionalProperties": _TEMPLATE_SCHEMA,
                          "description": "Named message templates; a route target picks one with args.template."},
        },
    }

    _DEFAULT_PORT: ClassVar[dict[str, int]] = {"starttls": 587, "ssl": 465, "none": 25}

    def __init__(self, system: str, settings: Mapping[str, Any]) -> None:
        super().__init__(system, settings)
        self.host: str = self.settings["host"]
        self.security: str = self.settings.get("security", "starttls")
        self.port: int = int(self.settings.get("port") or self._DEFAULT_PORT[self.security])
        self.timeout = float(self.settings.get("timeout", 30))
        self.sender: str = self.settings["from"]
        self.domain: str = self.settings.get("message_id_domain") or self.sender.rsplit("@", 1)[-1].strip("> ")
        self.templates = {name: compile_message_template(doc, f"systems.{system}.settings.templates.{name}")
                          for name, doc in (self.settings.get("templates") or {}).items()}

    # -- SMTP ---------------------------------------------------------------------------------------------
    @functools.cached_property
    def _tls(self) -> ssl.SSLContext:
        """Built once (it loads the CA store) and shared by every connection: an SSLContext is thread-safe."""
        return client_context(self.settings.get("ca_file"), verify=bool(self.settings.get("verify_tls", True)))

    def _connect(self) -> smtplib.SMTP:
        smtp: smtplib.SMTP
        if self.security == "ssl":
            smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=self._tls)
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        try:
            smtp.ehlo()
            if self.security == "starttls":
                smtp.starttls(context=self._tls)
                smtp.ehlo()
            if self.settings.get("username"):
                smtp.login(self.settings["username"], self.settings.get("password", ""))
        except BaseException:
            smtp.close()
            raise
        return smtp

    def health(self) -> Health:
        try:
            smtp = self._connect()
            try:
                code, _ = smtp.noop()
            finally:
                smtp.close()
        except (OSError, smtplib.SMTPException) as exc:
            return Health(False, f"{self.host}:{self.port}: {exc}")
        return Health(code == 250, f"{self.host}:{self.port} answered {code}")

    # -- building the message -----------------------------------------------------------------------------
    def _template_for(self, call: Call) -> dict[str, list[Template]]:
        chosen = call.args.get("template")
        if isinstance(chosen, str):
            if chosen not in self.templates:
                raise PermanentError(f"email template {chosen!r} is not defined in systems.{self.system}"
                                     f".settings.templates (known: {', '.join(sorted(self.templates)) or 'none'})")
            return self.templates[chosen]
        inline = {k: v for k, v in call.args.items() if k in _FIELDS}
        if not inline:
            return {}
        try:
            return compile_message_template(inline, f"route {call.route!r} args", cached_template)
        except ConfigError as exc:
            raise PermanentError(str(exc)) from None

    def _field(self, name: str, template: dict[str, list[Template]], payload: Any) -> Any:
        if name in template:
            values = [t.render_value(payload) if name in ("to", "cc") else
                      t.render(payload, escape=html_escape if name == "html" else None) for t in template[name]]
            return values if name in ("to", "cc") else values[0]
        return payload.get(name) if isinstance(payload, dict) else None

    def build(self, call: Call) -> EmailMessage:
        """The message a call would send; :class:`PermanentError` when the payload cannot make one."""
        template = self._template_for(call)
        payload = call.payload
        to = self._field("to", template, payload)
        subject = self._field("subject", template, payload)
        body = self._field("body", template, payload)
        if not to:
            raise PermanentError("email: no recipient ('to' missing in the payload and the template)")
        if not isinstance(subject, str) or not subject:
            raise PermanentError("email: 'subject' must be a non-empty string")
        if not isinstance(body, str):
            raise PermanentError("email: 'body' (plain text) must be a string")
        msg = EmailMessage()
        msg["From"] = self.sender
        msg["To"] = ", ".join(_addresses(to, "to"))
        cc = self._field("cc", template, payload)
        if cc:
            msg["Cc"] = ", ".join(_addresses(cc, "cc"))
        reply_to = self._field("reply_to", template, payload) or self.settings.get("reply_to")
        if reply_to:
            msg["Reply-To"] = ", ".join(_addresses(reply_to, "reply_to"))
        msg["Subject"] = subject.replace("\r", " ").replace("\n", " ")
        msg["Date"] = formatdate(localtime=False)
        msg["Message-ID"] = message_id(call.idempotency_key, self.domain)
        msg["X-Ironbus-Idempotency-Key"] = call.idempotency_key
        msg.set_content(body)
        html_body = self._field("html", template, payload)
        if html_body:
            if not isinstance(html_body, str):
                raise PermanentError("email: 'html' must be a string")
            msg.add_alternative(html_body, subtype="html")
        return msg

    # -- the operation ------------------------------------------------------------------------------------
    @operation("send", description="Send one email (to, cc, subject, body, html, reply_to)")
    def send(self, call: Call) -> Outcome:
        msg = self.build(call)
        try:
            smtp = self._connect()
            try:
                refused = smtp.send_message(msg)
            finally:
                try:
                    smtp.quit()
                except (OSError, smtplib.SMTPException):
                    smtp.close()
        except DeliveryError:
            raise
        except Exception as exc:
            raise _translate(exc, f"{self.system}: {self.host}:{self.port}") from None
        recipients = [a.strip() for f in ("To", "Cc") for a in (msg.get(f) or "").split(",") if a.strip()]
        refused_text = {addr: f"{code} {reply.decode(errors='replace')}" for addr, (code, reply) in refused.items()}
        if refused_text:
            # Some recipients were accepted, so resending would duplicate the message to them.
            log.warning("email partly refused", system=self.system, refused=refused_text,
                        event_id=call.event.id, correlation_id=call.event.correlationid)
        log.info("email sent", system=self.system, message_id=msg["Message-ID"], recipients=len(recipients),
                 event_id=call.event.id, correlation_id=call.event.correlationid)
        return Outcome(result={"message_id": msg["Message-ID"],
                               "accepted": [r for r in recipients if r not in refused_text],
                               "refused": refused_text},
                       reference=msg["Message-ID"], detail=f"refused: {refused_text}" if refused_text else "")


def _by_code(code: int, text: str) -> DeliveryError:
    if 400 <= code < 500:
        return TransientError(f"{text} (SMTP {code}, temporary)")
    return PermanentError(f"{text} (SMTP {code})")


def _translate(exc: Exception, where: str) -> DeliveryError:
    """An smtplib / socket exception as the bus's delivery error."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = {addr: code for addr, (code, _) in exc.recipients.items()}
        detail = ", ".join(f"{addr}: {code} {reply.decode(errors='replace')}"
                           for addr, (code, reply) in exc.recipients.items())
        if codes and all(400 <= c < 500 for c in codes.values()):
            return TransientError(f"{where}: recipients temporarily refused: {detail}")
        return PermanentError(f"{where}: recipients refused: {detail}")
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return PermanentError(f"{where}: relay does not support what the settings ask for: {exc}")
    if isinstance(exc, smtplib.SMTPResponseException):
        message = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        return _by_code(exc.smtp_code, f"{where}: {message}")
    if isinstance(exc, smtplib.SMTPServerDisconnected | OSError):
        return TransientError(f"{where}: {type(exc).__name__}: {exc}")
    if isinstance(exc, smtplib.SMTPException):
        return TransientError(f"{where}: {exc}")
    return PermanentError(f"{where}: {type(exc).__name__}: {exc}")
