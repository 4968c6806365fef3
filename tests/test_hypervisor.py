"""Hypervisor: fast checks on libvirt's test driver, then real libvirtd over qemu+ssh in the lab."""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rehost.core.disks import parse_disks
from rehost.core.errors import HypervisorError, PreconditionError
from rehost.core.hypervisor import (
    DomainNotFound,
    Hypervisor,
    open_hypervisor,
    parse_centos_release,
    shown_uri,
    version_string,
)
from rehost.core.remote import Shell, SshOptions
from rehost.lab.lab import LabState

DOMAINS = Path(__file__).parent / "data" / "domains"
NODE_XML = """<node>
  <domain type='test'>
    <name>test</name>
    <memory>8192</memory>
    <os><type>hvm</type></os>
  </domain>
</node>
"""


@pytest.fixture
def hv(tmp_path: Path) -> Iterator[Hypervisor]:
    """A test driver of the test's own: test:///default is shared by every connection of a
    process, a test:///FILE driver starts afresh (with the running domain "test") on each open."""
    node = tmp_path / "node.xml"
    node.write_text(NODE_XML)
    with Hypervisor(f"test://{node}") as h:
        yield h


def renamed(xml: str, name: str) -> str:
    xml = re.sub(r"<name>[^<]*</name>", f"<name>{name}</name>", xml, count=1)
    return re.sub(r"\s*<uuid>[^<]*</uuid>", "", xml, count=1)


# -- test driver -------------------------------------------------------------------------------


def test_domains_with_their_state(hv: Hypervisor) -> None:
    hv.define(renamed((DOMAINS / "abiquo_file_raw.xml").read_text(), "ABQ_off"))
    listed = {d.name: d for d in hv.domains()}
    assert set(listed) == {"test", "ABQ_off"}
    assert (listed["test"].state, listed["test"].active) == ("running", True)
    assert (listed["ABQ_off"].state, listed["ABQ_off"].active) == ("shut off", False)
    assert uuid.UUID(listed["ABQ_off"].uuid)
    assert hv.exists("ABQ_off") and not hv.exists("ABQ_nope")
    assert hv.state("test") == "running"


def test_the_default_test_driver() -> None:
    with Hypervisor("test:///default") as default:
        assert "test" in {d.name for d in default.domains()}
        assert default.name == "localhost"


def test_one_connection_per_object(hv: Hypervisor) -> None:
    assert hv.conn is hv.conn
    hv.close()
    assert hv._conn is None
    hv.close()  # twice is harmless


def test_missing_domain_names_the_host_and_the_domain(hv: Hypervisor) -> None:
    with pytest.raises(DomainNotFound) as caught:
        hv.state("ABQ_gone")
    assert hv.uri in str(caught.value) and "'ABQ_gone'" in str(caught.value)
    assert isinstance(caught.value, HypervisorError)


def test_cannot_connect_is_a_hypervisor_error() -> None:
    uri = "qemu+unix:///system?socket=/nonexistent/rehost-test.sock"
    with pytest.raises(HypervisorError, match="cannot connect") as caught:
        open_hypervisor(uri)
    assert uri in str(caught.value)


def test_dumpxml_and_disks(hv: Hypervisor) -> None:
    xml = renamed((DOMAINS / "backing_chain_live.xml").read_text(), "ABQ_chain")
    hv.define(xml)
    assert "<name>ABQ_chain</name>" in hv.dumpxml("ABQ_chain", inactive=True)
    disks = hv.disks("ABQ_chain")
    assert sorted(d.target for d in disks) == sorted(d.target for d in parse_disks(xml))
    assert disks[0].backing[0]["source"] == "/var/lib/virt/ABQ_4f5a6b7c-snap1.qcow2"


def test_power_off_graceful_then_already_off(hv: Hypervisor) -> None:
    assert hv.power_off("test", timeout=5) == "graceful"  # the test driver obeys at once
    assert hv.state("test") == "shut off"
    assert hv.power_off("test", timeout=5) == "already off"


def test_power_off_a_paused_domain_is_forced(hv: Hypervisor) -> None:
    hv.conn.lookupByName("test").suspend()
    with pytest.raises(HypervisorError, match="paused") as caught:
        hv.power_off("test", timeout=1, force=False)
    assert "'test'" in str(caught.value)
    assert hv.state("test") == "paused"
    assert hv.power_off("test", timeout=1) == "forced"
    assert hv.state("test") == "shut off"


def test_start_is_idempotent(hv: Hypervisor) -> None:
    assert hv.start("test") is False
    hv.power_off("test")
    assert hv.start("test") is True
    assert hv.state("test") == "running"


