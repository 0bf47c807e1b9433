"""AS2 interoperability with an S/MIME implementation that is not pyas2lib: the OpenSSL command line (`openssl cms`).

The partner station of test_as2.py runs pyas2lib too, so a mistake both sides make the same way could pass
there. Here OpenSSL decrypts and verifies what we send, builds (signs, encrypts, base64-encodes) what we
receive, checks the signature of our MDN, and the MIC is recomputed by hand from the signed bytes.
Debian's OpenSSL is built without zlib, so compression is covered by test_as2.py only.
"""

from __future__ import annotations

import base64
import email
import hashlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from adapters.as2 import As2Adapter, As2Transport
from adapters.b2b import OutboundDocument
from adapters.b2b.payload import payload_body
from bus.webhooks import endpoints_for
from bus.webhooks.app import WebhookApp
from bus.webhooks.server import WebhookServer
from tests.helpers.as2station import Identity, identity
from tests.helpers.services import skip_or_fail
from tests.helpers.wait import wait_until

DOCUMENT = b"UNB+UNOC:3+SUPPLIER1+ACME+261207:0130+1'UNH+1+ORDRSP:D:96A:UN'BGM+231+PO-4711+29'UNT+3+1'UNZ+1+1'"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | Identity]:
    if shutil.which("openssl") is None:
        skip_or_fail("the openssl command is not installed (Debian package openssl)")
    folder = tmp_path_factory.mktemp("keys")
    acme, supplier = identity("ACME"), identity("SUPPLIER1")
    out: dict[str, Path | Identity] = {"acme": acme, "supplier": supplier}
    for name, text in (("acme.key", acme.key), ("acme.crt", acme.certificate), ("supplier.key", supplier.key),
                       ("supplier.crt", supplier.certificate)):
        (folder / name).write_text(text)
        out[name] = folder / name
    return out


def cms(*args: str | Path, data: bytes | None = None) -> bytes:
    done = subprocess.run(["openssl", "cms", *map(str, args)], input=data, capture_output=True, timeout=30)
    assert done.returncode == 0, f"openssl cms {args[0]} failed: {done.stderr.decode()[-500:]}"
    return done.stdout


def settings(keys: dict[str, Path | Identity], tmp_path: Path,
             url: str = "http://127.0.0.1:9/as2") -> dict[str, object]:
    return {"url": url, "as_from": "ACME", "as_to": "SUPPLIER1", "key": str(keys["acme.key"]),
            "certificate": str(keys["acme.crt"]), "partner_certificate": str(keys["supplier.crt"]),
            "quarantine": str(tmp_path / "quarantine")}


@pytest.fixture
def edge(keys: dict[str, Path | Identity], tmp_path: Path) -> Iterator[tuple[str, list[object]]]:
    adapter = As2Adapter("acme", settings(keys, tmp_path))
    adapter.open()
    events: list[object] = []

    async def ingest(batch: list[object]) -> None:
        events.extend(batch)

    server = WebhookServer(WebhookApp(endpoints_for("acme", adapter), ingest, lambda: (True, "")), "127.0.0.1", 0)
    server.start()
    yield f"{server.url}/hooks/acme/receive", events
    server.stop()
    adapter.close()


def test_what_we_send_opens_and_verifies_with_openssl(keys: dict[str, Path | Identity], tmp_path: Path) -> None:
    block = {k: v for k, v in settings(keys, tmp_path).items() if k != "quarantine"}  # an adapter-only setting
    transport = As2Transport({"kind": "as2", **block})
    message = transport.build(OutboundDocument(DOCUMENT, "ORDERS-4711.edi", "application/edifact", "evt-9:r:t"))
    assert message.headers["Content-Type"].startswith("application/pkcs7-mime")
    signed = cms("-decrypt", "-inform", "DER", "-inkey", keys["supplier.key"], "-recip", keys["supplier.crt"],
                 data=message.content)
    inner = cms("-verify", "-inform", "SMIME", "-CAfile", keys["acme.crt"], data=signed)
    document = email.message_from_bytes(inner)
    assert document.get_content_type() == "application/edifact" and document.get_filename() == "ORDERS-4711.edi"
    assert document.get_payload(decode=True) == DOCUMENT
    # The MIC we would compare the MDN with is the digest of exactly the signed MIME part.
    boundary = email.message_from_bytes(signed).get_boundary()
    assert boundary is not None
    first_part = signed.split(f"--{boundary}".encode())[1][2:-2]
    assert base64.b64encode(hashlib.sha256(first_part).digest()) == message.mic


