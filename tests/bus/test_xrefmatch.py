"""``xref match``: link records that exist in several systems by business keys, then by names, with confidence."""

from __future__ import annotations

from adapters.base import MasterRecord
from bus.journal.records import XrefRow
from bus.ownership import EntityOwnership
from bus.xrefmatch import SURE, match_records, normalise_name

CUSTOMER = EntityOwnership("customer", "crm", ("crm", "scm", "erp"), "customer")


def rec(id: str, code: str | None, name: str, **attributes: object) -> MasterRecord:
    return MasterRecord(id, code, name, {"name": name, **attributes})


def test_names_are_normalised_for_accents_case_punctuation_and_legal_forms() -> None:
    assert normalise_name("Société Générale S.A.") == "societe generale"
    assert normalise_name("  ACME, Inc. ") == normalise_name("acme") == "acme"
    assert normalise_name("Bolt & Nut Supplies Ltd") == "bolt and nut supplies"


def test_business_keys_are_sure_names_are_proposals_and_links_are_skipped() -> None:
    held = {
        "crm": [rec("1", "C-ACME", "ACME Corporation", vat_id="BE 0123.456.789"),
                rec("2", "C-GLOBEX", "Globex", email="buy@globex.example"),
                rec("3", "C-INITECH", "Initech Software Ltd"),
                rec("4", "C-UMBRELLA", "Umbrella Pharmaceuticals")],
        "scm": [rec("10", "C-ACME", "Acme Corp"),                             # same code
                rec("11", None, "globex inc", email="BUY@globex.example "),   # same e-mail, other case
                rec("12", None, "INITECH software"),                          # same normalised name
                rec("13", None, "Umbrela Pharmaceutical"),                    # similar name
                rec("14", None, "Hooli")],                                    # nothing alike
        "erp": [rec("e1", None, "Acme", vat_id="be0123456789"),               # same VAT, other formatting
                rec("e2", "C-GLOBEX", "Globex")],                             # already linked
    }
    links = [XrefRow("customer", "erp", "e2", "C-GLOBEX")]
    proposals = {(p.system, p.system_id): p for p in match_records("customer", held, links, CUSTOMER)}
    assert set(proposals) == {("scm", "10"), ("scm", "11"), ("scm", "12"), ("scm", "13"), ("erp", "e1")}
    acme = proposals[("scm", "10")]
    assert (acme.canonical_id, acme.owner_id, acme.confidence, acme.sure) == ("C-ACME", "1", 1.0, True)
    assert acme.reason == "same code 'c-acme'"
    assert proposals[("erp", "e1")].reason == "same vat_id 'be0123456789'" and proposals[("erp", "e1")].sure
    assert proposals[("scm", "11")].canonical_id == "C-GLOBEX" and proposals[("scm", "11")].sure
    initech = proposals[("scm", "12")]
    assert (initech.canonical_id, initech.confidence, initech.sure) == ("C-INITECH", 0.85, False)
    umbrella = proposals[("scm", "13")]
    assert umbrella.canonical_id == "C-UMBRELLA" and 0.7 < umbrella.confidence < SURE
    assert [r.system for r in acme.rows()] == ["crm", "scm"]


def test_duplicates_in_the_owner_are_never_sure() -> None:
    held = {"crm": [rec("1", None, "Acme", email="a@x"), rec("2", None, "ACME", email="a@x")],
            "scm": [rec("9", None, "Acme", email="a@x")]}
    [proposal] = match_records("customer", held, [], CUSTOMER)
    assert not proposal.sure and "2 records" in proposal.reason
