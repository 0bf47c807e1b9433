"""Refused partner documents are dead letters in the journal, and ``ironbus dlq retry`` reads them again.

A running bus (SQLite journal, embedded queue, poll triggers, webhook server) with an X12 partner on a folder and
a cXML supplier: bad documents still get their negative acknowledgement (TA1/997, a cXML 4xx Response) and are
kept as dead letters with the partner and the reason, visible in ``ironbus dlq list/show``; after the partner
profile is fixed, ``dlq retry`` re-reads the stored document and the bus takes it; a document still bad stays dead.
"""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import structlog

import cli
from adapters.x12 import X12Adapter
from bus.journal import Journal
from bus.refusals import KIND, parse_refused
from bus.runtime import Runtime, RuntimeOptions
from tests.adapters.edi.test_x12 import ACK_855, interchange
from tests.helpers.edi import files
from tests.helpers.wait import wait_until

SECRET = "s3cret-of-acme"
BOMB = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
        b'<cXML payloadID="1@acme" timestamp="2026-12-07T10:00:00Z"><Header><Sender><Credential domain="DUNS">'
        b'<Identity>802661173</Identity><SharedSecret>' + SECRET.encode() + b'</SharedSecret></Credential>'
        b'</Sender></Header><Request>&lol2;</Request></cXML>')
# Authenticated, but its ConfirmationHeader has a type the DTD does not know.
INVALID = f"""<?xml version="1.0"?>
<cXML payloadID="2@acme" timestamp="2026-12-07T10:00:00Z"><Header>
<From><Credential domain="DUNS"><Identity>802661173</Identity></Credential></From>
<To><Credential domain="DUNS"><Identity>123456789</Identity></Credential></To>
<Sender><Credential domain="DUNS"><Identity>802661173</Identity><SharedSecret>{SECRET}</SharedSecret></Credential>
<UserAgent>acme</UserAgent></Sender></Header>
<Request><ConfirmationRequest><ConfirmationHeader type="maybe" noticeDate="2026-12-07T10:00:00Z"/>
<OrderReference orderID="PO-1"><DocumentReference payloadID="x@buyer"/></OrderReference></ConfirmationRequest>
</Request></cXML>""".encode()


def write_routes(tmp_path: Path, extra_segments: str = "[]") -> Path:
    routes = tmp_path / "routes.yaml"
    routes.write_text(textwrap.dedent(f"""\
        systems:
          suppliers_x12:
            adapter: x12
            settings:
              our_id: BUYERCO
              triggers: {{received: {{interval: 0.2}}}}
              partners:
                SUP1:
                  id: SUPPLIER1
                  transport: {{kind: directory, outbox: {tmp_path / 'sup1' / 'out'}, inbox: {tmp_path / 'sup1' / 'in'}}}
                  extra_segments: {extra_segments}
          suppliers_cxml:
            adapter: cxml
            settings:
              from: {{domain: DUNS, identity: "123456789"}}
              suppliers:
                ACME:
                  to: {{domain: DUNS, identity: "802661173"}}
                  inbound: {{domain: DUNS, identity: "802661173", shared_secret: {SECRET}}}
          sink:
            adapter: stub
        routes:
          - name: x12-in
            from: suppliers_x12.received
            to: [sink.take]
          - name: cxml-in
            from: suppliers_cxml.documents
            to: [sink.take]
        """))
    return routes


@pytest.fixture(autouse=True)
def logs_outlive_capsys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bus logs to the process's stderr, so what the CLI prints is all capsys reads (see test_followups)."""
    from bus import logs

    configure = logs.configure_logging

    def configure_logging(level: str = "info", fmt: str = "console") -> None:
        configure(level, fmt)
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.__stderr__))

    monkeypatch.setattr(logs, "configure_logging", configure_logging)


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[Runtime]:
    (tmp_path / "sup1" / "in").mkdir(parents=True)
    (tmp_path / "sup1" / "out").mkdir(parents=True)
    runtime = Runtime(write_routes(tmp_path), journal=f"sqlite:///{tmp_path}/journal.sqlite",
                      options=RuntimeOptions(workers=1, port=0, lease_seconds=10))
    runtime.start()
    yield runtime
    runtime.stop()