def test_define_undefine_round_trip(hv: Hypervisor) -> None:
    xml = renamed((DOMAINS / "cdrom_floppy.xml").read_text(), "ABQ_round")
    info = hv.define(xml)
    assert (info.name, info.state, info.persistent) == ("ABQ_round", "shut off", True)
    assert sorted(d.target for d in hv.disks("ABQ_round")) == sorted(
        d.target for d in parse_disks(xml))
    assert hv.undefine("ABQ_round") is True
    assert not hv.exists("ABQ_round")
    assert hv.undefine("ABQ_round", missing_ok=True) is False
    with pytest.raises(DomainNotFound):
        hv.undefine("ABQ_round")


def test_define_bad_xml_names_the_domain(hv: Hypervisor) -> None:
    with pytest.raises(HypervisorError, match=r"cannot define domain 'ABQ_bad'"):
        hv.define("<domain type='kvm'><name>ABQ_bad</name><memory>x</memory></domain>")


def test_undefine_refuses_a_running_domain(hv: Hypervisor) -> None:
    with pytest.raises(PreconditionError, match="running"):
        hv.undefine("test")
    assert hv.state("test") == "running"


def test_undefine_keeps_a_managed_save_unless_told(hv: Hypervisor) -> None:
    hv.conn.lookupByName("test").managedSave()
    assert hv.has_managed_save("test") and hv.state("test") == "shut off"
    with pytest.raises(PreconditionError, match="managed save"):
        hv.undefine("test")
    assert hv.exists("test") and hv.has_managed_save("test")
    assert hv.undefine("test", discard_managed_save=True) is True
    assert not hv.exists("test")


