"""Salesforce outbound messages: SOAP 1.1 notifications pushed by a flow or workflow rule.

Salesforce POSTs ``<notifications xmlns="http://soap.sforce.com/2005/09/outbound">`` holding the org id, the
action id, a session id (when "Send Session ID" is ticked: a live credential, dropped here and never stored)
and 1..100 ``Notification`` elements, each with an ``Id`` and one ``sObject``. It keeps resending until it
receives ``<notificationsResponse><Ack>true</Ack></notificationsResponse>``; there is no signature, so the
organisation id is checked against the configured one (and the endpoint should be HTTPS, ideally with a
secret path segment and Salesforce's client certificate).

XML is parsed with defusedxml: no DTDs, no entity expansion, no network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from xml.etree.ElementTree import Element

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from bus.errors import WebhookRejected

__all__ = ["ACK", "OUTBOUND_NS", "fault", "parse_notifications"]

SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
OUTBOUND_NS = "http://soap.sforce.com/2005/09/outbound"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
MAX_BODY = 2 * 1024 * 1024  # 100 notifications of a wide object stay far below this
_O = f"{{{OUTBOUND_NS}}}"

ACK = (b'<?xml version="1.0" encoding="UTF-8"?>'
       b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>'
       b'<notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound"><Ack>true</Ack>'
       b'</notificationsResponse></soapenv:Body></soapenv:Envelope>')


def fault(reason: str, detail: str) -> bytes:
    """A SOAP 1.1 Fault for a refused notification (Salesforce shows the faultstring in its delivery log)."""
    code = "soapenv:Client" if reason != "unavailable" else "soapenv:Server"
    text = (detail or reason).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return ('<?xml version="1.0" encoding="UTF-8"?>'
            '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>'
            f'<soapenv:Fault><faultcode>{code}</faultcode><faultstring>{text}</faultstring></soapenv:Fault>'
            '</soapenv:Body></soapenv:Envelope>').encode()


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _text(parent: Element, name: str) -> str | None:
    node = parent.find(_O + name)
    return node.text.strip() if node is not None and node.text else None


#: sObject fields nest at most a few levels (an address, a related record); deeper is not a notification.
MAX_DEPTH = 8


def _value(node: Element, depth: int = 1) -> Any:
    if node.get(f"{{{XSI_NS}}}nil") == "true":
        return None
    children = list(node)
    if children:  # a compound field (address) or a related record
        if depth >= MAX_DEPTH:
            raise WebhookRejected(f"sObject field <{_local(node.tag)}> nests deeper than {MAX_DEPTH} levels",
                                  status=400, reason="too_deep")
        return {_local(child.tag): _value(child, depth + 1) for child in children}
    return node.text or ""


def _same_org(given: str, expected: str) -> bool:
    # A 15-character id is the case-sensitive prefix of its 18-character form.
    return len(given) >= 15 and len(expected) >= 15 and given[:15] == expected[:15]


def parse_notifications(body: bytes, organization_id: str, action_ids: Sequence[str] = ()) -> list[dict[str, Any]]:
    """One payload per ``Notification``; raises WebhookRejected (4xx) for anything that is not a notification
    of the configured org."""
    if len(body) > MAX_BODY:
        raise WebhookRejected(f"outbound message larger than {MAX_BODY} bytes", status=413, reason="too_large")
    try:
        root = SafeET.fromstring(body)
    except DefusedXmlException:
        raise WebhookRejected("outbound message: DTDs and entities are not accepted", status=400,
                              reason="forbidden_xml") from None
    except SafeET.ParseError as exc:
        raise WebhookRejected(f"outbound message is not well-formed XML: {exc}", status=400,
                              reason="malformed_body") from None
    if root.tag != f"{{{SOAP_NS}}}Envelope":
        raise WebhookRejected(f"expected a SOAP 1.1 Envelope, got <{_local(root.tag)}>", status=400,
                              reason="not_soap")
    notifications = root.find(f"{{{SOAP_NS}}}Body/{_O}notifications")
    if notifications is None:
        raise WebhookRejected("SOAP Body holds no <notifications> of namespace " + OUTBOUND_NS, status=400,
                              reason="not_outbound_message")
    org = _text(notifications, "OrganizationId") or ""
    if not _same_org(org, organization_id):
        raise WebhookRejected("outbound message from another organisation (OrganizationId does not match "
                              "settings organization_id)", status=403, reason="wrong_org")
    action = _text(notifications, "ActionId") or ""
    if action_ids and not any(_same_org(action, allowed) for allowed in action_ids):
        raise WebhookRejected("outbound message from an action not listed in outbound_messages.action_ids",
                              status=403, reason="wrong_action")
    payloads: list[dict[str, Any]] = []
    for index, note in enumerate(notifications.findall(_O + "Notification"), start=1):
        note_id = _text(note, "Id")
        sobject = note.find(_O + "sObject")
        if not note_id or sobject is None:
            raise WebhookRejected(f"Notification {index}: needs <Id> and <sObject>", status=400,
                                  reason="malformed_notification")
        kind = (sobject.get(f"{{{XSI_NS}}}type") or "").rpartition(":")[2]
        fields = {_local(child.tag): _value(child) for child in sobject}
        payloads.append({"notification_id": note_id, "organization_id": org, "action_id": action,
                         "sobject_type": kind, "record": fields})
    if not payloads:
        raise WebhookRejected("outbound message holds no Notification", status=400, reason="empty")
    return payloads


def key_of(payload: Mapping[str, Any]) -> str | None:
    record = payload.get("record")
    value = record.get("Id") if isinstance(record, Mapping) else None
    return str(value) if value else None
