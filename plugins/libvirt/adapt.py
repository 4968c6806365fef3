"""A domain's XML, adapted to the host it moves to: what the target's libvirt says it offers
(``virsh capabilities``, ``virsh domcapabilities``) replaces what the old host had.

* the emulator: the target's binary for the domain's architecture and type (a CentOS 5 host
  runs ``/usr/libexec/qemu-kvm``, a Debian host ``/usr/bin/qemu-system-x86_64``);
* the domain type: ``kvm`` only where the target offers it, else ``qemu``;
* the machine type: by default the target's current machine of the same family (``pc``,
  ``q35``), as a move between OS generations does (``rhel5.4.0`` -> ``pc-i440fx-rhel6.4.0``);
  with ``machine = "keep"``, the old one wherever the target still offers it;
* the CPU model: kept when the target can provide it, else the target's ``host-model`` (or
  the hypervisor's default CPU where it has no host-model).

Every change is returned as an :class:`~rehost.api.XmlChange`, so the report can show it.
Nothing else of the definition changes (the uuid, the disks' paths, the devices).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from rehost.api import PreconditionError, XmlChange

MACHINE_POLICIES = ("upgrade", "keep")


def parse(text: str, what: str) -> ET.Element:
    """XML that libvirt wrote; a DTD or an entity has no business there and is refused, which
    keeps entity tricks out of the parser."""
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise PreconditionError(f"{what} must not contain a DOCTYPE or entity declarations")
    body = text.lstrip()
    if body.startswith("<?xml") and "?>" in body:
        body = body.split("?>", 1)[1]
    try:
        return ET.fromstring(body)  # noqa: S314 - DTDs and entities refused above
    except ET.ParseError as exc:
        raise PreconditionError(f"{what} is not valid XML: {exc}") from None


@dataclass
class Offer:
    """What a host's libvirt offers for one architecture and domain type."""

    emulator: str | None
    machines: list[str] = field(default_factory=list)
    #: alias -> canonical machine (``pc`` -> ``pc-i440fx-7.2``)
    aliases: dict[str, str] = field(default_factory=dict)


def host_offers(capabilities: str, arch: str) -> dict[str, Offer]:
    """Per domain type (``qemu``, ``kvm``), what the host offers for ``arch`` (hvm guests)."""
    root = parse(capabilities, "the host's capabilities")
    offers: dict[str, Offer] = {}
    for guest in root.findall("guest"):
        if (guest.findtext("os_type") or "").strip() != "hvm":
            continue
        arch_el = guest.find("arch")
        if arch_el is None or arch_el.get("name") != arch:
            continue
        base = _offer(arch_el, None)
        for dom in arch_el.findall("domain"):
            kind = dom.get("type") or ""
            offers[kind] = _offer(dom, base)
    return offers


def _offer(el: ET.Element, base: Offer | None) -> Offer:
    emulator = (el.findtext("emulator") or "").strip() or (base.emulator if base else None)
    machines: list[str] = []
    aliases: dict[str, str] = {}
    for m in el.findall("machine"):
        name = (m.text or "").strip()
        if not name:
            continue
        machines.append(name)
        canonical = m.get("canonical")
        if canonical:
            aliases[name] = canonical
    if not machines and base is not None:
        machines, aliases = list(base.machines), dict(base.aliases)
    return Offer(emulator, machines, aliases)


def cpu_models(domain_capabilities: str | None) -> tuple[set[str] | None, bool]:
    """The CPU models the target can provide (None: not known) and whether it offers
    ``host-model``."""
    if not domain_capabilities:
        return None, False
    root = parse(domain_capabilities, "the host's domain capabilities")
    usable: set[str] = set()
    host_model = False
    for mode in root.findall("cpu/mode"):
        if mode.get("supported") != "yes":
            continue
        if mode.get("name") == "custom":
            usable |= {(m.text or "").strip() for m in mode.findall("model")
                       if m.get("usable") != "no"}
        elif mode.get("name") == "host-model":
            host_model = True
    return usable, host_model


