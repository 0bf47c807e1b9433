"""Dead letters, cross references and poll watermarks."""

from __future__ import annotations

import time

import pytest

from bus.journal import DeadLetter, Journal, XrefRow


def test_dead_letters_filters_and_states(journal: Journal) -> None:
    journal.dead_letter([
        DeadLetter(body=b"\xff\xfe not json", reason="event body is not valid JSON"),
        DeadLetter(body=b"{}", reason="400 Bad Request: qty", event_id="e1", route="r1", target="scm.update",
                   attempts=1),
        DeadLetter(body=b"{}", reason="retries spent: 503", event_id="e2", route="r2", target="srm.create_po",
                   error_kind="transient", attempts=8),
    ])
    assert [d.event_id for d in journal.dead_letters()] == [None, "e1", "e2"]
    assert journal.dead_letters()[0].body == b"\xff\xfe not json"
    assert [d.event_id for d in journal.dead_letters(route="r2")] == ["e2"]
    assert [d.event_id for d in journal.dead_letters(target="scm.update")] == ["e1"]
    assert [d.event_id for d in journal.dead_letters(error="BAD REQUEST")] == ["e1"]
    assert journal.dead_letters(since=time.time() + 60) == []
    assert len(journal.dead_letters(limit=2)) == 2
    e2 = journal.dead_letters(route="r2")[0]
    assert journal.dead_letter_by_id(e2.id) == e2
    assert journal.dead_letter_by_id(10_000) is None
    assert journal.mark_dead_letters([e2.id], "retried") == 1
    assert [d.event_id for d in journal.dead_letters()] == [None, "e1"]
    assert [d.event_id for d in journal.dead_letters(state="retried")] == ["e2"]
    assert journal.status_counts()["dead_letters"] == 2
    with pytest.raises(ValueError, match="state 'gone'"):
        journal.mark_dead_letters([e2.id], "gone")


def test_xref_links_lookups_and_reverse(journal: Journal) -> None:
    xref = journal.xref
    assert xref.lookup("customer", "crm", "42") is None
    xref.link("customer", "C-1", "crm", "42")
    xref.link("customer", "C-1", "scm", "K-900")
    assert xref.lookup("customer", "crm", "42") == "C-1"
    assert xref.reverse("customer", "scm", "C-1") == "K-900"
    assert xref.reverse("customer", "srm", "C-1") is None
    assert xref.lookup("material", "crm", "42") is None  # entities are separate namespaces
    xref.link("customer", "C-2", "crm", "42")  # re-linking replaces
    assert xref.lookup("customer", "crm", "42") == "C-2"
    assert xref.import_rows([XrefRow("material", "crm", "7", "M-7"), XrefRow("material", "scm", "MAT7", "M-7")]) == 2
    assert [(r.system, r.system_id) for r in journal.xref_rows("material")] == [("crm", "7"), ("scm", "MAT7")]
    assert len(xref.rows()) == 4
    assert xref.unlink("material", "crm", "7") and not xref.unlink("material", "crm", "7")


def test_xref_is_shared_between_journal_instances(journal: Journal, journal_url: str) -> None:
    journal.xref.link("supplier", "S-1", "srm", "V100")
    other = Journal(journal_url)
    assert other.xref.reverse("supplier", "srm", "S-1") == "V100"
    other.close()


def test_watermarks_and_overlap_dedup(journal: Journal) -> None:
    assert journal.get_watermark("crm", "sale_changed") is None
    assert journal.filter_unseen("crm", "sale_changed", ["a", "b", "a"]) == ["a", "b"]
    journal.set_watermark("crm", "sale_changed", "2026-11-24T10:00:00", seen_keys=["a", "b"])
    journal.set_watermark("crm", "sale_changed", "2026-11-24T11:00:00", seen_keys=["b", "c"])
    assert journal.get_watermark("crm", "sale_changed") == "2026-11-24T11:00:00"
    assert journal.filter_unseen("crm", "sale_changed", ["c", "d", "a", "e"]) == ["d", "e"]
    assert journal.filter_unseen("crm", "other_trigger", ["a"]) == ["a"]
