"""The x12 adapter against the public samples and documents built from the X12 004010 envelope rules: envelopes and
control numbers out, separators and counts checked in, TA1/997 sent and reconciled, duplicates refused, resends."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from adapters.base import Adapter, WebhookRequest
from adapters.x12 import X12Adapter
from bus.errors import PermanentError
from bus.journal import Journal
from bus.testing import AdapterContract, make_call
from tests.helpers.edi import files, folders, push_request, record, segments_of

SAMPLES = Path(__file__).parents[2] / "fixtures" / "samples" / "edi" / "x12"

PO_850 = {"partner": "SUP1", "document": "850", "segments": [
    ["BEG", "00", "SA", "PO-6112", None, "20240501"],
    ["CUR", "BY", "USD"],
    [[["PO1", "1", 120, "EA", 9.25, "PE", "VP", "W-100"], ["PID", "F", None, None, None, "SMALL WIDGET"]],
     [["PO1", "2", 2.5, "KG", "13.79", "PE", "VP", "W-200"], None]],
    ["CTT", 2],
]}


def settings(tmp_path: Path, **partner: Any) -> dict[str, Any]:
    return {"our_id": "BUYERCO", "our_qualifier": "ZZ", "partners": {
        "SUP1": {"id": "SUPPLIER1", "qualifier": "ZZ", "transport": folders(tmp_path, "sup1"), **partner},
        "SUP2": {"id": "SUPPLIER2", "transport": folders(tmp_path, "sup2")}}}


def interchange(body: list[str], *, sender: str = "SUPPLIER1", receiver: str = "BUYERCO", control: str = "000000101",
                group: str = "7", sets: int | None = None, segs: int | None = None, iea: str | None = None,
                trailer: bool = True, sep: str = "*", term: str = "~\n", comp: str = ">") -> bytes:
    """An interchange with one group and one transaction set around ``body`` (segments without terminator)."""
    isa = sep.join(["ISA", "00", " " * 10, "00", " " * 10, "ZZ", sender.ljust(15), "ZZ", receiver.ljust(15),
                    "240502", "1015", "U", "00401", control, "0", "P", comp])
    code = body[0].split(sep)[1]
    inner = [body[0], *body[1:]]
    lines = [isa, sep.join(["GS", {"855": "PR", "856": "SH", "865": "CA", "997": "FA", "850": "PO"}.get(code, "PO"),
                            sender, receiver, "20240502", "1015", group, "X", "004010"]),
             *inner, sep.join(["SE", str(segs if segs is not None else len(inner) + 1), "0001"])]
    lines.append(sep.join(["GE", str(sets if sets is not None else 1), group]))
    if trailer:
        lines.append(sep.join(["IEA", "1", iea or control]))
    return "".join(line + term for line in lines).encode()


ACK_855 = ["ST*855*0001", "BAK*00*AC*PO-6112*20240502", "PO1*1*120*EA*9.25**VP*W-100",
           "ACK*IA*100*EA*068*20240610", "ACK*IB*20*EA", "PO1*2*2.5*KG*13.79**VP*W-200", "ACK*IA*2.5*KG",
           "CTT*2"]


@pytest.fixture
def adapter(tmp_path: Path) -> Any:
    instance = X12Adapter("suppliers_x12", settings(tmp_path))
    instance.open()
    yield instance
    instance.close()


# -- receiving ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["nodex12_850.edi", "nodex12_850_2.edi"])
def test_public_850_samples_read_with_their_own_separators(tmp_path: Path, name: str) -> None:
    partner = {"our_id": "999999999", "partners": {"ABC": {"id": "4405197800", "qualifier": "12",
                                                           "transport": folders(tmp_path, "abc")}}}
    supplier = X12Adapter("seller", partner)
    supplier.open()
    (payload,) = supplier.receive((SAMPLES / name).read_bytes(), None, name)
    assert payload["status"] == "accepted" and payload["document"] == "850"
    body = payload["body"]
    assert body["BEG"]["BEG03"] == "08292233294"
    assert [line["PO1"]["PO107"] for line in body["PO1_loop"]] == ["065322-117", "066850-116", "060733-110",
                                                                    "065308-116", "065374-118", "067504-118"]
    assert body["PO1_loop"][0]["PID"]["PID05"] == "SMALL WIDGET"
    assert body["N1_loop"][0]["N4"]["N401"] == "SOLON"
    assert body["CTT"]["CTT01"] == "6" and body["AMT"]["AMT02"] == "13045.94"
    # A 997 went back through the partner's transport: AK5 accepted, AK9 accepted 1 of 1.
    (ack,) = files(tmp_path / "abc" / "out")
    segs = segments_of((tmp_path / "abc" / "out" / ack).read_bytes(), "~", "*")
    assert ["AK1", "PO", "1421"] in segs and ["AK2", "850", "000000010"] in segs and ["AK5", "A"] in segs
    assert ["AK9", "A", "1", "1", "1"] in segs


def test_public_856_nests_hierarchical_levels(tmp_path: Path) -> None:
    partner = {"our_id": "999999999", "partners": {"ABC": {"id": "4405197800", "transport": folders(tmp_path, "abc")}}}
    supplier = X12Adapter("buyer", partner)
    supplier.open()
    (payload,) = supplier.receive((SAMPLES / "nodex12_856.edi").read_bytes(), "ABC", "f")
    shipment = payload["body"]["HL_loop"][0]
    assert shipment["HL"]["HL03"] == "S" and shipment["DTM"]["DTM02"] == "20111206"
    order = shipment["HL_loop"][0]
    assert order["HL"]["HL03"] == "O" and order["PRF"]["PRF01"] == "99999817"
    assert [(i["LIN"]["LIN03"], i["SN1"]["SN102"]) for i in order["HL_loop"]] == [("87787D", "24"), ("99887D", "6")]


def test_public_855_gives_line_acknowledgements(tmp_path: Path) -> None:
    partner = {"our_id": "123MILL", "partners": {"MILL": {"id": "1556150", "transport": folders(tmp_path, "m")}}}
    buyer = X12Adapter("buyer", partner)
    buyer.open()
    (payload,) = buyer.receive((SAMPLES / "nodex12_855.edi").read_bytes(), None, "f")
    lines = payload["body"]["PO1_loop"]
    assert [(line["PO1"]["PO101"], line["ACK"]["ACK01"]) for line in lines] == [
        ("1", "IA"), ("2", "IR"), ("3", "IR"), ("4", "IA")]


def test_separators_are_taken_from_the_interchange(adapter: X12Adapter) -> None:
    raw = interchange(["ST|855|0001", "BAK|00|AC|PO-1|20240502", "PO1|1|5|EA", "ACK|IA|5|EA|068|20240601", "CTT|1"],
                      sep="|", term="\n", comp="^")
    (payload,) = adapter.receive(raw, "SUP1", "sep")
    assert payload["status"] == "accepted"
    assert payload["body"]["PO1_loop"][0]["ACK"]["ACK05"] == "20240601"


@pytest.mark.parametrize(("raw", "code"), [
    (interchange(ACK_855, trailer=False), "023"),       # truncated: no IEA
    (interchange(ACK_855, iea="000000999"), "001"),     # IEA control number differs from ISA13
])
def test_envelope_errors_get_a_negative_ta1_and_a_rejected_payload(adapter: X12Adapter, tmp_path: Path,
                                                                      raw: bytes, code: str) -> None:
    (payload,) = adapter.receive(raw, None, "bad")
    assert payload["status"] == "rejected" and payload["reason"] and payload["raw"].startswith("ISA")
    (ack,) = files(tmp_path / "sup1" / "out")
    segs = segments_of((tmp_path / "sup1" / "out" / ack).read_bytes(), "~", "*")
    assert ["TA1", "000000101", "240502", "1015", "R", code] in segs


def test_wrong_segment_count_and_unknown_segment_reject_the_set_in_the_997(adapter: X12Adapter,
                                                                           tmp_path: Path) -> None:
    (payload,) = adapter.receive(interchange(ACK_855, segs=5), None, "count")
    assert payload["status"] == "rejected" and "SE01 says 5 segments" in payload["reason"]
    segs = segments_of((tmp_path / "sup1" / "out" / files(tmp_path / "sup1" / "out")[0]).read_bytes(), "~", "*")
    assert ["AK5", "R", "4"] in segs and ["AK9", "R", "1", "1", "0"] in segs
    weird = [*ACK_855[:2], "ZZZ*1", *ACK_855[2:]]
    (payload,) = adapter.receive(interchange(weird, control="000000102"), None, "unknown")
    assert payload["status"] == "rejected" and "ZZZ is not defined in transaction set 855" in payload["reason"]
    ack = sorted(files(tmp_path / "sup1" / "out"))[-1]
    segs = segments_of((tmp_path / "sup1" / "out" / ack).read_bytes(), "~", "*")
    assert ["AK3", "ZZZ", "3", "", "6"] in segs and ["AK5", "R", "5"] in segs


def test_wrong_group_count_is_reported_in_ak9(adapter: X12Adapter, tmp_path: Path) -> None:
    (payload,) = adapter.receive(interchange(ACK_855, sets=3), None, "gc")
    assert payload["status"] == "rejected" and "GE01 says 3" in payload["reason"]
    segs = segments_of((tmp_path / "sup1" / "out" / files(tmp_path / "sup1" / "out")[0]).read_bytes(), "~", "*")
    assert ["AK9", "R", "1", "1", "1", "5"] in segs


def test_an_unknown_sender_is_rejected_without_acknowledgement(adapter: X12Adapter, tmp_path: Path) -> None:
    (payload,) = adapter.receive(interchange(ACK_855, sender="STRANGER"), None, "x")
    assert payload["status"] == "rejected" and "STRANGER" in payload["reason"]
    assert not files(tmp_path / "sup1" / "out")


def test_garbage_is_a_rejected_payload_not_an_exception(adapter: X12Adapter) -> None:
    for junk in (b"", b"hello", b"ISA*00*short~", "ISA*ü".encode() * 40):
        (payload,) = adapter.receive(junk, "SUP1", "junk")
        assert payload["status"] == "rejected" and payload["reason"].startswith("unreadable interchange")


def test_a_duplicate_interchange_is_not_applied_twice(adapter: X12Adapter, tmp_path: Path) -> None:
    raw = interchange(ACK_855)
    (first,) = adapter.receive(raw, "SUP1", "file-1")
    assert first["status"] == "accepted"
    # The same file read again after a crash (same reference) is the same document, not a duplicate ...
    assert adapter.receive(raw, "SUP1", "file-1")[0]["status"] == "accepted"
    # ... but the same interchange arriving again in another file is refused and answered with TA1 025.
    (again,) = adapter.receive(raw, "SUP1", "file-2")
    assert again["status"] == "rejected" and "duplicate interchange 000000101" in again["reason"]
    dup = [f for f in files(tmp_path / "sup1" / "out") if f.endswith("_dup.x12")]
    segs = segments_of((tmp_path / "sup1" / "out" / dup[0]).read_bytes(), "~", "*")
    assert ["TA1", "000000101", "240502", "1015", "R", "025"] in segs


def test_a_rejected_interchange_can_be_resent_corrected_under_the_same_number(adapter: X12Adapter) -> None:
    assert adapter.receive(interchange(ACK_855, segs=4), "SUP1", "a")[0]["status"] == "rejected"
    assert adapter.receive(interchange(ACK_855), "SUP1", "b")[0]["status"] == "accepted"


# -- sending --------------------------------------------------------------------------------------------------
def test_850_envelope_counts_and_control_numbers(adapter: X12Adapter, tmp_path: Path) -> None:
    outcome = adapter.call("send", make_call(PO_850, idempotency_key="k-1"))
    body = (tmp_path / "sup1" / "out" / outcome.result["filename"]).read_bytes()
    segs = segments_of(body, "~", "*")
    assert body[:106].decode().count("*") == 16 and body.decode()[105] == "~"
    isa = segs[0]
    assert isa[6].strip() == "BUYERCO" and isa[8].strip() == "SUPPLIER1" and isa[13] == "000000001"
    assert segs[1][:3] == ["GS", "PO", "BUYERCO"] and segs[1][6] == "1"
    assert segs[2] == ["ST", "850", "0001"]
    assert ["PO1", "1", "120", "EA", "9.25", "PE", "VP", "W-100"] in segs
    assert ["PO1", "2", "2.5", "KG", "13.79", "PE", "VP", "W-200"] in segs
    se = next(s for s in segs if s[0] == "SE")
    assert se == ["SE", str(segs.index(se) - 2 + 1), "0001"]
    assert segs[-2] == ["GE", "1", "1"] and segs[-1] == ["IEA", "1", "000000001"]
    # The next order takes the next numbers; another partner has its own series.
    second = adapter.call("send", make_call(PO_850, idempotency_key="k-2"))
    other = adapter.call("send", make_call({**PO_850, "partner": "SUP2"}, idempotency_key="k-3"))
    assert second.reference == "000000002" and other.reference == "000000001"
    # A retry of the first delivery writes the very same bytes (same numbers, same time).
    again = adapter.call("send", make_call(PO_850, idempotency_key="k-1"))
    assert again.reference == "000000001"
    assert (tmp_path / "sup1" / "out" / again.result["filename"]).read_bytes() == body


def test_control_numbers_survive_a_restart_in_the_journal(tmp_path: Path) -> None:
    journal = Journal(f"sqlite:///{tmp_path / 'journal.db'}")
    try:
        references = []
        for run in range(2):
            instance = X12Adapter("suppliers_x12", settings(tmp_path))
            instance.bind_store(journal.adapter_store("suppliers_x12"))
            instance.open()
            references.append(instance.call("send", make_call(PO_850, idempotency_key=f"run-{run}")).reference)
            instance.close()
        assert references == ["000000001", "000000002"]
    finally:
        journal.close()


@pytest.mark.parametrize(("payload", "message"), [
    ({**PO_850, "partner": "NOBODY"}, "not a configured trading partner"),
    ({**PO_850, "document": "810"}, "not one this adapter writes"),
    ({**PO_850, "segments": [["beg", "x"]]}, "not a segment tag"),
    ({**PO_850, "segments": [["BEG", "a*b"]]}, "contains the element separator"),
    ({**PO_850, "segments": [["ST", "850", "1"]]}, "envelope segment"),
    ({**PO_850, "segments": []}, "holds no segment"),
])
def test_bad_outbound_payloads_are_permanent_errors(adapter: X12Adapter, payload: Any, message: str) -> None:
    with pytest.raises(PermanentError, match=message):
        adapter.call("send", make_call(payload))


# -- acknowledgements of what we sent ---------------------------------------------------------------------------
def _997(group: str, status: str, control: str = "000000500") -> bytes:
    return interchange(["ST*997*0001", "AK1*PO*" + group, "AK2*850*0001", f"AK5*{status}",
                        f"AK9*{status}*1*1*{1 if status == 'A' else 0}"], control=control)


def test_a_997_settles_the_awaiting_interchange(adapter: X12Adapter, tmp_path: Path) -> None:
    adapter.call("send", make_call(PO_850, idempotency_key="k-1"))
    assert [n for n, _ in adapter.store.items("awaiting:")] == ["awaiting:x12:SUP1:000000001"]
    (tmp_path / "sup1" / "in").mkdir(parents=True, exist_ok=True)
    (tmp_path / "sup1" / "in" / "ack-1.x12").write_bytes(_997("1", "A"))
    result = adapter.poll("received", None)
    assert [p["document"] for _, p in result.records] == ["997"]
    assert adapter.store.items("awaiting:") == []
    assert adapter.store.get("ack:SUP1:000000001") is not None
    assert not [f for f in files(tmp_path / "sup1" / "out") if "_997" in f], "a 997 is not acknowledged"


def test_a_negative_997_marks_the_interchange_for_the_operator(adapter: X12Adapter) -> None:
    adapter.call("send", make_call(PO_850, idempotency_key="k-1"))
    adapter.receive(_997("1", "R"), "SUP1", "ack")
    ((_, value),) = adapter.store.items("awaiting:")
    assert '"overdue": true' in value and "rejected by the partner" in value
    assert not adapter.health().ok


def test_unacknowledged_interchanges_are_resent_then_reported(tmp_path: Path) -> None:
    instance = X12Adapter("x", settings(tmp_path, ack_timeout=60, ack_retries=1))
    instance.open()
    first = instance.call("send", make_call(PO_850, idempotency_key="k-1"))
    sent = (tmp_path / "sup1" / "out" / first.result["filename"]).read_bytes()
    (tmp_path / "sup1" / "out" / first.result["filename"]).unlink()
    assert instance.resend_unacknowledged() == []  # not due yet
    entry = instance.ledger.awaiting()[0]
    (resent,) = instance.resend_unacknowledged(now=entry.sent_at + 61)
    assert resent.attempts == 2
    assert (tmp_path / "sup1" / "out" / first.result["filename"]).read_bytes() == sent  # the same interchange again
    assert instance.resend_unacknowledged(now=entry.sent_at + 200) == []
    (late,) = instance.ledger.awaiting()
    assert late.overdue and "no 997 after 2 sends" in late.detail


def test_two_stations_exchange_an_order_and_its_997(tmp_path: Path) -> None:
    """Buyer and supplier, each an x12 system, on one shared pair of folders: the supplier's poll reads the 850 and
    answers with a 997; the buyer's poll reads the 997 and nothing is left awaiting."""
    link = {"kind": "directory", "outbox": str(tmp_path / "to-supplier"), "inbox": str(tmp_path / "to-buyer")}
    back = {"kind": "directory", "outbox": str(tmp_path / "to-buyer"), "inbox": str(tmp_path / "to-supplier")}
    buyer = X12Adapter("buyer", {"our_id": "BUYERCO", "partners": {"SUP1": {"id": "SUPPLIER1", "transport": link}}})
    supplier = X12Adapter("supplier", {"our_id": "SUPPLIER1",
                                       "partners": {"BUYER": {"id": "BUYERCO", "transport": back}}})
    buyer.open()
    supplier.open()
    buyer.call("send", make_call(PO_850, idempotency_key="po-1"))
    received = supplier.poll("received", None)
    assert [(p["document"], p["status"]) for _, p in received.records] == [("850", "accepted")]
    assert received.records[0][1]["body"]["BEG"]["BEG03"] == "PO-6112"
    answered = buyer.poll("received", None)
    assert [p["document"] for _, p in answered.records] == ["997"]
    assert buyer.store.items("awaiting:") == []