def machine_family(machine: str) -> str:
    """``pc-i440fx-7.2``, ``rhel5.4.0``, ``pc-1.2`` -> ``pc``; ``pc-q35-7.2`` -> ``q35``."""
    m = machine.lower()
    if "q35" in m:
        return "q35"
    if m.startswith(("pc", "rhel")):
        return "pc"
    return m


def adapt_domain(xml: str, capabilities: str, domain_capabilities: str | None = None, *,
                 machine_policy: str = "upgrade") -> tuple[str, list[XmlChange]]:
    """``xml`` made fit for the host whose capabilities are given, and what changed."""
    if machine_policy not in MACHINE_POLICIES:
        raise PreconditionError(f"machine policy {machine_policy!r}: choose "
                                f"{' or '.join(MACHINE_POLICIES)}")
    root = parse(xml, "the saved domain XML")
    changes: list[XmlChange] = []
    os_type = root.find("os/type")
    if os_type is None:
        raise PreconditionError("the domain XML has no <os><type>: cannot tell its "
                                "architecture")
    arch = os_type.get("arch") or "x86_64"
    offers = host_offers(capabilities, arch)
    if not offers:
        raise PreconditionError(f"the target offers no hvm guest of architecture {arch}")

    kind = root.get("type") or "qemu"
    if kind not in offers:
        new_kind = "kvm" if "kvm" in offers else "qemu" if "qemu" in offers else sorted(offers)[0]
        changes.append(XmlChange(what="domain type", old=kind, new=new_kind))
        root.set("type", new_kind)
        kind = new_kind
    offer = offers[kind]

    emulator = root.find("devices/emulator")
    if offer.emulator and (emulator is None or (emulator.text or "").strip() != offer.emulator):
        if emulator is None:
            devices = root.find("devices")
            if devices is None:
                devices = ET.SubElement(root, "devices")
            emulator = ET.Element("emulator")
            devices.insert(0, emulator)
        changes.append(XmlChange(what="emulator", old=(emulator.text or "").strip() or None,
                                 new=offer.emulator))
        emulator.text = offer.emulator

    old_machine = os_type.get("machine")
    new_machine = _machine(old_machine, offer, machine_policy)
    if new_machine != old_machine:
        changes.append(XmlChange(what="machine type", old=old_machine, new=new_machine))
        os_type.set("machine", new_machine)

    cpu = root.find("cpu")
    if cpu is not None:
        changes += _cpu(root, cpu, domain_capabilities)
    return ET.tostring(root, encoding="unicode"), changes


def _machine(old: str | None, offer: Offer, policy: str) -> str:
    offered = set(offer.machines) | set(offer.aliases.values())
    if policy == "keep" and old and old in offered and old not in offer.aliases:
        return old
    family = machine_family(old or "pc")
    current = offer.aliases.get(family)
    if current:
        return current
    if old and old in offered:
        return old
    raise PreconditionError(f"the target offers no machine type of the {family!r} family "
                            f"(the VM's is {old}; offered: {', '.join(sorted(offered))})")


def _cpu(root: ET.Element, cpu: ET.Element, domain_capabilities: str | None) -> list[XmlChange]:
    mode = cpu.get("mode") or ("custom" if cpu.find("model") is not None else None)
    models, host_model = cpu_models(domain_capabilities)
    if models is None or mode != "custom":
        return []
    model = (cpu.findtext("model") or "").strip()
    if not model or model in models:
        return []
    if host_model:
        for child in list(cpu):
            cpu.remove(child)
        for attr in list(cpu.attrib):
            del cpu.attrib[attr]
        cpu.set("mode", "host-model")
        return [XmlChange(what="cpu model", old=model, new="host-model")]
    root.remove(cpu)
    return [XmlChange(what="cpu model", old=model, new="the hypervisor's default")]
