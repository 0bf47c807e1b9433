"""The edifact adapter against the public pydifact samples and messages built from the D.96A structures: UNA
service characters, release character, UNT/UNZ counts and references, CONTRL out and in, duplicates."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from adapters.base import Adapter, WebhookRequest
from adapters.edifact import EdifactAdapter
from bus.errors import PermanentError
from bus.testing import AdapterContract, make_call
from tests.helpers.edi import files, folders, push_request, record

SAMPLES = Path(__file__).parents[2] / "fixtures" / "samples" / "edi" / "edifact"

ORDERS = {"partner": "SUP1", "document": "ORDERS", "segments": [
    ["BGM", "220", "PO-6112", "9"],
    ["DTM", ["137", "20240501", "102"]],
    ["NAD", "BY", ["BUYERCO", None, "9"]],
    ["NAD", "SU", ["SUPPLIER1", None, "9"]],
    [[["LIN", 1, None, ["W-100", "SA"]], ["QTY", ["21", 120]], ["FTX", "AAI", None, None, "2+2=4? isn't it"]],
     [["LIN", 2, None, ["W-200", "SA"]], ["QTY", ["21", 2.5]], None]],
    ["UNS", "S"],
    ["CNT", ["2", 2]],
]}


def settings(tmp_path: Path, **partner: Any) -> dict[str, Any]:
    return {"our_id": "BUYERCO", "our_qualifier": "ZZ", "partners": {
        "SUP1": {"id": "SUPPLIER1", "qualifier": "ZZ", "transport": folders(tmp_path, "sup1"), **partner},
        "SUP2": {"id": "SUPPLIER2", "transport": folders(tmp_path, "sup2"),
                 "message_versions": {"ORDERS": "D:96A:UN:EAN008"}}}}


def interchange(body: list[str], *, control: str = "101", sender: str = "SUPPLIER1:ZZ", count: int | None = None,
                unz: str | None = None, trailer: bool = True, una: str = "UNA:+.? '", ack: bool = True) -> bytes:
    """One message around ``body`` (segments without terminator, '+' and ':' separators)."""
    message = ["UNH+1+" + body[0], *body[1:]]
    lines = [f"UNB+UNOC:3+{sender}+BUYERCO:ZZ+240502:1015+{control}" + ("++++1" if ack else ""), *message,
             f"UNT+{count if count is not None else len(message) + 1}+1"]
    if trailer:
        lines.append(f"UNZ+1+{unz or control}")
    text = "".join(line + "'\n" for line in lines)
    if una != "UNA:+.? '":  # rewrite with other service characters: component, element, decimal, release, -, end
        comp, elem, rel, end = una[3], una[4], una[6], una[8]
        text = text.replace("?", "\x00").replace(":", comp).replace("+", elem).replace("'", end)
        text = text.replace("\x00", rel)
    return ((una if una else "") + text).encode("latin-1")


ORDRSP = ["ORDRSP:D:96A:UN", "BGM+231+RSP-1+4", "DTM+137:20240502:102", "RFF+ON:PO-6112", "NAD+SU+SUPPLIER1::9",
          "LIN+1+3+W-100:SA", "QTY+21:100", "DTM+2:20240610:102", "FTX+AAI+++short?: 20 later",
          "LIN+2+7+W-200:SA", "QTY+21:0", "UNS+S"]


@pytest.fixture
def adapter(tmp_path: Path) -> Any:
    instance = EdifactAdapter("suppliers_edifact", settings(tmp_path))
    instance.open()
    yield instance
    instance.close()


def _contrl(tmp_path: Path, partner: str = "sup1") -> str:
    (name,) = [f for f in files(tmp_path / partner / "out") if "_CONTRL" in f][-1:]
    return (tmp_path / partner / "out" / name).read_text("latin-1")


def test_ordrsp_reads_into_line_loops(adapter: EdifactAdapter, tmp_path: Path) -> None:
    (payload,) = adapter.receive(interchange(ORDRSP), None, "f")
    assert payload["status"] == "accepted" and payload["document"] == "ORDRSP" and payload["version"] == "D:96A:UN"
    body = payload["body"]
    assert body["BGM"]["BGM02"] == "RSP-1" and body["RFF_loop"][0]["RFF"]["RFF01"] == ["ON", "PO-6112"]
    lines = body["LIN_loop"]
    assert [(line["LIN"]["LIN01"], line["LIN"]["LIN02"], line["QTY"]["QTY01"][1]) for line in lines] == [
        ("1", "3", "100"), ("2", "7", "0")]
    assert lines[0]["DTM"]["DTM01"] == ["2", "20240610", "102"]
    assert lines[0]["FTX"]["FTX04"] == "short: 20 later"  # the release character is undone
    assert "UCI+101+SUPPLIER1:ZZ+BUYERCO:ZZ+7'" in _contrl(tmp_path)


def test_service_characters_come_from_the_una(adapter: EdifactAdapter) -> None:
    raw = interchange(ORDRSP, una="UNA|*.! ~")
    (payload,) = adapter.receive(raw, "SUP1", "una")
    assert payload["status"] == "accepted", payload.get("reason")
    assert payload["body"]["LIN_loop"][0]["FTX"]["FTX04"] == "short| 20 later"


def test_despatch_advice_nests_lines_in_packages(adapter: EdifactAdapter) -> None:
    desadv = ["DESADV:D:96A:UN", "BGM+351+ASN-1+9", "DTM+137:20240505:102", "DTM+17:20240510:102",
              "RFF+ON:PO-6112", "NAD+SU+SUPPLIER1::9", "CPS+1", "PAC+2++CT", "LIN+1++W-100:SA", "QTY+12:100",
              "RFF+ON:PO-6112:1", "LIN+2++W-200:SA", "QTY+12:2.5", "CNT+2:2"]
    (payload,) = adapter.receive(interchange(desadv), "SUP1", "asn")
    package = payload["body"]["CPS_loop"][0]
    assert [line["QTY"]["QTY01"] for line in package["LIN_loop"]] == [["12", "100"], ["12", "2.5"]]
    assert package["LIN_loop"][0]["RFF_loop"][0]["RFF"]["RFF01"] == ["ON", "PO-6112", "1"]
    assert payload["body"]["CNT"]["CNT01"] == ["2", "2"]


def test_public_samples_lack_unz_and_are_refused_as_truncated(adapter: EdifactAdapter, tmp_path: Path) -> None:
    partner = {"our_id": "WBDZDD", "partners": {"S": {"id": "12345678", "transport": folders(tmp_path, "s"),
                                                      "always_contrl": True}}}
    receiver = EdifactAdapter("r", partner)
    receiver.open()
    raw = (SAMPLES / "pydifact_order_ORDERS_D96A_EAN008.edi").read_bytes()
    (payload,) = receiver.receive(raw, None, "sample")
    assert payload["status"] == "rejected" and "without UNZ" in payload["reason"]
    assert "UCI+807+12345678:8+WBDZDD:ZZ+4+13+UNZ'" in _contrl(tmp_path, "s")
    # The same sample completed with its UNZ reads, with its EAN008 association code and address loops.
    (payload,) = receiver.receive(raw + b"UNZ+1+807'", None, "sample-complete")
    assert payload["status"] == "accepted" and payload["version"] == "D:96A:UN:EAN008"
    body = payload["body"]
    assert [n["NAD"]["NAD01"] for n in body["NAD_loop"]] == ["SU", "BY", "DP"]
    assert [line["LIN"]["LIN03"] for line in body["LIN_loop"]] == [["5020436373085", "EN"], ["5020436373108", "EN"]]
    assert body["DTM"][0]["DTM01"] == ["137", "201508030000", "203"]


@pytest.mark.parametrize(("raw", "expected", "reason"), [
    (interchange(ORDRSP, count=7), "UCM+1+ORDRSP:D:96A:UN+4+29'", "UNT0074 says 7"),
    (interchange(ORDRSP, unz="999"), "UCI+101+SUPPLIER1:ZZ+BUYERCO:ZZ+4+28+UNZ'", "does not match UNB0020"),
    (interchange([*ORDRSP[:3], "XYZ+1", *ORDRSP[3:]]), "UCS+4+15'", "XYZ is not part of a ORDRSP message"),
    (interchange(ORDRSP, trailer=False), "UCI+101+SUPPLIER1:ZZ+BUYERCO:ZZ+4+13+UNZ'", "without UNZ"),
])
def test_bad_interchanges_get_a_negative_contrl(adapter: EdifactAdapter, tmp_path: Path, raw: bytes, expected: str,
                                                reason: str) -> None:
    (payload,) = adapter.receive(raw, "SUP1", "bad")
    assert payload["status"] == "rejected" and reason in payload["reason"]
    assert expected in _contrl(tmp_path)


def test_no_contrl_when_the_partner_did_not_ask(adapter: EdifactAdapter, tmp_path: Path) -> None:
    (payload,) = adapter.receive(interchange(ORDRSP, ack=False), "SUP1", "quiet")
    assert payload["status"] == "accepted"
    assert not files(tmp_path / "sup1" / "out")


def test_a_duplicate_interchange_gets_contrl_26(adapter: EdifactAdapter, tmp_path: Path) -> None:
    assert adapter.receive(interchange(ORDRSP), "SUP1", "a")[0]["status"] == "accepted"
    (again,) = adapter.receive(interchange(ORDRSP), "SUP1", "b")
    assert again["status"] == "rejected" and "duplicate interchange 101" in again["reason"]
    assert "UCI+101+SUPPLIER1:ZZ+BUYERCO:ZZ+4+26'" in _contrl(tmp_path)


def test_orders_envelope_escapes_values_and_counts(adapter: EdifactAdapter, tmp_path: Path) -> None:
    outcome = adapter.call("send", make_call(ORDERS, idempotency_key="k-1"))
    text = (tmp_path / "sup1" / "out" / outcome.result["filename"]).read_text("latin-1")
    lines = [line for line in text.split("'\n") if line]
    assert lines[0] == "UNA:+.? "
    assert lines[1].startswith("UNB+UNOC:3+BUYERCO:ZZ+SUPPLIER1:ZZ+") and lines[1].endswith("+1++++1")
    assert lines[2] == "UNH+1+ORDERS:D:96A:UN"
    assert "QTY+21:2.5" in lines and "FTX+AAI+++2?+2=4?? isn?'t it" in lines
    unt = next(line for line in lines if line.startswith("UNT"))
    assert unt == f"UNT+{lines.index(unt) - 1}+1"
    assert lines[-1] == "UNZ+1+1"
    # Each partner has its own series; its message version comes from its settings.
    other = adapter.call("send", make_call({**ORDERS, "partner": "SUP2"}, idempotency_key="k-2"))
    assert other.reference == "1"
    assert "UNH+1+ORDERS:D:96A:UN:EAN008'" in (tmp_path / "sup2" / "out" / other.result["filename"]).read_text()
    # Our own ORDERS reads back through the same parser.
    echo = EdifactAdapter("echo", {"our_id": "SUPPLIER1", "partners": {"B": {"id": "BUYERCO", "acknowledge": False,
                                                                             "transport": folders(tmp_path, "b")}}})
    (payload,) = echo.receive(text.encode("latin-1"), "B", "echo")
    assert payload["body"]["LIN_loop"][0]["FTX"]["FTX04"] == "2+2=4? isn't it"


def test_ordchg_with_an_explicit_version(adapter: EdifactAdapter, tmp_path: Path) -> None:
    payload = {**ORDERS, "document": "ORDCHG", "version": "D:01B:UN"}
    outcome = adapter.call("send", make_call(payload))
    assert "UNH+1+ORDCHG:D:01B:UN'" in (tmp_path / "sup1" / "out" / outcome.result["filename"]).read_text()


def test_contrl_from_the_partner_settles_what_we_sent(adapter: EdifactAdapter) -> None:
    adapter.call("send", make_call(ORDERS, idempotency_key="k-1"))
    assert [n for n, _ in adapter.store.items("awaiting:")] == ["awaiting:edifact:SUP1:1"]
    contrl = interchange(["CONTRL:D:3:UN", "UCI+1+BUYERCO:ZZ+SUPPLIER1:ZZ+7"], control="900", ack=False)
    (payload,) = adapter.receive(contrl, "SUP1", "c")
    assert payload["document"] == "CONTRL"
    assert adapter.store.items("awaiting:") == []


def test_a_negative_contrl_is_kept_for_the_operator(adapter: EdifactAdapter) -> None:
    adapter.call("send", make_call(ORDERS, idempotency_key="k-1"))
    contrl = interchange(["CONTRL:D:3:UN", "UCI+1+BUYERCO:ZZ+SUPPLIER1:ZZ+4", "UCM+1+ORDERS:D:96A:UN+4+29"],
                         control="901", ack=False)
    adapter.receive(contrl, "SUP1", "c")
    ((_, value),) = adapter.store.items("awaiting:")
    assert "rejected by the partner: CONTRL action 4; rejected messages: 1" in value


def test_pulled_documents_are_settled_after_the_bus_stored_the_watermark(adapter: EdifactAdapter,
                                                                         tmp_path: Path) -> None:
    inbox = tmp_path / "sup1" / "in"
    (inbox / "rsp-1.edi").write_bytes(interchange(ORDRSP))
    first = adapter.poll("received", None)
    assert len(first.records) == 1 and (inbox / "rsp-1.edi").exists()
    again = adapter.poll("received", None)  # the bus did not store the watermark: the document is still there
    assert [k for k, _ in again.records] == [k for k, _ in first.records]
    adapter.poll("received", again.watermark)
    assert not (inbox / "rsp-1.edi").exists() and (inbox / "done" / "rsp-1.edi").exists()


def test_bad_payloads_are_permanent(adapter: EdifactAdapter) -> None:
    with pytest.raises(PermanentError, match="service segment"):
        adapter.call("send", make_call({**ORDERS, "segments": [["UNH", "1"]]}))
    with pytest.raises(PermanentError, match="expected a string, number or null"):
        adapter.call("send", make_call({**ORDERS, "segments": [["BGM", {"a": 1}]]}))


class TestEdifactContract(AdapterContract):
    @pytest.fixture
    def adapter_factory(self) -> Any:
        return lambda s: EdifactAdapter("suppliers_edifact", s)

    @pytest.fixture
    def good_settings(self, tmp_path: Path) -> Mapping[str, Any]:
        blocked = tmp_path / "blocked"
        blocked.write_text("a file where a folder should be")
        base = settings(tmp_path)
        base["partners"]["DOWN"] = {"id": "DOWNCO", "transport": {"kind": "directory", "outbox": str(blocked)}}
        self.inbox = tmp_path / "sup1" / "in"
        return base

    def junk_settings(self, good_settings: Mapping[str, Any]) -> list[Any]:
        partner = good_settings["partners"]["SUP1"]
        return [{**good_settings, "partners": {"P": {**partner, "syntax": "ASCII"}}},
                {**good_settings, "partners": {"P": {**partner, "message_versions": {"ORDERS": "96A"}}}},
                {**good_settings, "partners": {"P": {k: v for k, v in partner.items() if k != "transport"}}}]

    def arrange_success(self, adapter: Adapter) -> tuple[str, Any]:
        self.recorder = record(adapter, "SUP1")
        return "send", ORDERS

    def arrange_transient(self, adapter: Adapter) -> tuple[str, Any]:
        return "send", {**ORDERS, "partner": "DOWN"}

    def arrange_permanent(self, adapter: Adapter) -> tuple[str, Any]:
        return "send", {**ORDERS, "document": "INVOIC"}

    def observed_idempotency_key(self, adapter: Adapter) -> str | None:
        return self.recorder.sent[-1].message_id

    def arrange_webhook(self, adapter: Adapter) -> tuple[str, WebhookRequest, WebhookRequest]:
        record(adapter, "SUP1")
        body = interchange(ORDRSP)
        return "pushed", push_request(body), push_request(body, forged=True)

    def arrange_poll(self, adapter: Adapter) -> str:
        self.inbox.mkdir(parents=True, exist_ok=True)
        (self.inbox / "ordrsp-1.edi").write_bytes(interchange(ORDRSP))
        return "received"


def test_an_interchange_for_someone_else_gets_uci_7(adapter: EdifactAdapter, tmp_path: Path) -> None:
    raw = interchange(ORDRSP).replace(b"+BUYERCO:ZZ+", b"+OTHERCO:ZZ+")
    (payload,) = adapter.receive(raw, "SUP1", "misrouted")
    assert payload["status"] == "rejected" and "addressed to 'OTHERCO'" in payload["reason"]
    assert "UCI+101+SUPPLIER1:ZZ+OTHERCO:ZZ+4+7'" in _contrl(tmp_path)


def test_one_bad_message_is_rejected_by_its_ucm_the_other_is_applied(adapter: EdifactAdapter,
                                                                     tmp_path: Path) -> None:
    good = ["UNH+1+" + ORDRSP[0], *ORDRSP[1:], f"UNT+{len(ORDRSP) + 1}+1"]
    bad = ["UNH+2+" + ORDRSP[0], *ORDRSP[1:], "UNT+3+2"]
    lines = ["UNB+UNOC:3+SUPPLIER1:ZZ+BUYERCO:ZZ+240502:1015+150++++1", *good, *bad, "UNZ+2+150"]
    (ok, refused) = adapter.receive(("UNA:+.? '" + "".join(line + "'" for line in lines)).encode(), "SUP1", "two")
    assert (ok["status"], ok["control"]) == ("accepted", "1")
    assert (refused["status"], refused["control"]) == ("rejected", "2")
    contrl = _contrl(tmp_path)
    assert "UCI+150+SUPPLIER1:ZZ+BUYERCO:ZZ+7'" in contrl and "UCM+2+ORDRSP:D:96A:UN+4+29'" in contrl
    assert "UCM+1" not in contrl


def test_a_contrl_rejecting_one_of_our_messages_is_not_a_plain_acceptance(adapter: EdifactAdapter) -> None:
    adapter.call("send", make_call(ORDERS, idempotency_key="k-9"))
    contrl = interchange(["CONTRL:D:3:UN", "UCI+1+BUYERCO:ZZ+SUPPLIER1:ZZ+7", "UCM+1+ORDERS:D:96A:UN+4+15"],
                         control="902", ack=False)
    adapter.receive(contrl, "SUP1", "c")
    ((_, value),) = adapter.store.items("awaiting:")
    assert '"overdue": true' in value and "rejected messages: 1" in value


def test_a_broken_una_is_a_rejected_payload(adapter: EdifactAdapter) -> None:
    (payload,) = adapter.receive(b"UNA:+", "SUP1", "una")
    assert payload["status"] == "rejected" and payload["reason"].startswith("unreadable interchange")
