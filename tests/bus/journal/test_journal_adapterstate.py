"""The adapters' durable state in the journal: counters never repeat across processes, values survive a reopen."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from adapters.base import MemoryAdapterStore
from bus.journal import Journal


def _take(url: str, n: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    journal = Journal(url)
    store = journal.adapter_store("edi")
    out.put([store.next_number("isa:ACME") for _ in range(n)])
    journal.close()


def test_counters_are_unique_across_processes_and_survive_a_reopen(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'j.db'}"
    Journal(url).close()
    out: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    procs = [multiprocessing.get_context("fork").Process(target=_take, args=(url, 25, out)) for _ in range(3)]
    for p in procs:
        p.start()
    taken = [n for _ in procs for n in out.get(timeout=60)]
    for p in procs:
        p.join(timeout=30)
    assert sorted(taken) == list(range(1, 76))
    journal = Journal(url)
    store = journal.adapter_store("edi")
    assert store.next_number("isa:ACME") == 76
    assert journal.adapter_store("other").next_number("isa:ACME") == 1  # per system
    store.put("pending:000000076", '{"sent": 1}')
    store.put("pending:000000077", "x")
    store.put("pending:000000077", None)
    assert store.items("pending:") == [("pending:000000076", '{"sent": 1}')]
    assert store.get("pending:000000077") is None
    journal.close()


def test_wrap_returns_to_start() -> None:
    for store in (MemoryAdapterStore(),):
        assert [store.next_number("c", start=1, wrap=3) for _ in range(5)] == [1, 2, 3, 1, 2]


def test_journal_store_wraps_too(tmp_path: Path) -> None:
    journal = Journal(f"sqlite:///{tmp_path / 'j.db'}")
    store = journal.adapter_store("x")
    assert [store.next_number("c", start=1, wrap=3) for _ in range(5)] == [1, 2, 3, 1, 2]
    journal.close()
