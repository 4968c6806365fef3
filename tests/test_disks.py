"""parse_disks against what virsh itself says about the same domain XML.

Each XML under tests/data/domains is defined in libvirt's test driver and listed with
``virsh domblklist --details`` in the same virsh session (test:///default lives as long as the
connection), so the comparison is with libvirt's own reading of the XML, not with our guess.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from rehost.core.cli import main
from rehost.core.disks import format_disks_table, parse_disks
from rehost.core.errors import ConfigError
from rehost.core.model import Disk

DOMAINS = Path(__file__).parent / "data" / "domains"
XML_FILES = sorted(DOMAINS.glob("*.xml"))
REHOST = Path(sys.executable).parent / "rehost"

needs_virsh = pytest.mark.skipif(shutil.which("virsh") is None, reason="virsh is not installed")


def domain_name(xml_file: Path) -> str:
    found = re.search(r"<name>([^<]+)</name>", xml_file.read_text())
    assert found, xml_file
    return found.group(1)


def virsh_session(xml_file: Path, *commands: str) -> str:
    """Define the XML in a fresh test driver and run ``commands`` in the same connection."""
    script = "; ".join([f"define --file {xml_file.name}", *commands])
    proc = subprocess.run(
        ["virsh", "-q", "-c", "test:///default", script],
        cwd=xml_file.parent, capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, f"virsh failed on {xml_file.name}: {proc.stderr}"
    return proc.stdout


def virsh_domblklist(xml_file: Path) -> list[dict[str, str | None]]:
    out = virsh_session(xml_file, f"domblklist --details {domain_name(xml_file)}")
    rows = []
    for line in out.splitlines():
        # Type Device Target Source; only the source may hold spaces
        fields = line.split(None, 3)
        if len(fields) != 4 or fields[0] in ("Type", "Domain") or set(line.strip()) == {"-"}:
            continue
        dtype, device, target, source = fields
        rows.append({"type": dtype, "device": device, "target": target,
                     "source": None if source.strip() == "-" else source.rstrip()})
    return rows


def by_target(disks: list[Disk]) -> dict[str, Disk]:
    return {d.target: d for d in disks}


def test_the_sample_set_is_varied() -> None:
    disks = [d for f in XML_FILES for d in parse_disks(f.read_text())]
    assert {d.type for d in disks} >= {"file", "block", "network", "volume", "dir"}
    assert {d.device for d in disks} >= {"disk", "cdrom", "floppy", "lun"}
    assert {d.protocol for d in disks} >= {"iscsi", "rbd", "nbd", "gluster"}
    assert {d.format for d in disks} >= {"raw", "qcow2"}
    assert any(d.readonly for d in disks) and any(d.shareable for d in disks)
    assert any(d.backing for d in disks)
    assert any(d.device == "cdrom" and d.source is None for d in disks)


@needs_virsh
@pytest.mark.parametrize("xml_file", XML_FILES, ids=[f.stem for f in XML_FILES])
def test_agrees_with_virsh_domblklist(xml_file: Path) -> None:
    ours = by_target(parse_disks(xml_file.read_text()))
    theirs = virsh_domblklist(xml_file)
    assert theirs, "virsh listed no disks"
    assert sorted(ours) == sorted(str(row["target"]) for row in theirs)
    for row in theirs:
        disk = ours[str(row["target"])]
        assert (disk.type, disk.device, disk.target, disk.source) == (
            row["type"], row["device"], row["target"], row["source"]
        ), f"{xml_file.name} {row['target']}"


@needs_virsh
@pytest.mark.parametrize("xml_file", XML_FILES, ids=[f.stem for f in XML_FILES])
def test_libvirts_own_rewrite_of_the_xml_reads_the_same(xml_file: Path) -> None:
    """libvirt reorders disks and adds addresses and controllers: none of it changes a disk."""
    rewritten = virsh_session(xml_file, f"dumpxml {domain_name(xml_file)}")
    assert libvirt_normal(parse_disks(rewritten)) == libvirt_normal(
        parse_disks(xml_file.read_text()))


def libvirt_normal(disks: list[Disk]) -> dict[str, Disk]:
    """What libvirt itself adds when it rewrites an inactive XML, taken out: the iSCSI default
    port, and the ``index`` of backing layers (a running domain's bookkeeping)."""
    out = {}
    for disk in disks:
        hosts = [h.removesuffix(":3260") if disk.protocol == "iscsi" else h for h in disk.hosts]
        backing = [{**layer, "index": None} for layer in disk.backing]
        out[disk.target] = Disk(**{**disk.to_dict(), "hosts": hosts, "backing": backing})
    return out


def test_says_more_than_virsh_format_bus_and_flags() -> None:
    disks = by_target(parse_disks((DOMAINS / "cdrom_floppy.xml").read_text()))
    assert (disks["hda"].format, disks["hda"].driver, disks["hda"].bus) == ("qcow2", "qemu", "ide")
    assert disks["hda"].is_file
    empty = disks["hdc"]
    assert (empty.device, empty.source, empty.readonly, empty.is_file) == ("cdrom", None, True,
                                                                           False)
    iso = disks["hdd"]
    assert iso.source == "/var/lib/virt/iso/CentOS-6.4-x86_64-minimal.iso"
    assert iso.readonly and not iso.is_file
    assert (disks["fda"].device, disks["fda"].bus, disks["fda"].format) == ("floppy", "fdc", None)
    assert (disks["hdb"].type, disks["hdb"].source, disks["hdb"].format) == ("dir", "/srv/share",
                                                                             "fat")
    quorum = disks["vdz"]
    assert quorum.readonly and quorum.shareable


def test_network_disks_carry_protocol_and_hosts() -> None:
    disks = by_target(parse_disks((DOMAINS / "network_iscsi_rbd.xml").read_text()))
    assert (disks["vda"].protocol, disks["vda"].hosts) == ("iscsi", ["10.60.1.20:3260"])
    assert disks["vda"].source == "iqn.2013-06.com.example:storage/1"
    assert disks["vdb"].hosts == ["mon1.example.com:6789", "mon2.example.com:6789",
                                  "[2001:db8::3]:6789"]
    assert (disks["vdc"].protocol, disks["vdc"].format) == ("gluster", "qcow2")
    assert (disks["vdd"].protocol, disks["vdd"].source, disks["vdd"].hosts) == (
        "nbd", None, ["unix:/var/run/nbd/db.sock"])
    assert (disks["sda"].device, disks["sda"].hosts, disks["sda"].shareable) == (
        "lun", ["10.60.1.21"], True)
    assert not any(d.is_file for d in disks.values())


def test_volume_disks_carry_pool_and_volume() -> None:
    disks = by_target(parse_disks((DOMAINS / "volume_pool.xml").read_text()))
    assert (disks["vda"].pool, disks["vda"].volume, disks["vda"].source) == (
        "default", "app-root.qcow2", "app-root.qcow2")
    assert (disks["vdb"].pool, disks["vdb"].volume) == ("iscsi-pool", "unit:0:0:1")


def test_block_volumes_are_not_file_disks() -> None:
    disks = by_target(parse_disks((DOMAINS / "block_iscsi_by_path.xml").read_text()))
    assert [t for t, d in disks.items() if d.is_file] == ["hda"]
    assert disks["hdb"].type == "block" and disks["hdb"].shareable
    assert disks["hdb"].source is not None and "iscsi-iqn" in disks["hdb"].source
    assert disks["sdb"].device == "lun"


def test_backing_chain_from_live_xml() -> None:
    disks = by_target(parse_disks((DOMAINS / "backing_chain_live.xml").read_text()))
    chain = disks["vda"].backing
    assert [(b["type"], b["format"], b["source"], b["index"]) for b in chain] == [
        ("file", "qcow2", "/var/lib/virt/ABQ_4f5a6b7c-snap1.qcow2", 2),
        ("file", "raw", "/var/lib/virt/templates/centos-5.11-base.raw", 1),
    ]
    assert [(b["type"], b["source"]) for b in disks["vdb"].backing] == [
        ("block", "/dev/vg_virt/golden-data")]
    # `<backingStore/>` alone means "no backing file", not a layer without a source
    assert disks["vdc"].backing == []


def test_a_quote_and_spaces_in_a_path_survive() -> None:
    disks = by_target(parse_disks((DOMAINS / "file_qcow2_virtio.xml").read_text()))
    assert disks["vdb"].source == "/var/lib/libvirt/images/web data (old) '2013'.img"


def test_disks_round_trip_through_their_dict() -> None:
    for xml_file in XML_FILES:
        for disk in parse_disks(xml_file.read_text()):
            assert Disk(**json.loads(json.dumps(disk.to_dict()))) == disk


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "empty"),
        ("<domain><devices><disk type='file'>", "not well-formed"),
        ("<pool type='dir'><name>x</name></pool>", "root element is <pool>"),
        ("<domain><devices><disk type='file' device='disk'><source file='/a'/></disk>"
         "</devices></domain>", "disk #1 (file disk, source /a) has no <target"),
        ("<?xml version='1.0'?><!DOCTYPE d [<!ENTITY e 'x'>]><domain>&e;</domain>", "DOCTYPE"),
    ],
)
def test_bad_xml_is_a_config_error(text: str, says: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(says)):
        parse_disks(text)


