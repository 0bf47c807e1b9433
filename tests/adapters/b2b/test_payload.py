"""The B2B document payload: what a received document looks like on the bus, and what `send` takes."""

from __future__ import annotations

import base64

import pytest

from adapters.b2b import InboundDocument
from adapters.b2b.payload import document_from_payload, document_payload, payload_body, safe_filename
from bus.errors import PermanentError


def test_text_documents_are_text_and_binary_ones_base64() -> None:
    edi = InboundDocument(body="UNB+UNOC:3+Grüße'".encode(), filename="a.edi", reference="r1",
                          content_type="application/edifact", partner="P")
    payload = document_payload(edi, "sftp", extra=1)
    assert payload["text"] == "UNB+UNOC:3+Grüße'" and "base64" not in payload
    assert payload["size"] == len(edi.body) and payload["transport"] == "sftp" and payload["extra"] == 1
    assert payload_body(payload) == edi.body
    for body in (b"\xff\xfe binary", b"text with a NUL \x00 inside"):
        binary = document_payload(InboundDocument(body=body, filename="b.bin", reference="r2"), "as2")
        assert "text" not in binary and base64.b64decode(binary["base64"]) == body
        assert payload_body(binary) == body


def test_send_payloads_are_checked() -> None:
    doc = document_from_payload({"text": "ISA~", "content_type": "application/edi-x12"}, "evt-1:r:t", "P")
    assert doc.filename == "evt-1_r_t.x12" and doc.body == b"ISA~" and doc.message_id == "evt-1:r:t"
    for bad, why in (({"filename": "a.edi"}, "exactly one"), ({"text": "a", "base64": "YQ=="}, "exactly one"),
                     ({"base64": "***"}, "not valid base64"), ({"text": "a", "filename": "../a"}, "plain file"),
                     ({"text": "a", "filename": ".hidden"}, "plain file"),
                     ({"text": "a", "content_type": "edi"}, "media type"), ("text", "must be an object")):
        with pytest.raises(PermanentError, match=why):
            document_from_payload(bad, "k")


def test_safe_filename_keeps_plain_names_and_strips_paths() -> None:
    assert safe_filename("ORDERS_4711.edi") == "ORDERS_4711.edi"
    assert safe_filename("C:\\out\\po 1.edi") == "po_1.edi"
    assert safe_filename("../../etc/passwd") == "passwd"
    assert safe_filename("...") == "document"
