"""Safe XML -> dict conversion used for cXML and other XML payloads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bus.errors import DecodeError
from bus.xmldict import xml_to_dict

SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "samples"


def test_attributes_text_children_and_repeats() -> None:
    doc = xml_to_dict(b'<r a="1"><m currency="USD"> 1.22 </m><u>EA</u><e/><i>x</i><i>y</i></r>')
    assert doc == {"r": {"@a": "1", "m": {"@currency": "USD", "#text": "1.22"}, "u": "EA", "e": None,
                         "i": ["x", "y"]}}


def test_mixed_text_beside_children_is_kept_and_whitespace_between_children_dropped() -> None:
    assert xml_to_dict("<r>\n  hello <b>1</b>\n</r>") == {"r": {"b": "1", "#text": "hello"}}


def test_force_list_makes_a_single_element_a_list() -> None:
    doc = xml_to_dict(b"<r><item>1</item><other>2</other></r>", force_list=["item"])
    assert doc == {"r": {"item": ["1"], "other": "2"}}


def test_prefixed_names_and_cdata_and_comments() -> None:
    doc = xml_to_dict('<s:E xmlns:s="urn:x" xml:lang="en"><!-- hi --><s:B><![CDATA[<raw> & text]]></s:B></s:E>')
    assert doc == {"s:E": {"@xmlns:s": "urn:x", "@xml:lang": "en", "s:B": "<raw> & text"}}


def test_predefined_and_character_entities_are_expanded() -> None:
    assert xml_to_dict("<r>&lt;a&gt; &amp; &#233;</r>") == {"r": "<a> & é"}


def test_utf8_bytes_and_encoding_declaration() -> None:
    doc = xml_to_dict('<?xml version="1.0" encoding="ISO-8859-1"?><r>caf\xe9</r>'.encode("latin-1"))
    assert doc == {"r": "café"}


def test_remote_doctype_is_allowed_but_not_fetched() -> None:
    # cXML always names a remote DTD; 192.0.2.1 (TEST-NET-1) would hang or fail if it were fetched.
    doc = xml_to_dict(b'<!DOCTYPE cXML SYSTEM "http://192.0.2.1/cXML.dtd"><cXML payloadID="p"/>')
    assert doc == {"cXML": {"@payloadID": "p"}}


def test_doctype_can_be_forbidden() -> None:
    with pytest.raises(DecodeError, match="DOCTYPE"):
        xml_to_dict(b'<!DOCTYPE r SYSTEM "r.dtd"><r/>', forbid_dtd=True)


def test_entity_declarations_are_refused_billion_laughs() -> None:
    bomb = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
]>
<lolz>&lol2;</lolz>"""
    with pytest.raises(DecodeError, match=r"bomb\.xml:3:.*entity declaration 'lol'"):
        xml_to_dict(bomb, source="bomb.xml")


def test_external_entity_is_refused_xxe(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET")
    xxe = f'<!DOCTYPE r [<!ENTITY x SYSTEM "file://{secret}">]><r>&x;</r>'
    with pytest.raises(DecodeError, match="entity declaration 'x'") as err:
        xml_to_dict(xxe)
    assert "TOP SECRET" not in str(err.value)


def test_parameter_entity_is_refused() -> None:
    with pytest.raises(DecodeError, match="entity declaration"):
        xml_to_dict(b'<!DOCTYPE r [<!ENTITY % p SYSTEM "http://192.0.2.1/p.dtd"> %p;]><r/>')


def test_entity_from_unread_external_dtd_is_an_error_not_silently_dropped() -> None:
    with pytest.raises(DecodeError, match=r"in\.xml:2:.*undefined entity &nbsp;"):
        xml_to_dict(b'<!DOCTYPE r SYSTEM "r.dtd"><r>\nA&nbsp;B</r>', source="in.xml")


@pytest.mark.parametrize(("body", "where", "what"), [
    (b"<a><b></a>", "x.xml:1:9", "mismatched tag"),
    (b"<a>\n  <b x='1' x='2'/></a>", "x.xml:2:", "duplicate attribute"),
    (b"", "x.xml:1:1", "no element found"),
    (b"<a/><b/>", "x.xml:1:5", "junk after document element"),
    (b"<a>&undefined;</a>", "x.xml:1:4", "undefined entity"),
])
def test_malformed_xml_names_source_line_and_column(body: bytes, where: str, what: str) -> None:
    with pytest.raises(DecodeError) as err:
        xml_to_dict(body, source="x.xml")
    assert where in str(err.value) and what in str(err.value)


def test_size_and_depth_limits() -> None:
    with pytest.raises(DecodeError, match="larger than the limit of 10"):
        xml_to_dict(b"<a>0123456789</a>", max_bytes=10)
    with pytest.raises(DecodeError, match="deeper than 3"):
        xml_to_dict(b"<a><b><c><d/></c></b></a>", max_depth=3)
    assert xml_to_dict(b"<a><b><c/></b></a>", max_depth=3) == {"a": {"b": {"c": None}}}


def test_real_cxml_confirmation_request() -> None:
    doc = xml_to_dict((SAMPLES / "cxml" / "dnas_ConfirmationRequest_detail_accept.xml").read_bytes())
    request = doc["cXML"]["Request"]["ConfirmationRequest"]
    assert doc["cXML"]["@timestamp"] == "2021-02-23T09:15:50-0600"
    assert request["ConfirmationHeader"]["@type"] == "detail"
    assert request["OrderReference"]["@orderID"] == "269765"
    items = request["ConfirmationItem"]
    assert [i["@lineNumber"] for i in items] == ["1", "2"]
    assert items[1]["ConfirmationStatus"]["ItemIn"]["ItemID"]["SupplierPartID"] == "2271092"
    assert items[0]["ConfirmationStatus"]["ItemIn"]["ItemDetail"]["UnitPrice"]["Money"] == {
        "@currency": "USD", "#text": "0.5"}


@pytest.mark.parametrize("converted", sorted((SAMPLES / "cxml").glob("*.xml.json")), ids=lambda p: p.name)
def test_converted_fixtures_match_the_xml(converted: Path) -> None:
    # Mapping tests read these JSON forms; they must stay exactly what xml_to_dict makes of the XML.
    xml = converted.with_suffix("")
    assert json.loads(converted.read_text(encoding="utf-8")) == xml_to_dict(xml.read_bytes(), source=str(xml))


def test_an_unknown_encoding_is_a_decode_error() -> None:
    from bus.errors import DecodeError
    from bus.xmldict import xml_to_dict

    with pytest.raises(DecodeError, match="unsupported or wrong character encoding"):
        xml_to_dict(b'<?xml version="1.0" encoding="UTF98"?><a/>', source="x.xml")
