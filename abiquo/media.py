"""Abiquo's media types and their two encodings, XML and JSON (docs/abiquo-api.md).

Abiquo names each representation ``application/vnd.abiquo.<entity>+xml`` (or ``+json``) with a
``version`` parameter. Abiquo 2.0 serves XML only; 2.6 serves JSON when asked and XML by
default; whether 2.4 serves JSON is not confirmed. Both sides of rehost that speak the API (the
client, and the lab's emulator) encode and decode bodies here, so that they agree.

The XML is JAXB's, as Abiquo's transfer objects (``com.abiquo.server.core.*Dto``, open 2.0
sources; jclouds' Abiquo provider on the 2.3 and 2.6 models) declare it:

- the root element is the entity's own name, which is not always its media type's name
  (``virtualmachine`` is ``<virtualMachine>``, ``machineloadrule`` ``<machineLoadRule>``,
  ``machinestate`` ``<MachineState>``); :data:`XML_ROOTS` lists them;
- a field is a child element holding its value as text (a null field is left out);
- a link is ``<link rel=".." href=".." type=".." title=".."/>``, a child of its entity;
- a collection (``WrapperDto``) is its root with one child element per item, links and an
  optional ``<totalSize>``; a nested collection (``<datastores>``, ``<jobs>``) likewise.

Decoded, both encodings give the JSON shape: an entity is a dict of its fields with
``"links"`` as a list of ``{"rel", "href", "type", "title"}``; a collection is
``{"links": [...], "collection": [...], "totalSize": N}``. XML values stay text (the typed views
in :mod:`rehost.abiquo.types` convert them). XML sent by a server is parsed with
``defusedxml`` (no entity expansion, no external entities); XML is built with the standard
library's ``ElementTree``.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET  # building only: parsing goes through defusedxml
from typing import Any

from defusedxml import ElementTree as SafeET

MEDIA_PREFIX = "application/vnd.abiquo."

#: media type entity -> (XML root element, item element for a collection)
XML_ROOTS: dict[str, tuple[str, str | None]] = {
    "datacenters": ("datacenters", "datacenter"),
    "datacenter": ("datacenter", None),
    "racks": ("racks", "rack"),
    "rack": ("rack", None),
    "machines": ("machines", "machine"),
    "machine": ("machine", None),
    "machinestate": ("MachineState", None),
    "virtualmachineswithnodeextended": ("virtualmachineswithnodeextended",
                                        "virtualmachinewithnodeextended"),
    "virtualmachinewithnodeextended": ("virtualmachinewithnodeextended", None),
    "virtualmachineswithnode": ("virtualmachineswithnode", "virtualmachinewithnode"),
    "virtualmachinewithnode": ("virtualmachinewithnode", None),
    "virtualmachines": ("virtualMachines", "virtualMachine"),
    "virtualmachine": ("virtualMachine", None),
    "virtualmachinestate": ("virtualmachinestate", None),
    "virtualmachinetask": ("virtualmachinetask", None),
    "acceptedrequest": ("acceptedrequest", None),
    "tasks": ("tasks", "task"),
    "task": ("task", None),
    "machineloadrules": ("machineLoadRules", "machineLoadRule"),
    "machineloadrule": ("machineLoadRule", None),
    "fitpolicyrules": ("fitPolicyRules", "fitPolicyRule"),
    "fitpolicyrule": ("fitPolicyRule", None),
    "virtualdatacenters": ("virtualDatacenters", "virtualDatacenter"),
    "virtualdatacenter": ("virtualDatacenter", None),
    "virtualappliances": ("virtualAppliances", "virtualAppliance"),
    "virtualappliance": ("virtualAppliance", None),
    # Abiquo 2.0's ErrorsDto: media type "error", root <errors>, items <error>
    "error": ("errors", "error"),
}

#: nested collections whose item element is not the collection's name less its final "s"
NESTED_ITEMS = {"networkInterfaces": "networkinterface"}

#: roots (and nested elements) that are collections even with no item, or one
COLLECTION_ELEMENTS = frozenset(
    {root for root, item in XML_ROOTS.values() if item} | {"jobs", "datastores",
                                                            "networkInterfaces"})


class MediaError(ValueError):
    """A body that is neither the XML nor the JSON it claims to be."""


def media_type(entity: str, fmt: str, version: str) -> str:
    return f"{MEDIA_PREFIX}{entity}+{fmt}; version={version}"


def format_of(content_type: str, body: bytes = b"") -> str | None:
    """``xml`` or ``json`` from a Content-Type (``+xml``, ``application/xml``...), else from
    the body's first character; None when neither tells."""
    base = content_type.split(";")[0].strip().lower()
    if base.endswith(("+json", "/json")):
        return "json"
    if base.endswith(("+xml", "/xml")):
        return "xml"
    head = body.lstrip()[:1]
    return {b"{": "json", b"[": "json", b"<": "xml"}.get(head)