def test_status_xml_and_a_domain_without_disks() -> None:
    inner = (DOMAINS / "abiquo_file_raw.xml").read_text()
    assert [d.target for d in parse_disks(f"<domstatus state='running'>{inner}</domstatus>")] == [
        "hda"]
    assert parse_disks("<domain type='kvm'><name>empty</name></domain>") == []
    assert format_disks_table([]) == "no disks"


def test_table_shows_every_disk_and_the_chains() -> None:
    disks = parse_disks((DOMAINS / "backing_chain_live.xml").read_text())
    disks += parse_disks((DOMAINS / "network_iscsi_rbd.xml").read_text())
    table = format_disks_table(disks)
    lines = table.splitlines()
    assert lines[0].split() == ["Target", "Type", "Device", "Bus", "Format", "Flags", "Source"]
    assert "iscsi://10.60.1.20:3260/iqn.2013-06.com.example:storage/1" in table
    assert "  vda: /var/lib/virt/ABQ_4f5a6b7c-snap2.qcow2 (qcow2) -> " \
        "/var/lib/virt/ABQ_4f5a6b7c-snap1.qcow2 (qcow2) -> " \
        "/var/lib/virt/templates/centos-5.11-base.raw (raw)" in lines
    # columns line up: every row's source starts where the header's does
    col = lines[0].index("Source")
    for line in lines[2:2 + len(disks)]:
        assert line[col - 2:col] == "  " and line[col] != " "


