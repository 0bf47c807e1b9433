"""The local-folder transport: atomic writes, ordered fetch after a watermark, settle moves a file aside."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.b2b import DirectoryTransport, OutboundDocument, Transport, open_transport, transport_schema
from bus.errors import ConfigError, PermanentError


def test_send_fetch_settle_round_trip(tmp_path: Path) -> None:
    transport = open_transport({"kind": "directory", "outbox": str(tmp_path / "out"), "inbox": str(tmp_path / "in")})
    assert isinstance(transport, Transport)
    transport.open()
    receipt = transport.send(OutboundDocument(b"ISA*...", "po-1.x12", "application/edi-x12", "m-1"))
    assert Path(receipt.reference).read_bytes() == b"ISA*..."
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["po-1.x12"]  # no temporary file left behind
    # A retry of the same document after a lost answer is not an error.
    assert transport.send(OutboundDocument(b"ISA*...", "po-1.x12", "application/edi-x12", "m-1")).detail
    for name in ("b.edi", "a.edi", ".part-x"):
        (tmp_path / "in" / name).write_bytes(name.encode())
    docs, mark = transport.fetch(None)
    assert [d.filename for d in docs] == ["a.edi", "b.edi"] and mark == "b.edi"
    transport.settle(docs[0])
    assert transport.fetch("a.edi")[0][0].filename == "b.edi"
    assert (tmp_path / "in" / "done" / "a.edi").exists()


def test_a_path_for_a_file_name_is_refused(tmp_path: Path) -> None:
    transport = DirectoryTransport({"kind": "directory", "outbox": str(tmp_path)})
    transport.open()
    with pytest.raises(PermanentError):
        transport.send(OutboundDocument(b"x", "..", "text/plain", "m"))


def test_unknown_kind_is_a_config_error_naming_the_kinds() -> None:
    with pytest.raises(ConfigError, match="directory"):
        open_transport({"kind": "carrier-pigeon"})
    assert "directory" in transport_schema()["properties"]["kind"]["enum"]