def openssl_message(keys: dict[str, Path | Identity], tmp_path: Path,
                    entity: bytes) -> tuple[dict[str, str], bytes]:
    """Sign with the supplier's key, encrypt to our certificate (AES-256), base64 transfer encoding: as an AS2
    product built on OpenSSL would."""
    signed = cms("-sign", "-signer", keys["supplier.crt"], "-inkey", keys["supplier.key"], "-md", "sha256",
                 "-binary", "-crlfeol", data=entity)
    encrypted = cms("-encrypt", "-aes-256-cbc", "-binary", "-crlfeol", keys["acme.crt"], data=signed)
    head, body = encrypted.split(b"\r\n\r\n", 1)
    headers = {k: v for k, v in email.message_from_bytes(head + b"\r\n\r\n").items() if k.lower() != "mime-version"}
    headers.update({"AS2-Version": "1.2", "AS2-From": "SUPPLIER1", "AS2-To": "ACME",
                    "Message-ID": "<openssl-1@supplier1.example>", "Disposition-Notification-To": "as2@supplier1",
                    "Disposition-Notification-Options": "signed-receipt-protocol=required, pkcs7-signature; "
                                                        "signed-receipt-micalg=optional, sha256"})
    return headers, body


def test_a_message_built_by_openssl_is_received_and_answered_with_a_verifiable_mdn(
        keys: dict[str, Path | Identity], tmp_path: Path, edge: tuple[str, list[object]]) -> None:
    url, events = edge
    entity = (b'Content-Type: application/edifact\r\nContent-Disposition: attachment; filename="ORDRSP-1.edi"'
              b"\r\n\r\n" + DOCUMENT)
    headers, body = openssl_message(keys, tmp_path, entity)
    response = httpx.post(url, content=body, headers=headers)
    assert response.status_code == 200
    wait_until(lambda: events, 5, "the document's event")
    payload = events[0].data  # type: ignore[attr-defined]
    assert payload_body(payload) == DOCUMENT and payload["filename"] == "ORDRSP-1.edi"
    expected_mic = base64.b64encode(hashlib.sha256(entity).digest()).decode()
    assert payload["as2"]["mic"] == expected_mic
    # Our MDN verifies with our certificate in OpenSSL, and reports that MIC.
    mdn = (f"Content-Type: {response.headers['content-type']}\r\n\r\n").encode() + response.content
    report = cms("-verify", "-inform", "SMIME", "-CAfile", keys["acme.crt"], data=mdn).decode()
    assert "Disposition: automatic-action/MDN-sent-automatically; processed" in report
    assert f"Received-content-MIC: {expected_mic}, sha256" in report
    assert "Original-Message-ID: <openssl-1@supplier1.example>" in report


def test_a_tampered_openssl_message_is_refused(keys: dict[str, Path | Identity], tmp_path: Path,
                                               edge: tuple[str, list[object]]) -> None:
    url, events = edge
    entity = b"Content-Type: application/edifact\r\n\r\n" + DOCUMENT
    signed = cms("-sign", "-signer", keys["supplier.crt"], "-inkey", keys["supplier.key"], "-md", "sha256",
                 "-binary", "-crlfeol", data=entity).replace(b"PO-4711", b"PO-4712")  # changed after signing
    encrypted = cms("-encrypt", "-aes-256-cbc", "-binary", "-crlfeol", keys["acme.crt"], data=signed)
    head, body = encrypted.split(b"\r\n\r\n", 1)
    headers = {k: v for k, v in email.message_from_bytes(head + b"\r\n\r\n").items() if k.lower() != "mime-version"}
    headers.update({"AS2-From": "SUPPLIER1", "AS2-To": "ACME", "Message-ID": "<openssl-2@supplier1.example>",
                    "Disposition-Notification-To": "as2@supplier1"})
    response = httpx.post(url, content=body, headers=headers)
    assert response.status_code == 401
    assert b"authentication-failed" in response.content  # the negative MDN says why
    assert events == []
