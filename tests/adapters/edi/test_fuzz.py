"""Whatever bytes arrive, receive() answers with payloads (rejected ones for garbage) and never raises: a broken
file must not block a partner's poll for ever. Mutations of the public samples and the spec-built documents."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.edifact import EdifactAdapter
from adapters.x12 import X12Adapter

FIXTURES = Path(__file__).parents[2] / "fixtures"
SAMPLES = sorted((FIXTURES / "samples" / "edi").glob("*/*")) + sorted((FIXTURES / "b2b" / "edi").glob("*"))
DOCUMENTS = [p.read_bytes() for p in SAMPLES]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    doc = bytearray(draw(st.sampled_from(DOCUMENTS)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(doc)))
        kind = draw(st.sampled_from(["cut", "flip", "drop", "insert"]))
        if kind == "cut":
            del doc[at:]
        elif kind == "flip" and at < len(doc):
            doc[at] = draw(st.integers(0, 255))
        elif kind == "drop":
            del doc[at:at + draw(st.integers(1, 40))]
        else:
            doc[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(doc)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=mutated())
def test_receive_never_raises(tmp_path: Path, body: bytes) -> None:
    outbox = {"kind": "directory", "outbox": str(tmp_path / "out")}
    for adapter in (X12Adapter("x", {"our_id": "999999999", "partners": {"A": {"id": "4405197800",
                                                                              "transport": outbox}}}),
                    EdifactAdapter("e", {"our_id": "WBDZDD", "partners": {"A": {"id": "12345678",
                                                                                "always_contrl": True,
                                                                                "transport": outbox}}})):
        payloads = adapter.receive(body, None, "fuzz")
        assert payloads and all(p["status"] in ("accepted", "rejected") for p in payloads)
        assert all(p.get("reason") for p in payloads if p["status"] == "rejected")
