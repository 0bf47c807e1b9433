"""Both transports inside a running bus: a document a partner sends by AS2 goes out to another partner by SFTP,
and a document collected by SFTP goes out by AS2 — byte for byte, once each, with the journal's adapter state.

The peers are real: the AS2 station of tests/helpers/as2station.py (pyas2lib on its own HTTP server) and
Debian's sshd (tests/helpers/sshd.py). The bus is the full runtime: SQLite journal, embedded queue, webhook
server on a free port, poll triggers and workers.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from bus.runtime import Runtime, RuntimeOptions
from tests.helpers.as2station import As2Station, identity
from tests.helpers.sshd import SshServer, run_sshd
from tests.helpers.wait import wait_until

X12 = ("ISA*00*          *00*          *ZZ*SUPPLIER1      *ZZ*ACME           *261207*0130*U*00401*000000905*0*P*>~\n"
       "GS*PR*SUPPLIER1*ACME*20261207*0130*905*X*004010~\nST*855*0001~\nBAK*00*AC*PO-4711*20261207~\n"
       "SE*3*0001~\nGE*1*905~\nIEA*1*000000905~\n")


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[SshServer]:
    yield from run_sshd(tmp_path / "sshd")


def test_a_document_travels_from_as2_to_sftp_and_back(sshd: SshServer, tmp_path: Path) -> None:
    acme, supplier = identity("ACME"), identity("SUPPLIER1")
    station = As2Station(supplier, "ACME", acme.certificate)
    for name, text in (("acme.key", acme.key), ("acme.crt", acme.certificate), ("s1.crt", supplier.certificate),
                       ("sftp.key", sshd.user_key)):
        (tmp_path / name).write_text(text)
    routes = tmp_path / "routes.yaml"
    routes.write_text(textwrap.dedent(f"""\
        systems:
          supplier1_as2:
            adapter: as2
            settings:
              url: {station.url}/as2
              as_from: ACME
              as_to: SUPPLIER1
              key: {tmp_path / 'acme.key'}
              certificate: {tmp_path / 'acme.crt'}
              partner_certificate: {tmp_path / 's1.crt'}
              compress: true
              quarantine: {tmp_path / 'quarantine'}
          supplier2_sftp:
            adapter: sftp
            settings:
              host: 127.0.0.1
              port: {sshd.port}
              user: {sshd.user}
              key: {tmp_path / 'sftp.key'}
              host_key: "{sshd.host_key}"
              outbox: {sshd.remote('out')}
              inbox: {sshd.remote('in')}
              settle: 0
              triggers: {{received: {{interval: 0.2}}}}
        routes:
          - name: as2-to-sftp
            from: supplier1_as2.receive
            to: [supplier2_sftp.send]
          - name: sftp-to-as2
            from: supplier2_sftp.received
            to: [supplier1_as2.send]
        """))
    runtime = Runtime(routes, journal=f"sqlite:///{tmp_path}/journal.sqlite",
                      options=RuntimeOptions(workers=2, port=0, lease_seconds=10))
    runtime.start()
    try:
        hook = f"http://127.0.0.1:{runtime.port}/hooks/supplier1_as2/receive"
        # Binary transfer, as our own side sends LF-terminated X12: pyas2lib would send a text type as MIME
        # text, whose line ends become CRLF on the sender's side.
        message = station.build(X12.encode(), filename="855-905.x12", content_type="application/octet-stream")
        response, status, _ = station.post(hook, message)
        assert response.status_code == 200 and status == "processed"
        out = sshd.path("out") / "855-905.x12"
        wait_until(out.exists, 20, "the AS2 document to be uploaded to the SFTP partner")
        assert out.read_bytes() == X12.encode()  # bare LF line ends and all

        # The partner resends (it lost our MDN): the journal's adapter state knows the message id.
        again = station.post(hook, message)
        assert again[1] == "processed/Warning" and "duplicate" in str(again[2])

        (sshd.path("in") / "856-906.x12").write_bytes(X12.replace("855", "856").encode())
        wait_until(lambda: any(r.filename == "856-906.x12" for r in station.received), 20,
                   "the SFTP document to reach the AS2 partner")
        [sent] = [r for r in station.received if r.filename == "856-906.x12"]
        assert sent.body == X12.replace("855", "856").encode() and sent.signed and sent.encrypted
        wait_until(lambda: (sshd.path("in") / "processed" / "856-906.x12").exists(), 10,
                   "the collected file to be moved to processed/")
        assert runtime.wait_idle(timeout=20)
        assert [p.name for p in sshd.path("out").iterdir()] == ["855-905.x12"]  # once, not twice
    finally:
        runtime.stop()
        station.close()