def run_cli(capsys: pytest.CaptureFixture[str], tmp_path: Path, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main([*argv, "--journal", f"sqlite:///{tmp_path}/journal.sqlite"])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def letters(journal: Journal) -> list[dict[str, str]]:
    return [{"id": str(r.id), "route": r.route or "", "reason": r.reason, "kind": r.error_kind}
            for r in journal.dead_letters(limit=None)]


def test_bad_interchanges_are_dead_letters_acknowledged_negatively_and_retried_after_a_profile_fix(
        bus: Runtime, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inbox, outbox = tmp_path / "sup1" / "in", tmp_path / "sup1" / "out"
    # Given a supplier sends a truncated interchange, one whose SE count is wrong and one with a segment (DTM)
    # its 855 may carry by its implementation guide but the 004010 table does not list
    (inbox / "a_truncated.x12").write_bytes(interchange(ACK_855, control="000000201", trailer=False))
    (inbox / "b_count.x12").write_bytes(interchange(ACK_855, control="000000202", segs=3))
    (inbox / "c_unknown.x12").write_bytes(interchange([*ACK_855[:2], "ZZZ*20261224", *ACK_855[2:]],
                                                      control="000000203"))
    journal = bus.journal
    wait_until(lambda: len(letters(journal)) >= 3, timeout=20)
    found = sorted(letters(journal), key=lambda x: x["reason"])
    assert all(x["route"] == "suppliers_x12.received" and x["kind"] == KIND for x in found)
    reasons = " | ".join(x["reason"] for x in found)
    assert "from SUP1" in reasons and "IEA" in reasons and "ZZZ" in reasons
    assert "SE01 says 3 segments" in reasons
    # and the negative acknowledgements went out all the same: a TA1 for the envelope, 997s for the sets
    wait_until(lambda: len(files(outbox)) >= 3, timeout=10)
    acks = b"".join((outbox / name).read_bytes() for name in files(outbox))
    assert b"TA1*000000201" in acks and b"AK5*R" in acks
    bus.stop()  # the operator's commands need no running bus
    journal = Journal(f"sqlite:///{tmp_path}/journal.sqlite")
    # Then the operator sees them with the partner, the reason and the document
    code, out, _ = run_cli(capsys, tmp_path, "dlq", "list", "--json")
    assert code == 0 and len(json.loads(out)) == 3
    unknown = next(x for x in found if "ZZZ" in x["reason"])
    code, out, _ = run_cli(capsys, tmp_path, "dlq", "show", unknown["id"], "--json")
    shown = json.loads(out)
    assert code == 0 and shown["kind"] == KIND
    stored = json.loads(shown["body"])
    assert stored["partner"] == "SUP1" and "ZZZ*20261224" in stored["text"]
    # When the partner profile is fixed (ZZZ is in their implementation guide) and the letters are retried
    write_routes(tmp_path, extra_segments="[ZZZ]")
    code, out, err = run_cli(capsys, tmp_path, "dlq", "retry", "--routes", str(tmp_path / "routes.yaml"))
    # Then the fixed one is read again and flows; the truncated and miscounted ones stay dead, with the reason
    assert code == 1
    assert f"dead letter #{unknown['id']}: the refused document from SUP1 was read again: 1 event(s)" in out
    assert err.count("stays dead") == 2
    [retried] = [r for r in journal.dead_letters(state=None, limit=None) if r.state == "retried"]
    assert str(retried.id) == unknown["id"]
    assert {str(r.id) for r in journal.dead_letters(limit=None)} == {x["id"] for x in found} - {unknown["id"]}
    assert all(r.attempts == 1 and "still refused" in r.reason for r in journal.dead_letters(limit=None))

    row = journal.get_event(_event_of(retried.id))
    assert row is not None and row.data["status"] == "accepted" and row.data["document"] == "855"
    assert "ZZZ" in row.data["body"]
    journal.close()


def _event_of(letter_id: int) -> str:
    import uuid

    from bus import refusals
    return str(uuid.uuid5(refusals._NAMESPACE, f"retry\x00{letter_id}\x000"))


def test_refused_cxml_requests_are_dead_letters_without_the_secret(
        bus: Runtime, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hook = f"http://127.0.0.1:{bus.port}/hooks/suppliers_cxml/documents"
    headers = {"content-type": "text/xml"}
    bomb = httpx.post(hook, content=BOMB, headers=headers, timeout=10)
    invalid = httpx.post(hook, content=INVALID, headers=headers, timeout=10)
    # the supplier gets its cXML 4xx Response with the reason …
    assert bomb.status_code == 400 and b'code="400"' in bomb.content and b"malformed_xml" in bomb.content
    assert invalid.status_code == 400 and b"maybe" in invalid.content
    # … and the bus keeps both as dead letters, the secret masked
    journal = bus.journal
    wait_until(lambda: len(letters(journal)) == 2, timeout=10)
    rows = journal.dead_letters(limit=None)
    assert all(r.route == "suppliers_cxml.documents" and SECRET.encode() not in r.body for r in rows)
    assert SECRET not in " ".join(r.reason for r in rows)
    bad, wrong = sorted(rows, key=lambda r: "maybe" in r.reason)
    assert "unknown sender" in bad.reason and "malformed_xml" in bad.reason
    assert "from ACME" in wrong.reason and "maybe" in wrong.reason
    letter = parse_refused(bad)
    assert letter is not None and b"<!ENTITY lol" in letter.refused.body
    assert b"<SharedSecret>***<" in letter.refused.body
    bus.stop()
    # a retry reads them again and says why they stay dead (the bomb is no document; the type is still unknown)
    code, _, err = run_cli(capsys, tmp_path, "dlq", "retry", "--routes", str(tmp_path / "routes.yaml"))
    assert code == 1 and err.count("stays dead") == 2
    assert "supplier must send it again" in err and "maybe" in err


def test_a_refused_document_read_twice_is_one_letter_and_a_duplicate_is_one_too(tmp_path: Path) -> None:
    adapter = X12Adapter("suppliers_x12", {"our_id": "BUYERCO", "partners": {"SUP1": {
        "id": "SUPPLIER1", "transport": {"kind": "directory", "outbox": str(tmp_path / "o"),
                                         "inbox": str(tmp_path / "i")}}}})
    journal = Journal(f"sqlite:///{tmp_path}/j.sqlite")
    from bus.refusals import JournalRefusals
    adapter.bind_refusals(JournalRefusals(journal))
    adapter.open()
    try:
        body = interchange(ACK_855, trailer=False)
        adapter.receive(body, "SUP1", "file-1")
        adapter.receive(body, "SUP1", "file-1")  # the poll ran again after a crash
        assert len(journal.dead_letters(limit=None)) == 1
        # a duplicate interchange (same ISA13 in another file) is a letter of its own, and is not applied again
        good = interchange(ACK_855, control="000000401")
        [first] = adapter.receive(good, "SUP1", "file-2")
        [again] = adapter.receive(good, "SUP1", "file-3")
        assert first["status"] == "accepted" and again["status"] == "rejected"
        duplicate = [r for r in journal.dead_letters(limit=None) if "duplicate interchange 000000401" in r.reason]
        assert len(duplicate) == 1 and "from SUP1" in duplicate[0].reason
    finally:
        adapter.close()
        journal.close()


def test_the_consoles_retry_reads_a_refused_document_again(tmp_path: Path) -> None:
    """The console's retry button (bus.dlqretry) takes the same path as the CLI for refused documents."""
    from bus.config import load_config
    from bus.dlqretry import retry_dead_letters
    from bus.queue.open import broker_url, open_queue
    from bus.refusals import JournalRefusals, SystemAdapters
    from bus.runtime import open_adapters

    (tmp_path / "sup1" / "in").mkdir(parents=True)
    (tmp_path / "sup1" / "out").mkdir(parents=True)
    journal = Journal(f"sqlite:///{tmp_path}/journal.sqlite")
    config = load_config(write_routes(tmp_path))
    adapter = open_adapters(config, {"suppliers_x12"})["suppliers_x12"]
    adapter.bind_store(journal.adapter_store("suppliers_x12"))
    adapter.bind_refusals(JournalRefusals(journal))
    adapter.open()
    queue = open_queue(broker_url(None), journal)
    try:
        adapter.receive(interchange([*ACK_855[:2], "ZZZ*1", *ACK_855[2:]], control="000000301"), "SUP1", "f-301")
        [letter] = journal.dead_letters(limit=None)
        # the partner profile is fixed, the operator presses retry
        fixed = load_config(write_routes(tmp_path, extra_segments="[ZZZ]"))
        systems = SystemAdapters(fixed, journal, lambda name: open_adapters(fixed, {name})[name])
        try:
            done = retry_dead_letters(journal, [letter], queue, lambda: None, systems)
        finally:
            systems.close()
        assert done.reread is not None and [x.id for x, _ in done.reread.emitted] == [letter.id]
        assert done.failed == [] and journal.dead_letter_by_id(letter.id).state == "retried"  # type: ignore[union-attr]
        [(_, [event])] = done.reread.emitted
        assert event.type == "suppliers_x12.received" and event.data["status"] == "accepted"
    finally:
        queue.close()
        adapter.close()
        journal.close()
