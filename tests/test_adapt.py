"""A domain's XML adapted to its new host, from what that host's libvirt offers: emulator,
domain type, machine type, CPU model. Every change is said; nothing else changes."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from rehost.api import PreconditionError
from rehost.plugins.libvirt.adapt import adapt_domain, machine_family

#: a CentOS 6.4 host's capabilities, shortened: qemu-kvm with its RHEL 6 machine types
CENTOS6_CAPS = """<capabilities>
  <host><cpu><arch>x86_64</arch></cpu></host>
  <guest>
    <os_type>hvm</os_type>
    <arch name='x86_64'>
      <wordsize>64</wordsize>
      <emulator>/usr/libexec/qemu-kvm</emulator>
      <machine>rhel6.4.0</machine>
      <machine canonical='rhel6.4.0'>pc</machine>
      <machine>rhel6.3.0</machine>
      <machine>rhel6.0.0</machine>
      <domain type='qemu'/>
      <domain type='kvm'><emulator>/usr/libexec/qemu-kvm</emulator></domain>
    </arch>
  </guest>
</capabilities>"""

#: a Debian host whose libvirt offers no kvm (TCG only), with q35 and i440fx types
DEBIAN_TCG_CAPS = """<capabilities>
  <guest>
    <os_type>hvm</os_type>
    <arch name='x86_64'>
      <emulator>/usr/bin/qemu-system-x86_64</emulator>
      <machine maxCpus='255'>pc-i440fx-7.2</machine>
      <machine canonical='pc-i440fx-7.2' maxCpus='255'>pc</machine>
      <machine maxCpus='255'>pc-i440fx-6.2</machine>
      <machine maxCpus='288'>pc-q35-7.2</machine>
      <machine canonical='pc-q35-7.2' maxCpus='288'>q35</machine>
      <domain type='qemu'/>
    </arch>
  </guest>
  <guest>
    <os_type>hvm</os_type>
    <arch name='i686'><emulator>/usr/bin/qemu-system-i386</emulator>
      <machine>pc-i440fx-7.2</machine><domain type='qemu'/></arch>
  </guest>
</capabilities>"""

DOMCAPS = """<domainCapabilities>
  <cpu>
    <mode name='host-passthrough' supported='yes'/>
    <mode name='host-model' supported='yes'><model>Skylake-Client</model></mode>
    <mode name='custom' supported='yes'>
      <model usable='yes'>qemu64</model>
      <model usable='yes'>Nehalem</model>
      <model usable='no'>Skylake-Server</model>
    </mode>
  </cpu>
</domainCapabilities>"""

CENTOS5_VM = """<domain type='kvm'>
  <name>web-1</name>
  <uuid>8f2c0c6e-1d1e-4a55-9b8e-3f1b2c4d5e6f</uuid>
  <memory>524288</memory>
  <vcpu>2</vcpu>
  <os><type arch='x86_64' machine='rhel5.4.0'>hvm</type><boot dev='hd'/></os>
  <cpu match='exact'><model>Opteron_G1</model></cpu>
  <devices>
    <emulator>/usr/libexec/qemu-kvm</emulator>
    <disk type='file' device='disk'>
      <source file='/var/lib/virt/web-1.img'/><target dev='vda' bus='virtio'/>
    </disk>
  </devices>