def test_facts_of_a_host_that_is_not_centos(hv: Hypervisor, tmp_path: Path) -> None:
    facts = hv.facts(Shell(), str(tmp_path))
    info = hv.conn.getInfo()
    assert (facts.cpus, facts.memory_mib) == (info[2], info[1])
    assert facts.libvirt_version == version_string(hv.conn.getLibVersion())
    assert facts.hostname == hv.conn.getHostname()
    if not Path("/etc/redhat-release").exists():
        assert facts.centos_major is None and facts.centos_version is None
        assert facts.os_release and facts.os_release != "unknown"
    st = os.statvfs(tmp_path)
    free = st.f_bavail * st.f_frsize
    assert facts.datastore == str(tmp_path)
    assert facts.datastore_free_bytes is not None
    assert abs(facts.datastore_free_bytes - free) < max(free // 100, 64 << 20)


@pytest.mark.parametrize(
    ("text", "major", "version"),
    [
        ("CentOS release 5.11 (Final)", 5, "5.11"),
        ("CentOS release 6.4 (Final)\n", 6, "6.4"),
        ("CentOS release 5 (Final)", 5, "5"),
        ("CentOS Linux release 7.9.2009 (Core)", 7, "7.9.2009"),
        ("Red Hat Enterprise Linux Server release 5.11 (Tikanga)", None, None),
        ("Debian GNU/Linux 12 (bookworm)", None, None),
        ("", None, None),
    ],
)
def test_parse_centos_release(text: str, major: int | None, version: str | None) -> None:
    assert parse_centos_release(text) == (major, version)


def test_versions_and_uris_for_messages() -> None:
    assert version_string(9000000) == "9.0.0"
    assert version_string(8002) == "0.8.2"
    assert version_string(1005003) == "1.5.3"
    assert shown_uri("qemu+ssh://root:hunter2@h:2222/system") == "qemu+ssh://root@h:2222/system"
    assert shown_uri("qemu:///system") == "qemu:///system"


# -- the lab: real libvirtd over qemu+ssh ------------------------------------------------------


def lab_shell(lab: LabState, host: str) -> Shell:
    return Shell(lab.host(host)["address"], ssh=SshOptions(config=lab.data["ssh_config"]),
                 name=host)


def vms_on(lab: LabState, host: str) -> list[dict[str, Any]]:
    return [v for v in lab.data["vms"] if v["host"] == host]


@pytest.mark.lab
def test_lab_domains_over_ssh(lab: LabState) -> None:
    for host in ("c5-a", "c5-b", "c6-a"):
        with Hypervisor(lab.ssh_uri(host), name=host) as hv:
            listed = {d.name: d for d in hv.domains()}
            expected = {str(v["domain"]): v for v in vms_on(lab, host)}
            assert set(listed) == set(expected), host
            for name, vm in expected.items():
                assert listed[name].uuid == vm["uuid"]
                assert listed[name].state == ("running" if vm["running"] else "shut off")
                assert listed[name].active is bool(vm["running"])


@pytest.mark.lab
@pytest.mark.parametrize(("host", "major", "version"), [("c5-a", 5, "5.11"), ("c6-a", 6, "6.4")])
def test_lab_facts(lab: LabState, host: str, major: int, version: str) -> None:
    h = lab.host(host)
    with Hypervisor(lab.ssh_uri(host), name=host) as hv:
        facts = hv.facts(lab_shell(lab, host), h["datastore"])
    assert (facts.centos_major, facts.centos_version) == (major, version)
    assert facts.os_release == h["release"]
    assert facts.hostname == host
    assert re.fullmatch(r"\d+\.\d+\.\d+", facts.libvirt_version)
    assert re.fullmatch(r"\d+\.\d+\.\d+", facts.qemu_version)
    assert facts.cpus >= 1 and facts.memory_mib >= 1
    # the datastore is the host's own folder, seen through ssh
    st = os.statvfs(h["datastore_dir"])
    free = st.f_bavail * st.f_frsize
    assert facts.datastore_free_bytes is not None
    assert abs(facts.datastore_free_bytes - free) < max(free // 100, 64 << 20)


@pytest.mark.lab
def test_lab_disks_agree_with_virsh_on_the_host(lab: LabState) -> None:
    uri = lab.ssh_uri("c5-b")
    with Hypervisor(uri, name="c5-b") as hv:
        for vm in vms_on(lab, "c5-b"):
            name = str(vm["domain"])
            ours = {d.target: d for d in hv.disks(name)}
            out = subprocess.run(["virsh", "-q", "-c", uri, "domblklist", "--details", name],
                                 capture_output=True, text=True, timeout=60, check=True).stdout
            rows = [line.split(None, 3) for line in out.splitlines() if line.strip()]
            assert sorted(ours) == sorted(r[2] for r in rows)
            for dtype, device, target, source in rows:
                disk = ours[target]
                assert (disk.type, disk.device, disk.source) == (dtype, device, source.strip())
            files = [d for d in ours.values() if d.is_file]
            assert [d.source for d in files] == [d["path"] for d in vm["disks"]]
            assert [d.format for d in files] == [d["format"] for d in vm["disks"]]
            if vm["volume"]:
                (block,) = [d for d in ours.values() if d.type == "block"]
                assert (block.source, block.shareable) == (vm["volume"], True)


@pytest.mark.lab
def test_lab_power_off_is_forced_when_the_guest_ignores_acpi(lab: LabState) -> None:
    vm = vms_on(lab, "c5-b")[-1]
    name = str(vm["domain"])
    with Hypervisor(lab.ssh_uri("c5-b"), name="c5-b") as hv:
        assert hv.state(name) == "running"
        try:
            # the lab's guests have no OS: nobody answers the ACPI power button
            assert hv.power_off(name, timeout=1.5) == "forced"
            assert hv.state(name) == "shut off"
            assert hv.power_off(name, timeout=1.5) == "already off"
        finally:
            hv.start(name)
        assert hv.state(name) == "running"
    # another connection (virsh's own) sees the same
    out = subprocess.run(["virsh", "-c", lab.ssh_uri("c5-b"), "domstate", name],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.strip() == "running"


@pytest.mark.lab
def test_lab_power_off_not_forced_leaves_it_running(lab: LabState) -> None:
    name = str(vms_on(lab, "c5-a")[0]["domain"])
    with Hypervisor(lab.ssh_uri("c5-a"), name="c5-a") as hv:
        with pytest.raises(HypervisorError, match=r"did not shut down within 0.5 s") as caught:
            hv.power_off(name, timeout=0.5, force=False)
        assert lab.host("c5-a")["address"] in str(caught.value) and name in str(caught.value)
        assert hv.state(name) == "running"


@pytest.mark.lab
def test_lab_define_undefine_round_trip(lab: LabState) -> None:
    source = str(vms_on(lab, "c5-a")[0]["domain"])
    with Hypervisor(lab.ssh_uri("c5-a"), name="c5-a") as c5:
        xml = c5.dumpxml(source, inactive=True)
        with pytest.raises(PreconditionError, match="running"):
            c5.undefine(source)
        assert c5.state(source) == "running"
    copy = f"rehost-test-{uuid.uuid4().hex[:8]}"
    with Hypervisor(lab.ssh_uri("c6-a"), name="c6-a") as c6:
        try:
            info = c6.define(renamed(xml, copy))
            assert (info.name, info.state) == (copy, "shut off")
            assert copy in {d.name for d in c6.domains()}
            assert [d.source for d in c6.disks(copy)] == [d.source for d in parse_disks(xml)]
            assert c6.undefine(copy) is True
        finally:
            c6.undefine(copy, missing_ok=True)
        assert not c6.exists(copy)
        with pytest.raises(DomainNotFound, match=lab.host("c6-a")["address"]):
            c6.state(copy)