# -- the command line --------------------------------------------------------------------------


def test_cli_table_through_the_installed_command() -> None:
    xml_file = DOMAINS / "cdrom_floppy.xml"
    proc = subprocess.run([str(REHOST), "disks", str(xml_file)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines()[2:] if line}
    assert rows["hdc"][1:] == ["file", "cdrom", "ide", "raw", "ro", "-"]
    assert rows["hdd"][-1] == "/var/lib/virt/iso/CentOS-6.4-x86_64-minimal.iso"
    assert rows["vdz"][5] == "ro,shared"


def test_cli_json_is_every_field_of_every_disk() -> None:
    xml_file = DOMAINS / "backing_chain_live.xml"
    result = CliRunner().invoke(main, ["disks", "--json", str(xml_file)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data == [d.to_dict() for d in parse_disks(xml_file.read_text())]
    assert data[0]["target"] == "vda" and data[0]["format"] == "qcow2"
    assert [b["source"] for b in data[0]["backing"]] == [
        "/var/lib/virt/ABQ_4f5a6b7c-snap1.qcow2", "/var/lib/virt/templates/centos-5.11-base.raw"]


def test_cli_reads_standard_input() -> None:
    text = (DOMAINS / "volume_pool.xml").read_text()
    result = CliRunner().invoke(main, ["disks", "--json", "-"], input=text)
    assert result.exit_code == 0, result.output
    assert [d["volume"] for d in json.loads(result.output)] == ["app-root.qcow2", "unit:0:0:1"]


def test_cli_bad_xml_exits_2_with_a_message(tmp_path: Path) -> None:
    bad = tmp_path / "bad.xml"
    bad.write_text("<domain><devices>")
    proc = subprocess.run([str(REHOST), "disks", str(bad)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 2
    assert "domain XML is not well-formed" in proc.stderr
    assert proc.stdout == ""
    missing = subprocess.run([str(REHOST), "disks", str(tmp_path / "nope.xml")],
                             capture_output=True, text=True, timeout=60, check=False)
    assert missing.returncode == 2 and "no such file" in missing.stderr
