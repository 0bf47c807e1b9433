"""The in-memory cross-reference store."""

from __future__ import annotations

import threading

from bus.xref import MemoryXref, XrefStore


def test_link_then_lookup_both_ways() -> None:
    store = MemoryXref()
    store.link("customer", "CUST-1", "crm", "42")
    assert store.lookup("customer", "crm", "42") == "CUST-1"
    assert store.reverse("customer", "crm", "CUST-1") == "42"


def test_unknown_ids_are_none() -> None:
    store = MemoryXref.from_dict({"customer": {"crm": {"42": "CUST-1"}}})
    assert store.lookup("customer", "crm", "43") is None
    assert store.lookup("customer", "scm", "42") is None
    assert store.lookup("material", "crm", "42") is None
    assert store.reverse("customer", "scm", "CUST-1") is None


def test_ids_are_strings_whatever_the_caller_passes() -> None:
    store = MemoryXref.from_dict({"material": {"crm": {7: "M-7"}}})
    assert store.lookup("material", "crm", "7") == "M-7"
    assert store.lookup("material", "crm", 7) == "M-7"  # type: ignore[arg-type]
    assert store.lookup("material", "crm", 7.0) == "M-7"  # type: ignore[arg-type]


def test_relinking_a_system_id_moves_it() -> None:
    store = MemoryXref()
    store.link("customer", "CUST-1", "crm", "42")
    store.link("customer", "CUST-2", "crm", "42")
    assert store.lookup("customer", "crm", "42") == "CUST-2"
    assert store.reverse("customer", "crm", "CUST-2") == "42"
    assert store.reverse("customer", "crm", "CUST-1") is None


def test_several_system_ids_may_share_a_canonical_id() -> None:
    store = MemoryXref()
    store.link("customer", "CUST-1", "crm", "42")
    store.link("customer", "CUST-1", "crm", "99")  # a duplicate merged in the CRM
    assert store.lookup("customer", "crm", "42") == "CUST-1"
    assert store.lookup("customer", "crm", "99") == "CUST-1"
    assert store.reverse("customer", "crm", "CUST-1") == "99"


def test_to_dict_round_trips() -> None:
    doc = {"customer": {"crm": {"42": "CUST-1"}, "scm": {"K-9": "CUST-1"}}, "material": {"crm": {"1": "M-1"}}}
    assert MemoryXref.from_dict(doc).to_dict() == doc


def test_memory_store_satisfies_the_protocol() -> None:
    assert isinstance(MemoryXref(), XrefStore)


def test_concurrent_links_are_all_kept() -> None:
    store = MemoryXref()

    def writer(worker: int) -> None:
        for i in range(500):
            store.link("material", f"M-{worker}-{i}", "crm", f"{worker}-{i}")

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(store.to_dict()["material"]["crm"]) == 8 * 500
    assert all(store.reverse("material", "crm", f"M-{w}-{i}") == f"{w}-{i}" for w in range(8) for i in range(500))
