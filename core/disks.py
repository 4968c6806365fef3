"""The disks a domain XML uses: what ``virsh domblklist --details`` shows, and more.

``type``, ``device``, ``target`` and ``source`` mean exactly what they mean to virsh (``source`` is
the file, the block device, the directory, the network image name or the pool volume), so the
two can be compared line by line. On top of that each :class:`~rehost.core.model.Disk` carries
what a move needs to know: the format, the bus, readonly/shareable, the network protocol and
hosts, the storage pool, and the backing chain libvirt reports in a running domain's XML.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from rehost.core.errors import ConfigError
from rehost.core.model import Disk

#: Attributes of ``<source>`` that name a disk's source, in the order virsh looks at them.
SOURCE_ATTRIBUTES: tuple[str, ...] = ("file", "dev", "dir", "name", "volume")


def parse_disks(xml: str) -> list[Disk]:
    """Every ``<disk>`` of a domain XML (from ``virsh dumpxml``, live or inactive), in order.

    Also accepts libvirt's status XML (``<domstatus>`` around the ``<domain>``). Raises
    :class:`ConfigError` when the text is not a domain XML or a disk has no target.
    """
    domain = _domain_element(xml)
    devices = domain.find("devices")
    if devices is None:
        return []
    disks = []
    for number, element in enumerate(devices.findall("disk"), start=1):
        disks.append(_disk(element, number))
    return disks


def _domain_element(xml: str) -> ET.Element:
    if not isinstance(xml, str) or not xml.strip():
        raise ConfigError("domain XML is empty")
    # a domain XML never has a DTD; refusing one keeps entity tricks out of the parser
    if "<!DOCTYPE" in xml or "<!ENTITY" in xml:
        raise ConfigError("domain XML must not contain a DOCTYPE or entity declarations")
    text = xml.lstrip()
    if text.startswith("<?xml"):
        # ElementTree refuses an encoding declaration in a str: the text is decoded already
        text = text.split("?>", 1)[1] if "?>" in text else text
    try:
        root = ET.fromstring(text)  # noqa: S314 - DTDs and entities refused above
    except ET.ParseError as exc:
        raise ConfigError(f"domain XML is not well-formed: {exc}") from exc
    if root.tag == "domstatus":
        inner = root.find("domain")
        if inner is None:
            raise ConfigError("libvirt status XML without a <domain> element")
        root = inner
    if root.tag != "domain":
        raise ConfigError(f"not a domain XML: the root element is <{root.tag}>, not <domain>")
    return root


def _disk(element: ET.Element, number: int) -> Disk:
    disk_type = element.get("type") or "file"
    device = element.get("device") or "disk"
    target_el = element.find("target")
    target = target_el.get("dev") if target_el is not None else None
    if not target:
        source = _source_fields(disk_type, element.find("source"))["source"]
        raise ConfigError(
            f"domain XML: disk #{number} ({disk_type} {device}"
            + (f", source {source}" if source else "")
            + ") has no <target dev='...'/>"
        )
    driver = element.find("driver")
    fields = _source_fields(disk_type, element.find("source"))
    return Disk(
        target=target,
        device=device,
        type=disk_type,
        source=fields["source"],
        driver=driver.get("name") if driver is not None else None,
        format=driver.get("type") if driver is not None else None,
        bus=target_el.get("bus") if target_el is not None else None,
        readonly=element.find("readonly") is not None,
        shareable=element.find("shareable") is not None,
        protocol=fields["protocol"],
        hosts=fields["hosts"],
        pool=fields["pool"],
        volume=fields["volume"],
        backing=_backing_chain(element),
    )


def _source_fields(disk_type: str, source: ET.Element | None) -> dict[str, Any]:
    """What a ``<source>`` element says, for a disk or a backing store of type ``disk_type``."""
    out: dict[str, Any] = {"source": None, "protocol": None, "hosts": [], "pool": None,
                           "volume": None}
    if source is None:
        return out
    for attribute in SOURCE_ATTRIBUTES:
        value = source.get(attribute)
        if value:
            out["source"] = value
            break
    if disk_type == "network":
        out["protocol"] = source.get("protocol")
        out["hosts"] = [_host(h) for h in source.findall("host")]
    if disk_type == "volume":
        out["pool"] = source.get("pool")
        out["volume"] = source.get("volume")
    return out


def _host(host: ET.Element) -> str:
    """``name:port``, ``name`` or ``unix:/path/to/socket``."""
    if host.get("transport") == "unix" or (host.get("socket") and not host.get("name")):
        return f"unix:{host.get('socket', '')}"
    name = host.get("name", "")
    if ":" in name and not name.startswith("["):
        name = f"[{name}]"  # an IPv6 address
    port = host.get("port")
    return f"{name}:{port}" if port else name


def _backing_chain(element: ET.Element) -> list[dict[str, Any]]:
    """The nested ``<backingStore>`` elements, nearest first; an empty one ends the chain."""
    chain: list[dict[str, Any]] = []
    current = element.find("backingStore")
    while current is not None and (current.get("type") or len(current)):
        store_type = current.get("type") or "file"
        fmt = current.find("format")
        index = current.get("index") or ""
        layer: dict[str, Any] = {
            "type": store_type,
            "format": fmt.get("type") if fmt is not None else None,
            "index": int(index) if index.isdigit() else None,
        }
        layer.update(_source_fields(store_type, current.find("source")))
        chain.append(layer)
        current = current.find("backingStore")
    return chain


# -- presentation ------------------------------------------------------------------------------


def describe_source(disk: Disk) -> str:
    """The source as a person reads it: a path, ``pool/volume`` or ``protocol://host/name``."""
    if disk.type == "volume" and (disk.pool or disk.volume):
        return f"{disk.pool or '?'}/{disk.volume or '?'}"
    if disk.type == "network":
        hosts = ",".join(disk.hosts)
        return f"{disk.protocol or '?'}://{hosts}/{disk.source or ''}"
    return disk.source or "-"


def _layer_text(layer: dict[str, Any]) -> str:
    shown = describe_source(Disk(target="", type=layer.get("type") or "file",
                                 source=layer.get("source"), protocol=layer.get("protocol"),
                                 hosts=list(layer.get("hosts") or []), pool=layer.get("pool"),
                                 volume=layer.get("volume")))
    return f"{shown} ({layer['format']})" if layer.get("format") else shown


def format_disks_table(disks: list[Disk]) -> str:
    """A table for people: one line per disk, then the backing chain of each disk that has one."""
    if not disks:
        return "no disks"
    header = ("Target", "Type", "Device", "Bus", "Format", "Flags", "Source")
    rows = []
    for d in disks:
        flags = ",".join(f for f, on in (("ro", d.readonly), ("shared", d.shareable)) if on)
        rows.append((d.target, d.type, d.device, d.bus or "-", d.format or "-", flags or "-",
                     describe_source(d)))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]

    def line(cells: tuple[str, ...]) -> str:
        padded = [c.ljust(w) for c, w in zip(cells, widths, strict=False)]
        return "  ".join([*padded, cells[-1]]).rstrip()

    out = [line(header), line((*("-" * w for w in widths), "-" * 6))]
    out += [line(r) for r in rows]
    chains = [d for d in disks if d.backing]
    if chains:
        out.append("")
        out.append("Backing chains (top -> base):")
        for d in chains:
            out.append(f"  {d.target}: " + " -> ".join(
                [describe_source(d) + (f" ({d.format})" if d.format else "")]
                + [_layer_text(layer) for layer in d.backing]))
    return "\n".join(out)