# -- the push seam (AS2) ----------------------------------------------------------------------------------------
def test_pushed_documents_go_through_the_same_receive(adapter: X12Adapter) -> None:
    record(adapter, "SUP1")
    (payload,) = adapter.webhook("pushed", push_request(interchange(ACK_855)))
    assert payload["document"] == "855" and payload["partner"] == "SUP1"
    answer = adapter.webhook_answer("pushed", push_request(b"x"), 202, "accepted", "", ["e1"])
    assert answer is not None and answer.body == b"receipt 202 accepted"


class TestX12Contract(AdapterContract):
    @pytest.fixture
    def adapter_factory(self) -> Any:
        return lambda s: X12Adapter("suppliers_x12", s)

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
        return [{"partners": good_settings["partners"]},                      # our_id missing
                {**good_settings, "partners": {}},
                {**good_settings, "partners": {"P": {**partner, "transport": {"kind": "pigeon"}}}},
                {**good_settings, "partners": {"P": {**partner, "separators": {"element": "**"}}}}]

    def arrange_success(self, adapter: Adapter) -> tuple[str, Any]:
        self.recorder = record(adapter, "SUP1")
        return "send", PO_850

    def arrange_transient(self, adapter: Adapter) -> tuple[str, Any]:
        return "send", {**PO_850, "partner": "DOWN"}

    def arrange_permanent(self, adapter: Adapter) -> tuple[str, Any]:
        return "send", {**PO_850, "segments": [["BEG", "bad*value"]]}

    def observed_idempotency_key(self, adapter: Adapter) -> str | None:
        return self.recorder.sent[-1].message_id

    def arrange_webhook(self, adapter: Adapter) -> tuple[str, WebhookRequest, WebhookRequest]:
        record(adapter, "SUP1")
        body = interchange(ACK_855)
        return "pushed", push_request(body), push_request(body, forged=True)

    def arrange_poll(self, adapter: Adapter) -> str:
        self.inbox.mkdir(parents=True, exist_ok=True)
        (self.inbox / "855-1.x12").write_bytes(interchange(ACK_855))
        return "received"


