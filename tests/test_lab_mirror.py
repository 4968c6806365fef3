"""`rehost lab mirror` without a lab: the scaling, the personalities, and TOML that survives
hostile names (read back by the lab's own loader)."""

from __future__ import annotations

import json
import tomllib
from fractions import Fraction
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from rehost.core.errors import ConfigError
from rehost.lab.description import parse_description
from rehost.lab.mirror import (
    MIB,
    Site,
    SiteDisk,
    SiteHost,
    SiteVM,
    nearest_personality,
    parse_scale,
    render_description,
    scale_disk,
    scale_memory,
    toml_string,
)

GIB = 1024 * MIB
HOSTILE = [
    'web "01"',
    "line\nbreak",
    "back\\slash \\n not a newline",
    "tab\there\r\n",
    "nul\x00 del\x7f esc\x1b",
    "''' \"\"\" [[vms]]\nname = \"injected\"",
    "# not a comment",
    "ünïcödé 名前 🚀",
    "\u2028\u2029\ufeff",
    "",
]


def test_scale_parses_fractions_and_refuses_nonsense() -> None:
    assert parse_scale("1/64") == Fraction(1, 64)
    assert parse_scale(" 0.25 ") == Fraction(1, 4)
    assert parse_scale("1") == 1
    for bad in ("0", "-1/2", "2", "x", "1/0", ""):
        with pytest.raises(ConfigError):
            parse_scale(bad)


def test_disks_scale_with_floors_and_data_from_the_allocation() -> None:
    s = Fraction(1, 64)
    # 10 GiB virtual, 2 GiB allocated: 160 MiB, 32 MiB of data
    assert scale_disk(10 * GIB, 2 * GIB, s) == (160, 32)
    # the size rounded up, the data to the nearest MiB; never below the floors
    assert scale_disk(10 * GIB + 1, 1, s) == (161, 1)
    assert scale_disk(GIB, 64 * (MIB + 4096), s) == (16, 1)
    assert scale_disk(GIB, 96 * MIB, s) == (16, 2)
    assert scale_disk(100 * MIB, 0, s) == (16, 1)
    assert scale_disk(0, 0, s) == (16, 1)
    # a qcow2 file may hold more than its virtual size (metadata): the data fits the disk
    assert scale_disk(2 * GIB, 2 * GIB + 300 * MIB, s) == (32, 32)
    assert scale_disk(64 * MIB, 8 * MIB, Fraction(1, 4)) == (16, 2)
    assert scale_disk(256 * MIB, 8 * MIB, Fraction(1)) == (256, 8)
    assert scale_memory(4096, Fraction(1)) == 4096
    assert scale_memory(4096, Fraction(1, 8)) == 512
    assert scale_memory(8, Fraction(1)) == 16


def test_releases_map_to_the_nearest_personality() -> None:
    assert nearest_personality("CentOS release 5.11 (Final)", "source") == ("centos-5.11", None)
    assert nearest_personality("CentOS release 6.4 (Final)\n", "target") == ("centos-6.4", None)
    assert nearest_personality("CentOS release 5.9 (Final)", "source")[0] == "centos-5.8"
    assert nearest_personality("CentOS release 5.10 (Final)", "source")[0] == "centos-5.11"
    assert nearest_personality("CentOS release 6.10 (Final)", "target")[0] == "centos-6.5"
    assert nearest_personality("CentOS release 6.0 (Final)", "target")[0] == "centos-6.3"
    rhel, note = nearest_personality("Red Hat Enterprise Linux Server release 5.9 (Tikanga)",
                                     "source")
    assert rhel == "centos-5.8" and note and "nearest" in note
    assert nearest_personality("Debian 12", "target")[0] == "centos-6.4"
    assert nearest_personality("Debian 12", "target", "2.4")[0] == "centos-6.3"
    assert nearest_personality("CentOS Linux release 7.9.2009 (Core)", "source")[0] == \
        "centos-5.11"


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_round_trip_through_toml(name: str) -> None:
    assert tomllib.loads(f"a = {toml_string(name)}\n")["a"] == name


@given(st.text())
def test_any_text_round_trips_through_toml(text: str) -> None:
    assert tomllib.loads(f"a = {toml_string(text)}\n")["a"] == text


def test_text_that_is_not_unicode_is_refused() -> None:
    with pytest.raises(ConfigError):
        toml_string("bad \udcff byte")


