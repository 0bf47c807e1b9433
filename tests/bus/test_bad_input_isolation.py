"""One bad request never fails its neighbours: input is checked before it joins a group commit (issue 12, 1-2).

Over real loopback HTTP into a real runtime (SQLite journal, embedded queue): deeply nested JSON, XML in an
unknown encoding and undecodable bodies are 4xx with a reason while good requests sent at the same moment are
all accepted; and a group commit that fails for one submission still commits the others.
"""

from __future__ import annotations

import asyncio
import textwrap
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from bus.envelope import Event
from bus.errors import DecodeError
from bus.ingest import Ingestor
from bus.journal import Journal
from bus.limits import MAX_DEPTH, InputRejected, check_event, check_payload
from bus.queue.embedded import EmbeddedQueue
from bus.runtime import Runtime, RuntimeOptions
from bus.xmldict import xml_to_dict


def nested(levels: int) -> bytes:
    return b'{"a":' * levels + b"1" + b"}" * levels


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    routes = tmp_path / "routes.yaml"
    routes.write_text(textwrap.dedent("""\
        systems:
          vendor:
            adapter: webhook
            settings: {signature: {scheme: token, secret: s3cr3t-token}, content_type: json, key: id}
          xmlvendor:
            adapter: webhook
            settings: {signature: {scheme: token, secret: s3cr3t-token}, content_type: xml}
          sink: {adapter: stub}
        routes:
          - {name: json_in, from: vendor.received, to: [sink.store]}
          - {name: xml_in, from: xmlvendor.received, to: [sink.store]}
        """))
    rt = Runtime(routes, journal=f"sqlite:///{tmp_path}/j.sqlite",
                 options=RuntimeOptions(workers=1, port=0, triggers=False))
    rt.start()
    yield rt
    rt.stop()


def test_deep_json_is_400_and_neighbours_in_the_same_group_are_accepted(runtime: Runtime) -> None:
    url = f"http://127.0.0.1:{runtime.port}/hooks/vendor/received/s3cr3t-token"
    statuses: list[tuple[str, int, str]] = []
    lock = threading.Lock()

    def post(kind: str, body: bytes) -> None:
        with httpx.Client(timeout=10) as client:
            r = client.post(url, content=body, headers={"content-type": "application/json"})
        with lock:
            statuses.append((kind, r.status_code, r.json().get("error", "")))

    # 300 levels parse (orjson reads 1024) but cannot be stored: it used to fail the whole group with 503
    threads = [threading.Thread(target=post, args=("deep", nested(300))) for _ in range(10)]
    threads += [threading.Thread(target=post, args=("good", b'{"id": %d}' % n)) for n in range(60)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    good = [s for s in statuses if s[0] == "good"]
    deep = [s for s in statuses if s[0] == "deep"]
    assert len(good) == 60 and {s[1] for s in good} == {202}
    assert len(deep) == 10 and {(s[1], s[2]) for s in deep} == {(400, "too_deep")}
    assert runtime.journal.status_counts()  # the journal still answers


@pytest.mark.parametrize(("body", "reason"), [
    (b'<?xml version="1.0" encoding="klingon"?><a>1</a>', "malformed_body"),
    (b'<?xml version="1.0" encoding="utf-7"?><a>+AGE-</a>', "malformed_body"),
    (b"<a>\xff\xfe</a>", "malformed_body"),
    (b"<a>" * (MAX_DEPTH + 5) + b"</a>" * (MAX_DEPTH + 5), "malformed_body"),
])
def test_undecodable_xml_is_4xx_never_500(runtime: Runtime, body: bytes, reason: str) -> None:
    url = f"http://127.0.0.1:{runtime.port}/hooks/xmlvendor/received/s3cr3t-token"
    r = httpx.post(url, content=body, headers={"content-type": "application/xml"}, timeout=10)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == reason
    assert "encoding" in r.json()["detail"] or "deep" in r.json()["detail"] or "malformed" in r.json()["detail"]


def test_xml_unknown_encoding_is_a_decode_error_naming_the_source() -> None:
    with pytest.raises(DecodeError, match=r"^vendor\.xml:1: unsupported or wrong character encoding"):
        xml_to_dict(b'<?xml version="1.0" encoding="klingon"?><a/>', source="vendor.xml")


@pytest.mark.parametrize(("event", "reason"), [
    (Event(type="t", source="s", data=[[[[]]]], key="k\x00"), "bad_attribute"),
    (Event(type="t", source="s", data=1, key="k" * 2000), "key_too_long"),
    (Event(type="t", source="s", data=1, sequence=2**70), "bad_attribute"),
    (Event(type="t", source="s", data={1.5j}), "unencodable"),
    (Event(type="t", source="s", data="\ud800"), "unencodable"),
])
def test_events_the_stores_would_refuse_are_refused_before_storing(event: Event, reason: str) -> None:
    with pytest.raises(InputRejected) as info:
        check_event(event)
    assert info.value.reason == reason


def test_payload_depth_limit() -> None:
    check_payload(orjson_loads(nested(MAX_DEPTH - 1)))
    with pytest.raises(InputRejected, match="deeper than"):
        check_payload(orjson_loads(nested(MAX_DEPTH + 1)))


def orjson_loads(raw: bytes) -> object:
    import orjson

    return orjson.loads(raw)


class PoisonJournal(Journal):
    """A journal whose store refuses one event id, as a database refuses a row it cannot take."""

    poison = "poison"

    def record_events(self, events: Sequence[tuple[Event, str]], **kw: Any) -> None:
        if any(e.id == self.poison for e, _ in events):
            raise RuntimeError("row refused by the database")
        super().record_events(events, **kw)


def test_a_group_that_fails_for_one_submission_commits_the_others(tmp_path: Path) -> None:
    journal = PoisonJournal(f"sqlite:///{tmp_path}/j.sqlite")
    queue = EmbeddedQueue(journal.engine)
    ingestor = Ingestor(journal, queue, max_wait=0.05)
    good = [Event(type="t", source="s", data={"n": n}) for n in range(40)]
    bad = Event(type="t", source="s", data={}, id="poison")

    async def main() -> list[BaseException | None]:
        calls = [ingestor.ingest_async([(e, "webhook")]) for e in good[:20]]
        calls.append(ingestor.ingest_async([(bad, "webhook")]))
        calls += [ingestor.ingest_async([(e, "webhook")]) for e in good[20:]]
        return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(main())
    ingestor.close()
    assert [type(r).__name__ for r in results].count("RuntimeError") == 1
    assert isinstance(results[20], RuntimeError)
    assert all(journal.get_event(e.id) is not None for e in good)
    assert queue.depth()["ready"] == 40
    journal.close()


def test_a_bad_event_is_refused_to_its_caller_and_never_joins_a_group(tmp_path: Path) -> None:
    journal = Journal(f"sqlite:///{tmp_path}/j.sqlite")
    queue = EmbeddedQueue(journal.engine)
    ingestor = Ingestor(journal, queue)
    deep = Event(type="t", source="s", data=orjson_loads(nested(300)))
    with pytest.raises(InputRejected, match="nested deeper"):
        ingestor.ingest([(deep, "send")])
    ok = Event(type="t", source="s", data={"fine": True})
    ingestor.ingest([(ok, "send")])
    ingestor.close()
    assert journal.get_event(ok.id) == ok and journal.get_event(deep.id) is None
    journal.close()
