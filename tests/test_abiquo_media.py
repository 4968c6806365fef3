"""Abiquo's two encodings (rehost.abiquo.media): JAXB's XML and the JSON shape, both ways."""

from __future__ import annotations

import pytest

from rehost.abiquo import media


def test_xml_roots_are_the_entities_names_not_the_media_types() -> None:
    assert media.encode_xml("virtualmachinestate", {"state": "OFF"}).endswith(
        b"<virtualmachinestate><state>OFF</state></virtualmachinestate>")
    body = media.encode_xml("machineloadrule", {"cpuLoadPercentage": 1, "ramLoadPercentage": 1,
                                                "links": [{"rel": "machine", "href": "/m/1",
                                                           "type": "", "title": ""}]})
    assert body.endswith(b'<machineLoadRule><link rel="machine" href="/m/1" />'
                         b"<cpuLoadPercentage>1</cpuLoadPercentage>"
                         b"<ramLoadPercentage>1</ramLoadPercentage></machineLoadRule>")
    assert media.decode_xml(media.encode_xml("machinestate", {"state": "MANAGED"})) == (
        "MachineState", {"state": "MANAGED", "links": []})


def test_a_collection_both_ways() -> None:
    page = {"links": [{"rel": "next", "href": "/m?startwith=1", "type": "", "title": ""}],
            "collection": [{"id": 1, "name": "c5-a", "enabled": True, "password": None,
                            "datastores": {"collection": [{"name": "ds"}]},
                            "links": [{"rel": "edit", "href": "/m/1", "type": "",
                                       "title": ""}]}],
            "totalSize": 3}
    xml = media.encode_xml("machines", page)
    assert b"<password" not in xml  # a null field is left out, as JAXB does
    root, back = media.decode_xml(xml)
    assert root == "machines"
    assert back["totalSize"] == 3 and back["links"][0]["rel"] == "next"
    item = back["collection"][0]
    assert (item["id"], item["name"], item["enabled"]) == ("1", "c5-a", "true")
    assert item["datastores"]["collection"] == [{"name": "ds", "links": []}]
    assert media.decode(xml, "application/vnd.abiquo.machines+xml; version=2.4") == back
    assert media.decode(media.encode("machines", page, "json"), "application/json") == page


@pytest.mark.parametrize(("ctype", "body", "fmt"), [
    ("application/vnd.abiquo.machine+xml; version=2.4", b"", "xml"),
    ("application/vnd.abiquo.machine+json; version=2.6", b"", "json"),
    ("application/xml", b"", "xml"),
    ("text/plain", b"  <x/>", "xml"),
    ("", b'{"a": 1}', "json"),
    ("text/html", b"oops", None),
])
def test_the_format_comes_from_the_content_type_else_the_body(ctype: str, body: bytes,
                                                              fmt: str | None) -> None:
    assert media.format_of(ctype, body) == fmt


def test_one_field_of_an_xml_entity_is_changed_and_the_rest_kept() -> None:
    doc = (b'<machine><link rel="edit" href="/m/1"/><state>MANAGED</state>'
           b"<unknown><deep>kept</deep></unknown></machine>")
    out = media.set_xml_field(doc, "state", "HALTED")
    assert b"<state>HALTED</state>" in out and b"<unknown><deep>kept</deep></unknown>" in out
    with pytest.raises(media.MediaError):
        media.decode(b"<machine>", "application/xml")
