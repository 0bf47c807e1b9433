"""An interchange awaiting its acknowledgement shows in `ironbus status` (read from the journal's adapter state,
without the core knowing EDI), and leaves it once the 997 arrives."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import structlog

import cli
from adapters.x12 import X12Adapter
from bus.journal import Journal
from bus.testing import make_call
from tests.helpers.edi import folders


@pytest.fixture(autouse=True)
def logs_outlive_capsys(monkeypatch: pytest.MonkeyPatch) -> None:
    """cli.main points structlog at the stderr of the moment (closed after a capsys test) and caches loggers:
    point them at the process's own stderr, as tests/bus/test_followups.py does."""
    from bus import logs

    configure = logs.configure_logging

    def configure_logging(level: str = "info", fmt: str = "console") -> None:
        configure(level, fmt)
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.__stderr__))

    monkeypatch.setattr(logs, "configure_logging", configure_logging)


PO = {"partner": "SUP1", "document": "850", "segments": [["BEG", "00", "SA", "PO-1", None, "20240501"], ["CTT", 1]]}


def test_status_lists_unacknowledged_interchanges(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'journal.db'}"
    monkeypatch.delenv("IRONBUS_BROKER", raising=False)
    journal = Journal(url)
    adapter = X12Adapter("suppliers_x12", {"our_id": "BUYERCO", "partners": {
        "SUP1": {"id": "SUPPLIER1", "transport": folders(tmp_path, "sup1")}}})
    adapter.bind_store(journal.adapter_store("suppliers_x12"))
    adapter.open()
    adapter.call("send", make_call(PO, idempotency_key="k-1"))
    adapter.store.put("ctl:ignored", "1")  # other adapter state is not listed
    journal.close()

    assert cli.main(["status", "--journal", url]) == 0
    out = capsys.readouterr().out
    assert "awaiting acknowledgement: 1" in out
    assert "suppliers_x12" in out and "x12:SUP1:000000001" in out and "850 to SUP1, awaiting 997" in out

    assert cli.main(["status", "--journal", url, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [(a["system"], a["name"], a["overdue"]) for a in doc["awaiting"]] == [
        ("suppliers_x12", "x12:SUP1:000000001", False)]

    ack = (b"ISA*00*          *00*          *ZZ*SUPPLIER1      *ZZ*BUYERCO        *240502*1015*U*00401*000000777*0*P*>~"
           b"GS*FA*SUPPLIER1*BUYERCO*20240502*1015*9*X*004010~ST*997*0001~AK1*PO*1~AK9*A*1*1*1~SE*4*0001~GE*1*9~"
           b"IEA*1*000000777~")
    adapter.receive(ack, "SUP1", "ack")
    adapter.close()
    assert cli.main(["status", "--journal", url]) == 0
    assert "awaiting acknowledgement" not in capsys.readouterr().out
