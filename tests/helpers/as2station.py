"""A second, independent AS2 station for tests: the trading partner's side, driven by pyas2lib directly.

It listens on a free 127.0.0.1 port (``/as2`` receives messages, ``/mdn`` asynchronous MDNs), keeps what it
received, answers with synchronous MDNs or posts asynchronous ones, and sends messages of its own to a URL.
It shares no code with ``adapters/as2`` beyond pyas2lib itself, so a bug in our profile, header or MDN
handling shows up as a failed exchange. Keys and certificates are made per test (RSA 2048, self-signed).
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import ssl
import tempfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from adapters.as2._compat import install

install()  # pyas2lib's oscrypto cannot read this OpenSSL's version without it (see adapters/as2/_compat.py)

from pyas2lib import Mdn, Message, Organization, Partner  # noqa: E402

__all__ = ["As2Station", "Identity", "identity", "tls_server_certificate"]


@dataclass(frozen=True)
class Identity:
    """A throwaway AS2 identity: private key and self-signed certificate, both PEM."""

    name: str
    key: str
    certificate: str

    @property
    def key_and_certificate(self) -> bytes:
        return (self.key + self.certificate).encode()


def identity(name: str, *, days: int = 30) -> Identity:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"{name} test station")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return Identity(name, key_pem, cert.public_bytes(serialization.Encoding.PEM).decode())


def tls_server_certificate() -> tuple[str, str, str]:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it: (CA PEM, certificate PEM, key PEM)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Supplier test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    return (ca.public_bytes(pem).decode(), cert.public_bytes(pem).decode(),
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode())


@dataclass
class Exchange:
    message_id: str
    body: bytes
    filename: str | None
    content_type: str
    signed: bool
    encrypted: bool
    compressed: bool
    status: str
    detail: str | None


@dataclass
class As2Station:
    """The partner. ``me`` is its identity, ``peer`` ours as it knows us (the certificate it trusts for us)."""

    me: Identity
    peer_name: str
    peer_certificate: str
    sign: bool = True
    encrypt: bool = True
    compress: bool = True
    #: knobs that make it misbehave on purpose
    answer_status: int | None = None  # answer every message with this HTTP status and no MDN
    wrong_mic: bool = False  # sign a positive MDN that carries a wrong MIC
    mdn_status: int | None = None  # answer asynchronous MDNs with this HTTP status (and drop them)
    tls: tuple[str, str] | None = None  # (certificate PEM, key PEM): serve HTTPS
    basic_auth: str | None = None  # "user:password" the station demands (401 otherwise)
    received: list[Exchange] = field(default_factory=list)
    mdns: list[tuple[str | None, str | None, str | None]] = field(default_factory=list)  # (orig id, status, detail)
    sent: dict[str, Message] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: set[str] = set()
        station = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return None

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                if station.basic_auth is not None:
                    expected = "Basic " + base64.b64encode(station.basic_auth.encode()).decode()
                    if self.headers.get("authorization") != expected:
                        self.send_response(401)
                        self.send_header("WWW-Authenticate", 'Basic realm="as2"')
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                head = "".join(f"{k}: {v}\r\n" for k, v in self.headers.items()
                               if k.lower() not in ("content-length", "transfer-encoding"))
                raw = head.encode() + b"\r\n" + body
                if self.path == "/mdn":
                    status, headers, answer = station._take_mdn(raw)
                else:
                    status, headers, answer = station._take_message(raw)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if self.tls is not None:
            with tempfile.TemporaryDirectory() as folder:
                chain = Path(folder) / "server.pem"
                chain.write_text(self.tls[0] + self.tls[1])
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                context.load_cert_chain(chain)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    # -- configuration as pyas2lib sees it ------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.server.server_address[1]}"

    def organization(self) -> Organization:
        return Organization(as2_name=self.me.name, sign_key=self.me.key_and_certificate,
                            decrypt_key=self.me.key_and_certificate, mdn_url=f"{self.url}/mdn",
                            domain=self.me.name.lower())

    def partner(self, mdn_mode: str | None = None) -> Partner:
        return Partner(as2_name=self.peer_name, verify_cert=self.peer_certificate.encode(),
                       encrypt_cert=self.peer_certificate.encode(), sign=self.sign, encrypt=self.encrypt,
                       compress=self.compress, enc_alg="aes_256_cbc", digest_alg="sha256", mdn_mode=mdn_mode,
                       mdn_digest_alg="sha256" if mdn_mode else None)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- receiving ---------------------------------------------------------------------------------------------
    def _take_message(self, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        if self.answer_status is not None:
            return self.answer_status, {"Content-Type": "text/plain"}, b"station told to fail"
        message = Message()

        def duplicate(message_id: str, partner_id: str) -> bool:
            with self._lock:
                return message_id in self._seen

        status, (error, _), mdn = message.parse(
            raw, find_org_partner_cb=lambda org, partner: (
                self.organization() if org == self.me.name else None,
                self.partner() if partner == self.peer_name else None),
            find_message_cb=duplicate)
        detail = getattr(error, "disposition_modifier", None) if error is not None else None
        with self._lock:
            if status == "processed":
                self._seen.add(message.message_id)
            self.received.append(Exchange(
                message.message_id, message.content if status == "processed" else b"",
                message.payload.get_filename() if message.payload is not None else None,
                message.payload.get_content_type() if message.payload is not None else "",
                message.signed, message.encrypted, message.compressed, status, detail))
        if mdn is not None and self.wrong_mic and status == "processed":
            message.mic = b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
            mdn = Mdn(mdn_mode=mdn.mdn_mode, mdn_url=mdn.mdn_url, digest_alg=mdn.digest_alg)
            mdn.build(message=message, status="processed")
        if mdn is None:
            return 200, {"Content-Type": "text/plain"}, b""
        headers = {k: str(v) for k, v in mdn.headers.items()}
        if mdn.mdn_mode == "ASYNC":
            url, content = str(mdn.mdn_url), mdn.content

            def post_later() -> None:
                try:
                    httpx.post(url, content=content, headers=headers, timeout=10)
                except httpx.HTTPError:
                    pass  # a sender that named no reachable MDN URL does not get one

            threading.Thread(target=post_later, daemon=True).start()
            return 200, {"Content-Type": "text/plain"}, b""
        return 200, headers, mdn.content

    def _take_mdn(self, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        if self.mdn_status is not None:
            return self.mdn_status, {"Content-Type": "text/plain"}, b"station told to fail"
        mdn = Mdn()
        status, detail = mdn.parse(raw, lambda message_id, recipient: self.sent.get(message_id))
        with self._lock:
            self.mdns.append((mdn.orig_message_id, status, detail))
        return 200, {"Content-Type": "text/plain"}, b""

    # -- sending -----------------------------------------------------------------------------------------------
    def build(self, data: bytes, *, filename: str = "ORDRSP-1.edi", content_type: str = "application/edifact",
              mdn_mode: str | None = "SYNC", message_id: str | None = None,
              signer: Identity | None = None) -> Message:
        organization = self.organization()
        if signer is not None:  # sign with a key the receiver does not know
            organization = Organization(as2_name=self.me.name, sign_key=signer.key_and_certificate,
                                        decrypt_key=self.me.key_and_certificate, mdn_url=f"{self.url}/mdn",
                                        domain=self.me.name.lower())
        message = Message(sender=organization, receiver=self.partner(mdn_mode))
        message.build(data, filename=filename, content_type=content_type, message_id=message_id,
                      disposition_notification_to=self.me.name)
        with self._lock:
            self.sent[message.message_id] = message
        return message

    def post(self, url: str, message: Message, *, tamper: tuple[bytes, bytes] | None = None,
             ) -> tuple[httpx.Response, str | None, str | None]:
        """POST a built message (``tamper``: replace these bytes on the way); gives the response and, for a
        synchronous MDN, its status and detail."""
        body = message.content
        if tamper is not None:
            assert tamper[0] in body, "the bytes to tamper with are not in the message"
            body = body.replace(tamper[0], tamper[1], 1)
        response = httpx.post(url, content=body, headers={k: str(v) for k, v in message.headers.items()},
                              timeout=30)
        if not response.headers.get("content-type", "").startswith(("multipart/report", "multipart/signed")):
            return response, None, None
        head = "".join(f"{k}: {v}\r\n" for k, v in response.headers.multi_items()
                       if k.lower() not in ("content-length", "transfer-encoding"))
        status, detail = Mdn().parse(head.encode() + b"\r\n" + response.content,
                                     lambda message_id, recipient: message)
        return response, status, detail