</domain>"""


def changes_of(xml: str, caps: str, domcaps: str | None = None,
               policy: str = "upgrade") -> tuple[ET.Element, dict[str, tuple[str | None, ...]]]:
    out, changes = adapt_domain(xml, caps, domcaps, machine_policy=policy)
    return ET.fromstring(out), {c.what: (c.old, c.new) for c in changes}


def test_a_centos_5_vm_on_a_centos_6_host() -> None:
    root, changes = changes_of(CENTOS5_VM, CENTOS6_CAPS)
    # rhel5.4.0 is no machine of CentOS 6: its current pc is; the emulator path is the same
    assert changes == {"machine type": ("rhel5.4.0", "rhel6.4.0")}
    assert root.find("os/type").get("machine") == "rhel6.4.0"  # type: ignore[union-attr]
    assert root.get("type") == "kvm"
    # nothing else changed: name, uuid, disks, the CPU (no domain capabilities to judge by)
    assert root.findtext("uuid") == "8f2c0c6e-1d1e-4a55-9b8e-3f1b2c4d5e6f"
    assert root.find("devices/disk/source").get("file") == "/var/lib/virt/web-1.img"  # type: ignore[union-attr]
    assert root.findtext("cpu/model") == "Opteron_G1"


def test_a_host_without_kvm_gets_a_qemu_domain_with_its_own_emulator() -> None:
    root, changes = changes_of(CENTOS5_VM, DEBIAN_TCG_CAPS, DOMCAPS)
    assert changes == {
        "domain type": ("kvm", "qemu"),
        "emulator": ("/usr/libexec/qemu-kvm", "/usr/bin/qemu-system-x86_64"),
        "machine type": ("rhel5.4.0", "pc-i440fx-7.2"),
        "cpu model": ("Opteron_G1", "host-model"),
    }
    assert root.findtext("devices/emulator") == "/usr/bin/qemu-system-x86_64"
    assert root.find("cpu").attrib == {"mode": "host-model"}  # type: ignore[union-attr]


def test_a_cpu_model_the_target_provides_is_kept() -> None:
    xml = CENTOS5_VM.replace("Opteron_G1", "Nehalem")
    _, changes = changes_of(xml, DEBIAN_TCG_CAPS, DOMCAPS)
    assert "cpu model" not in changes
    _, changes = changes_of(CENTOS5_VM.replace("Opteron_G1", "Skylake-Server"),
                            DEBIAN_TCG_CAPS, DOMCAPS)
    assert changes["cpu model"] == ("Skylake-Server", "host-model")


@pytest.mark.parametrize(("machine", "policy", "expected"), [
    ("pc-i440fx-6.2", "upgrade", "pc-i440fx-7.2"),   # the target's current pc
    ("pc-i440fx-6.2", "keep", "pc-i440fx-6.2"),      # offered there: kept on request
    ("pc-q35-5.0", "keep", "pc-q35-7.2"),            # not offered: the current q35
    ("pc", "upgrade", "pc-i440fx-7.2"),              # an alias becomes what it means there
])
def test_the_machine_type(machine: str, policy: str, expected: str) -> None:
    xml = CENTOS5_VM.replace("rhel5.4.0", machine)
    root, _ = changes_of(xml, DEBIAN_TCG_CAPS, policy=policy)
    assert root.find("os/type").get("machine") == expected  # type: ignore[union-attr]


def test_machine_families() -> None:
    assert machine_family("rhel5.4.0") == "pc"
    assert machine_family("pc-1.2") == "pc"
    assert machine_family("pc-q35-7.2") == "q35"


@pytest.mark.parametrize(("xml", "caps", "says"), [
    ("<domain type='kvm'><name>x</name><os><type arch='aarch64'>hvm</type></os></domain>",
     DEBIAN_TCG_CAPS, "no hvm guest of architecture aarch64"),
    ("<domain type='kvm'><name>x</name></domain>", DEBIAN_TCG_CAPS, "has no <os><type>"),
    ("<domain><name>x</", DEBIAN_TCG_CAPS, "not valid XML"),
    ('<!DOCTYPE d [<!ENTITY e "x">]><domain>&e;</domain>', DEBIAN_TCG_CAPS,
     "DOCTYPE or entity"),
    (CENTOS5_VM.replace("rhel5.4.0", "isapc"), DEBIAN_TCG_CAPS, "no machine type of the"),
])
def test_what_cannot_be_adapted_is_refused_with_the_reason(xml: str, caps: str,
                                                           says: str) -> None:
    with pytest.raises(PreconditionError, match=says):
        adapt_domain(xml, caps)