# -- decoding ----------------------------------------------------------------------------------


def _link(el: Any) -> dict[str, str]:
    return {k: el.attrib.get(k, "") for k in ("rel", "href", "type", "title")}


def _is_collection(tag: str, items: list[Any]) -> bool:
    if tag in COLLECTION_ELEMENTS:
        return True
    if not items or len({c.tag for c in items}) != 1:
        return False
    return f"{items[0].tag.lower()}s" == tag.lower()


def _value(el: Any, collection: bool | None = None) -> Any:
    children = list(el)
    if not children:
        if collection or (collection is None and el.tag in COLLECTION_ELEMENTS):
            return {"links": [], "collection": []}
        return el.text or None
    links = [_link(c) for c in children if c.tag == "link"]
    others = [c for c in children if c.tag != "link"]
    items = [c for c in others if c.tag != "totalSize"]
    if collection or (collection is None and _is_collection(el.tag, items)):
        out: dict[str, Any] = {"links": links, "collection": [_value(c, False) for c in items]}
        total = next((c.text for c in others if c.tag == "totalSize"), None)
        if total is not None:
            out["totalSize"] = int(total)
        return out
    data: dict[str, Any] = {}
    for c in others:
        value = _value(c)
        if c.tag in data:
            if not isinstance(data[c.tag], list):
                data[c.tag] = [data[c.tag]]
            data[c.tag].append(value)
        else:
            data[c.tag] = value
    data["links"] = links
    return data


def decode_xml(body: bytes, collection: bool | None = None) -> tuple[str, Any]:
    """The root element's name and the body in the JSON shape. ``collection`` says whether
    the root is a collection (None: known collection roots, or items of one kind)."""
    try:
        root = SafeET.fromstring(body)
    except (SafeET.ParseError, ValueError) as exc:  # defusedxml's refusals are ValueErrors
        raise MediaError(f"not well-formed XML: {exc}") from exc
    value = _value(root, collection)
    if not isinstance(value, dict):  # a root with text only: an empty entity
        value = {"links": []}
    return root.tag, value


def decode(body: bytes, content_type: str = "", collection: bool | None = None) -> Any:
    """A body in the JSON shape, from XML or JSON (Content-Type, else the body, tells)."""
    if not body:
        return None
    fmt = format_of(content_type, body)
    if fmt == "json":
        try:
            return json.loads(body)
        except ValueError as exc:
            raise MediaError(f"not JSON: {exc}") from exc
    if fmt == "xml":
        return decode_xml(body, collection)[1]
    raise MediaError(f"neither XML nor JSON (Content-Type {content_type!r})")


# -- encoding ----------------------------------------------------------------------------------


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _fill(el: ET.Element, data: Any, item: str | None) -> None:
    if not isinstance(data, dict):
        el.text = _text(data)
        return
    for link in data.get("links") or []:
        ET.SubElement(el, "link", {k: str(v) for k, v in link.items() if v})
    if "collection" in data:
        name = item or NESTED_ITEMS.get(el.tag) or el.tag.removesuffix("s")
        for entry in data["collection"] or []:
            _fill(ET.SubElement(el, name), entry, None)
        if data.get("totalSize") is not None:
            ET.SubElement(el, "totalSize").text = _text(data["totalSize"])
        return
    for key, value in data.items():
        if key == "links" or value is None:
            continue
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, dict):
                _fill(ET.SubElement(el, key), v, NESTED_ITEMS.get(key))
            elif v is not None:
                ET.SubElement(el, key).text = _text(v)


def encode_xml(entity: str, data: Any) -> bytes:
    """A body in the JSON shape (a list is a collection's items) as Abiquo's XML."""
    root, item = XML_ROOTS.get(entity, (entity, None))
    if isinstance(data, list):
        data = {"links": [], "collection": data}
    el = ET.Element(root)
    _fill(el, data, item)
    return ET.tostring(el, encoding="utf-8", xml_declaration=True)


def encode(entity: str, data: Any, fmt: str) -> bytes:
    if fmt == "xml":
        return encode_xml(entity, data)
    return json.dumps(data).encode()


def set_xml_field(body: bytes, field: str, value: str) -> bytes:
    """The XML document with one top-level field set (added when absent), every other
    element kept as received: how a PUT of a whole entity changes one field."""
    try:
        root = SafeET.fromstring(body)
    except (SafeET.ParseError, ValueError) as exc:
        raise MediaError(f"not well-formed XML: {exc}") from exc
    el = root.find(field)
    if el is None:
        el = ET.SubElement(root, field)
    el.text = value
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)