def _site(vm_names: list[str], rack: str = "r1") -> Site:
    hosts = [SiteHost("kvm05", "source", rack, "CentOS release 5.8 (Final)", 24, 98304,
                      "/var/lib/virt", (2, 4, 4096)),
             SiteHost("kvm60", "target", "r2", "CentOS release 6.4 (Final)", 32, 131072,
                      "/var/lib/virt")]
    vms = [SiteVM(n, f"ABQ_{i}", f"4c1e0000-0000-4000-8000-{i:012d}", "kvm05", 2, 4096,
                  i % 2 == 0, False,
                  [SiteDisk("/var/lib/virt/x", "raw", "raw", 10 * GIB, GIB),
                   SiteDisk("/var/lib/virt/y", "qcow2", "qcow2", 20 * GIB, 3 * GIB)])
           for i, n in enumerate(vm_names)]
    return Site("/etc/rehost/site\n[lab]\n.toml", 'dc1 "prod"\n', "abiquo", "2.4", True,
                hosts, vms)


def test_a_description_with_hostile_names_loads_as_written() -> None:
    site = _site(HOSTILE, rack='rack "A"\n[[hosts]]')
    text, notes = render_description(site, Fraction(1, 64), Fraction(1, 2))
    desc = parse_description(text, "mirror")
    assert [v.name for v in desc.vms] == HOSTILE
    assert [h.name for h in desc.hosts] == ["kvm05", "kvm60"]
    assert desc.hosts[0].rack == 'rack "A"\n[[hosts]]'
    assert [h.os for h in desc.hosts] == ["centos-5.8", "centos-6.4"]
    assert [(h.cpus, h.ram_mib) for h in desc.hosts] == [(24, 49152), (32, 65536)]
    assert desc.control == "abiquo" and desc.abiquo == "2.4" and desc.shared_datastore
    assert desc.name.startswith("mirror-dc1-prod")
    for i, v in enumerate(desc.vms):
        assert v.uuid == f"4c1e0000-0000-4000-8000-{i:012d}"
        assert (v.host, v.cpu, v.ram_mib, v.running) == ("kvm05", 2, 2048, i % 2 == 0)
        assert [(d.size_mib, d.format, d.data_mib) for d in v.disks] == [
            (160, "raw", 16), (320, "qcow2", 48)]
    assert any("2 domain(s) the campaign does not move" in n for n in notes)
    # the parsed text has exactly the tables written: nothing injected
    data = tomllib.loads(text)
    assert set(data) == {"lab", "hosts", "vms"} and len(data["vms"]) == len(HOSTILE)


def test_a_duplicate_uuid_is_written_once() -> None:
    site = _site(["a", "b"])
    site.vms[1].uuid = site.vms[0].uuid.upper()
    text, notes = render_description(site)
    desc = parse_description(text)
    assert desc.vms[0].uuid == site.vms[0].uuid and desc.vms[1].uuid != desc.vms[0].uuid
    assert any("not kept" in n for n in notes)


def test_the_command_writes_the_file_and_says_what_it_left_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rehost.core.cli import main
    from rehost.lab import mirror as mirror_mod

    site = _site(["web01", 'db "01"'])
    seen: list[str] = []

    def fake_read_site(path: str) -> Site:
        seen.append(path)
        return site

    monkeypatch.setattr(mirror_mod, "read_site", fake_read_site)
    out = tmp_path / "lab.toml"
    runner = CliRunner()
    res = runner.invoke(main, ["lab", "mirror", "-c", "site.toml", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert seen == ["site.toml"]
    assert "2 host(s), 2 VM(s)" in res.output and "does not move" in res.output
    desc = parse_description(out.read_text(encoding="utf-8"))
    assert [v.name for v in desc.vms] == ["web01", 'db "01"']
    assert [d.size_mib for d in desc.vms[0].disks] == [160, 320]

    res = runner.invoke(main, ["lab", "mirror", "-c", "site.toml", "-o", str(out), "--json",
                               "--scale", "1/1024", "--memory-scale", "1/2"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert (summary["hosts"], summary["vms"]) == (2, 2)
    assert summary["disk_mib"] == 2 * (16 + 20)  # 10 and 20 GiB at 1/1024; floor 16 MiB
    assert summary["ram_mib"] == 2048  # the running VM's 4096 MiB, halved
    desc = parse_description(out.read_text(encoding="utf-8"))
    assert [d.size_mib for d in desc.vms[0].disks] == [16, 20]

    res = runner.invoke(main, ["lab", "mirror", "-c", "site.toml", "-o", "-"])
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("# A rehearsal lab") and "[[vms]]" in res.stdout
    for bad in (["--scale", "2"], ["--memory-scale", "0"], ["-o", "-", "--json"]):
        res = runner.invoke(main, ["lab", "mirror", "-c", "site.toml", "-o", str(out), *bad])
        assert res.exit_code == 2, res.output
