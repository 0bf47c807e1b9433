"""The sftp adapter and transport against a real OpenSSH server (sshd + internal-sftp) started per test.

Every test talks to Debian's sshd on a free 127.0.0.1 port with a throwaway host key and user key
(tests/helpers/sshd.py); without sshd they skip, and fail under IRONBUS_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import base64
import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from adapters.b2b import OutboundDocument, open_transport, transport_schema
from adapters.b2b.payload import payload_body
from adapters.base import Adapter
from adapters.sftp import SftpAdapter, SftpTransport
from bus.errors import ConfigError, PermanentError, TransientError
from bus.testing import AdapterContract, make_call
from bus.triggers import MemoryWatermarkStore, TriggerPlan, TriggerRunner
from tests.helpers.sshd import SshServer, keypair, run_sshd
from tests.helpers.wait import wait_until


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[SshServer]:
    yield from run_sshd(tmp_path / "sshd")


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


class TestSftpContract(AdapterContract):
    @pytest.fixture
    def adapter_factory(self) -> Any:
        return lambda settings: SftpAdapter("supplier_sftp", settings)

    @pytest.fixture
    def good_settings(self, sshd: SshServer) -> Mapping[str, Any]:
        self.server = sshd
        return sshd.settings()

    def junk_settings(self, good_settings: Mapping[str, Any]) -> list[Any]:
        without_host_key = {k: v for k, v in good_settings.items() if k != "host_key"}
        without_auth = {k: v for k, v in good_settings.items() if k not in ("key", "password")}
        return [without_host_key, without_auth, {**good_settings, "port": 0}, {**good_settings, "settle": -1}]

    def arrange_success(self, adapter: Adapter) -> tuple[str, Any]:
        return "send", {"text": "UNA:+.? 'UNB+UNOC:3+BUYER+SUPPLIER'", "content_type": "application/edifact"}

    def arrange_transient(self, adapter: Adapter) -> tuple[str, Any]:
        self.server.stop()  # the partner's server is down
        return "send", {"filename": "down.edi", "text": "x"}

    def arrange_permanent(self, adapter: Adapter) -> tuple[str, Any]:
        return "send", {"filename": "../escape.edi", "text": "x"}

    def observed_idempotency_key(self, adapter: Adapter) -> str | None:
        # Without a filename, a document is named after the idempotency key: a retry lands on the same name.
        names = [n for n in files(self.server.path("out")) if n.startswith("contract-idem")]
        return names[0].rsplit(".", 1)[0] if names else None

    def arrange_poll(self, adapter: Adapter) -> str:
        self.server.path("in/ORDRSP-1.edi").write_text("UNH+1+ORDRSP:D:96A:UN'")
        return "received"


def test_listed_with_its_settings_and_as_a_transport_kind(sshd: SshServer) -> None:
    transport = open_transport({"kind": "sftp", **sshd.settings()})
    assert isinstance(transport, SftpTransport)
    validator = jsonschema.Draft202012Validator(transport_schema())
    assert validator.is_valid({"kind": "sftp", **sshd.settings()})
    assert not validator.is_valid({"kind": "sftp", **sshd.settings(), "surely_not": 1})


def test_upload_is_atomic_a_reader_never_sees_a_half_file(sshd: SshServer) -> None:
    adapter = SftpAdapter("partner", sshd.settings())
    adapter.open()
    body = os.urandom(24 * 1024 * 1024)
    out = sshd.path("out")
    seen_partial: list[str] = []
    seen_final: list[int] = []
    done = threading.Event()

    def reader() -> None:
        # A partner polling its inbox the whole time (and once more after the upload returned): the final
        # name must only ever hold the whole file.
        while True:
            last = done.is_set()
            for entry in os.scandir(out):
                if entry.name == "big.bin":
                    seen_final.append(entry.stat().st_size)
                elif entry.name.endswith(".part"):
                    seen_partial.append(entry.name)
            if last:
                return

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        outcome = adapter.call("send", make_call({"filename": "big.bin", "base64": base64.b64encode(body).decode()}))
    finally:
        done.set()
        thread.join()
        adapter.close()
    assert (out / "big.bin").read_bytes() == body
    assert files(out) == ["big.bin"], "no temporary file is left behind"
    assert seen_partial, "the reader should have seen the upload in progress under its temporary name"
    assert seen_final and set(seen_final) == {len(body)}, "the final name held a partial file"
    assert outcome.reference == sshd.remote("out/big.bin")


def test_a_retry_of_a_delivered_document_is_recognised(sshd: SshServer) -> None:
    adapter = SftpAdapter("partner", sshd.settings())
    call = make_call({"filename": "po-7.x12", "text": "ISA*00*~"}, idempotency_key="evt-7:route:partner.send")
    assert adapter.call("send", call).detail == "8 bytes"
    assert adapter.call("send", call).detail == "already delivered"
    assert files(sshd.path("out")) == ["po-7.x12"]
    adapter.close()


def test_fetch_settle_and_restart_resume_without_repeats(sshd: SshServer) -> None:
    inbox = sshd.path("in")
    (inbox / "DESADV-1.edi").write_text("UNH+1+DESADV'")
    (inbox / "ORDRSP-2.edi").write_text("UNH+2+ORDRSP'")
    (inbox / ".hidden").write_text("not a document")
    (inbox / "ORDRSP-3.edi.part").write_text("still being written")
    store = MemoryWatermarkStore()
    emitted: list[Any] = []

    def run(adapter: SftpAdapter) -> int:
        plan = TriggerPlan("partner", "received")
        return TriggerRunner({"partner": adapter}, [plan], store, emitted.extend).run_once(plan)

    first = SftpAdapter("partner", sshd.settings())
    assert run(first) == 2
    assert sorted(e.data["filename"] for e in emitted) == ["DESADV-1.edi", "ORDRSP-2.edi"]
    assert all(e.data["transport"] == "sftp" and e.data["partner"] == "partner" for e in emitted)
    assert payload_body(emitted[0].data) in (b"UNH+1+DESADV'", b"UNH+2+ORDRSP'")
    # Read but not yet moved: the watermark the bus stored says they are journaled; a crash now loses nothing.
    assert sorted(files(inbox)) == [".hidden", "DESADV-1.edi", "ORDRSP-2.edi", "ORDRSP-3.edi.part"]
    first.close()  # the bus stops ("crash" after the watermark was stored)

    (inbox / "ORDRSP-3.edi.part").rename(inbox / "ORDRSP-3.edi")  # the partner finished its upload
    restarted = SftpAdapter("partner", sshd.settings())
    assert run(restarted) == 1
    assert [e.data["filename"] for e in emitted][2:] == ["ORDRSP-3.edi"]
    assert files(inbox / "processed") == ["DESADV-1.edi", "ORDRSP-2.edi"]
    assert run(restarted) == 0  # and nothing again
    assert files(inbox / "processed") == ["DESADV-1.edi", "ORDRSP-2.edi", "ORDRSP-3.edi"]
    assert len(emitted) == 3
    restarted.close()


def test_a_crash_before_the_watermark_is_stored_reads_the_same_documents_again(sshd: SshServer) -> None:
    (sshd.path("in") / "a.edi").write_text("A")
    adapter = SftpAdapter("partner", sshd.settings())
    first = adapter.poll("received", None)
    again = adapter.poll("received", None)  # the bus never stored the first watermark
    assert [k for k, _ in first.records] == [k for k, _ in again.records] and first.records
    assert files(sshd.path("in")) == ["a.edi"]
    adapter.close()


def test_a_file_still_settling_is_left_for_the_next_poll(sshd: SshServer) -> None:
    (sshd.path("in") / "fresh.edi").write_text("just written")
    adapter = SftpAdapter("partner", sshd.settings(settle=3600))
    assert adapter.poll("received", None).records == []
    adapter.close()


def test_an_unknown_host_key_is_refused(sshd: SshServer) -> None:
    _, other_public = keypair()
    adapter = SftpAdapter("partner", sshd.settings(host_key=other_public))
    with pytest.raises(PermanentError, match="host key"):
        adapter.call("send", make_call({"filename": "a.edi", "text": "x"}))
    assert files(sshd.path("out")) == []
    assert "refus" in str(adapter.health().detail)
    adapter.close()
    # the same through a known_hosts line naming host and port
    line = f"[127.0.0.1]:{sshd.port} {sshd.host_key}"
    good = SftpTransport({"kind": "sftp", **sshd.settings(host_key=line)})
    good.send(OutboundDocument(b"x", "b.edi", "application/edifact", "m-1"))
    good.close()


def test_permission_denied_is_permanent(sshd: SshServer) -> None:
    adapter = SftpAdapter("partner", sshd.settings(port=sshd.readonly_port))
    with pytest.raises(PermanentError, match="[Pp]ermission denied"):
        adapter.call("send", make_call({"filename": "a.edi", "text": "x"}))
    adapter.close()


def test_a_refused_login_is_permanent_and_names_no_secret(sshd: SshServer) -> None:
    settings = {k: v for k, v in sshd.settings(password="hunter2-secret").items() if k != "key"}
    adapter = SftpAdapter("partner", settings)
    with pytest.raises(PermanentError, match="login refused") as info:
        adapter.call("send", make_call({"filename": "a.edi", "text": "x"}))
    assert "hunter2" not in str(info.value)
    adapter.close()


def test_a_missing_folder_is_permanent(sshd: SshServer) -> None:
    adapter = SftpAdapter("partner", sshd.settings(outbox=sshd.remote("nowhere")))
    with pytest.raises(PermanentError, match="No such file"):
        adapter.call("send", make_call({"filename": "a.edi", "text": "x"}))
    adapter.close()


def test_server_down_is_transient(sshd: SshServer) -> None:
    sshd.stop()
    adapter = SftpAdapter("partner", sshd.settings())
    with pytest.raises(TransientError, match="connect"):
        adapter.call("send", make_call({"filename": "two.edi", "text": "2"}))
    with pytest.raises(TransientError):
        adapter.poll("received", None)
    assert not adapter.health().ok
    adapter.close()


def test_a_session_dropped_by_the_server_is_reopened(sshd: SshServer, tmp_path: Path) -> None:
    adapter = SftpAdapter("partner", sshd.settings())
    adapter.call("send", make_call({"filename": "one.edi", "text": "1"}))
    client = adapter.transport._client
    assert client is not None
    transport = client.get_transport()
    assert transport is not None
    transport.close()  # as an idle timeout on the server would
    wait_until(lambda: not transport.is_active(), 5, "the SSH session to close")
    adapter.call("send", make_call({"filename": "two.edi", "text": "2"}))
    assert files(sshd.path("out")) == ["one.edi", "two.edi"]
    adapter.close()


def test_bad_settings_are_config_errors_without_the_key() -> None:
    private, public = keypair()
    with pytest.raises(ConfigError, match="host_key"):
        SftpTransport({"kind": "sftp", "host": "h", "user": "u", "key": private, "host_key": "ssh-ed25519 !!!"})
    with pytest.raises(ConfigError) as info:
        SftpTransport({"kind": "sftp", "host": "h", "user": "u", "host_key": public,
                       "key": "-----BEGIN OPENSSH PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n"
                              "-----END OPENSSH PRIVATE KEY-----"})
    assert "c2VjcmV0" not in str(info.value)


def test_an_encrypted_pkcs8_rsa_key_logs_in(sshd: SshServer) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.BestAvailableEncryption(b"open sesame")).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    authorized = sshd.root.parent / "etc" / "authorized_keys"
    authorized.write_text(authorized.read_text() + public.decode() + "\n")
    adapter = SftpAdapter("partner", sshd.settings(key=pem, key_password="open sesame"))
    adapter.call("send", make_call({"filename": "rsa.edi", "text": "x"}))
    assert files(sshd.path("out")) == ["rsa.edi"]
    adapter.close()
    with pytest.raises(ConfigError, match="key_password"):
        SftpAdapter("partner", sshd.settings(key=pem))
    with pytest.raises(ConfigError, match="key_password is wrong") as info:
        SftpAdapter("partner", sshd.settings(key=pem, key_password="wrong"))
    assert "sesame" not in str(info.value)