def test_an_interchange_for_someone_else_is_refused_with_ta1_008(adapter: X12Adapter, tmp_path: Path) -> None:
    (payload,) = adapter.receive(interchange(ACK_855, receiver="OTHERCO"), "SUP1", "misrouted")
    assert payload["status"] == "rejected" and "addressed to 'OTHERCO'" in payload["reason"]
    segs = segments_of((tmp_path / "sup1" / "out" / files(tmp_path / "sup1" / "out")[0]).read_bytes(), "~", "*")
    assert ["TA1", "000000101", "240502", "1015", "R", "008"] in segs


def test_an_id_longer_than_the_isa_field_is_refused(tmp_path: Path) -> None:
    config = settings(tmp_path)
    config["our_id"] = "A-VERY-LONG-SENDER-ID"
    instance = X12Adapter("x", config)
    instance.open()
    with pytest.raises(PermanentError, match="does not fit ISA's 15 characters"):
        instance.call("send", make_call(PO_850))


def test_a_group_with_one_good_and_one_bad_set_is_partly_accepted(adapter: X12Adapter, tmp_path: Path) -> None:
    head = ("ISA*00*          *00*          *ZZ*SUPPLIER1      *ZZ*BUYERCO        *240502*1015*U*00401*000000160*0*P*>~"
            "GS*PR*SUPPLIER1*BUYERCO*20240502*1015*16*X*004010~")
    good = "ST*855*0001~BAK*00*AC*PO-1*20240502~PO1*1*5*EA~ACK*IA*5*EA~CTT*1~SE*6*0001~"
    bad = "ST*855*0002~BAK*00*AC*PO-2*20240502~CTT*0~SE*9*0002~"
    raw = (head + good + bad + "GE*2*16~IEA*1*000000160~").encode()
    ok, refused = adapter.receive(raw, "SUP1", "two")
    assert (ok["status"], refused["status"]) == ("accepted", "rejected")
    segs = segments_of((tmp_path / "sup1" / "out" / files(tmp_path / "sup1" / "out")[0]).read_bytes(), "~", "*")
    assert ["AK5", "A"] in segs and ["AK5", "R", "4"] in segs and ["AK9", "P", "2", "2", "1"] in segs


def test_a_sender_is_found_by_id_and_by_its_qualifier_only_when_one_is_configured(tmp_path: Path) -> None:
    raw = (SAMPLES / "nodex12_850.edi").read_bytes()  # ISA05/06 = 12/4405197800
    loose = X12Adapter("a", {"our_id": "999999999", "partners": {"P": {"id": "4405197800",
                                                                      "transport": folders(tmp_path, "a")}}})
    assert loose.receive(raw, None, "f")[0]["status"] == "accepted"
    strict = X12Adapter("b", {"our_id": "999999999", "partners": {"P": {"id": "4405197800", "qualifier": "01",
                                                                       "transport": folders(tmp_path, "b")}}})
    (refused,) = strict.receive(raw, None, "f")
    assert refused["status"] == "rejected" and "is not a configured trading partner" in refused["reason"]
