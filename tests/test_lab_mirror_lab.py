"""`rehost lab mirror` against a lab standing in for a real site: three hosts in two racks,
VMs with raw and qcow2 disks of different sizes. The mirror is read back with the lab's own
loader (same hosts, racks, personalities, VM shapes, scaled disks), leaves the site as it
was, and brought up as another lab instance it has the same hosts, racks and VMs and plans
the same evacuation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import libvirt
import pytest

from rehost.lab.description import load_description
from rehost.lab.lab import LabState
from rehost.lab.mirror import scale_disk

pytestmark = [pytest.mark.lab, pytest.mark.slow]

SITE = """
[lab]
name = "mirrored"
abiquo = "2.4"

[[hosts]]
name = "c5-a"
os = "centos-5.11"
rack = "r1"

[[hosts]]
name = "c5-b"
os = "centos-5.8"
rack = "r2"

[[hosts]]
name = "c6-a"
os = "centos-6.3"
rack = "r1"
cpus = 8
ram_mib = 16384

[[vms]]
name = "web01"
host = "c5-a"
cpu = 2
ram_mib = 48
disks = [{ size_mib = 256, format = "raw", data_mib = 8 }]

[[vms]]
name = "db01"
host = "c5-a"
ram_mib = 64
disks = [
  { size_mib = 128, format = "qcow2", data_mib = 4 },
  { size_mib = 72, format = "raw", data_mib = 3 },
]

[[vms]]
name = "app01"
host = "c5-b"
running = false
disks = [{ size_mib = 192, format = "qcow2", data_mib = 12 }]
"""

SCALE = Fraction(1, 4)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rehost.core.cli", *args], capture_output=True,
                          text=True, timeout=600, check=False, env=env)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under the lab's state folder and the emulator's state: size and mtime."""
    found: dict[str, tuple[int, int]] = {}
    for p in [*sorted((root / "state").rglob("*")), root / "emulator-state.json"]:
        if p.is_file():
            s = p.stat()
            found[str(p)] = (s.st_size, s.st_mtime_ns)
    return found


def domains(st: LabState) -> dict[str, list[tuple[str, bool]]]:
    out = {}
    for h in st.data["hosts"]:
        conn = libvirt.open(st.socket_uri(h["name"]))
        try:
            out[h["name"]] = sorted((d.name(), bool(d.isActive())) for d in conn.listAllDomains())
        finally:
            conn.close()
    return out


def expected_disks(st: LabState, vm: dict[str, Any]) -> list[tuple[int, str, int]]:
    """The lab shape of a VM's disks, from the files as the site holds them."""
    lay = st.layout(vm["host"])
    out = []
    for d in vm["disks"]:
        allocated = os.stat(lay.datastore_in_controller(d["path"])).st_blocks * 512
        out.append((*scale_disk(d["size"], allocated, SCALE), d["format"]))
    return [(size, fmt, data) for size, data, fmt in out]


def evacuation(config: str, env: dict[str, str] | None = None) -> list[tuple[str, list[str]]]:
    res = cli("plan", "-c", config, "--evacuate", "--json", env=env)
    assert res.returncode == 0, res.stderr
    return [(w["host"], sorted(m["label"] for m in w["moves"]))
            for w in json.loads(res.stdout)["waves"]]


def test_mirror_writes_a_lab_shaped_like_the_site_and_it_comes_up(
        make_lab: Callable[[str], LabState], tmp_path: Path) -> None:
    st = make_lab(SITE)
    out = tmp_path / "mirror.toml"
    os.sync()  # the disks' blocks as the file system keeps them (not only in the page cache)
    before, running_before = snapshot(st.root), domains(st)

    res = cli("lab", "mirror", "-c", str(st.site_config), "-o", str(out), "--scale", "1/4")
    assert res.returncode == 0, res.stderr
    assert "3 host(s), 3 VM(s)" in res.stdout
    # read-only: no journal or state written, the emulator's state and the domains unchanged
    assert snapshot(st.root) == before
    assert domains(st) == running_before

    desc = load_description(out)
    assert desc.control == "abiquo" and desc.abiquo == "2.4" and not desc.shared_datastore
    assert desc.datastore == "/var/lib/virt"
    # Abiquo's machines (the emulator's, from the site lab's description), as Abiquo's
    # allocator and the evacuation plan count them; libvirt would say this machine's
    assert [(h.name, h.rack, h.os, h.cpus, h.ram_mib) for h in desc.hosts] == [
        ("c5-a", "r1", "centos-5.11", 4, 8192),
        ("c5-b", "r2", "centos-5.8", 4, 8192),
        ("c6-a", "r1", "centos-6.3", 8, 16384),
    ]
    site_vms = {v["name"]: v for v in st.data["vms"]}
    assert sorted(v.name for v in desc.vms) == sorted(site_vms)
    for v in desc.vms:
        s = site_vms[v.name]
        assert (v.uuid, v.host, v.cpu, v.ram_mib, v.running, v.volume, v.captured) == (
            s["uuid"], s["host"], s["cpu"], s["ram_mib"], s["running"], False, False), v.name
        assert [(d.size_mib, d.format, d.data_mib) for d in v.disks] == \
            expected_disks(st, s), v.name
    # the raw disks hold exactly their data: 256 MiB with 8 MiB, 72 with 3, at 1/4
    web = next(v for v in desc.vms if v.name == "web01")
    assert [(d.size_mib, d.data_mib) for d in web.disks] == [(64, 2)]
    db = next(v for v in desc.vms if v.name == "db01")
    assert [(d.size_mib, d.format) for d in db.disks] == [(32, "qcow2"), (18, "raw")]
    assert db.disks[1].data_mib == 1

    # `-o -` prints the same description (but for the time it was written)
    res = cli("lab", "mirror", "-c", str(st.site_config), "-o", "-", "--scale", "1/4")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[1:] == out.read_text().splitlines()[1:]

    # the mirror as a lab of its own, beside the site's
    env = dict(os.environ, REHOST_LAB_INSTANCE=str(int(os.environ["REHOST_LAB_INSTANCE"]) + 1))
    env.pop("REHOST_LAB_DIR", None)
    try:
        res = cli("lab", "up", "-d", str(out), "--json", env=env)
        assert res.returncode == 0, res.stderr
        up = json.loads(res.stdout)
        assert up["root"] != str(st.root)
        assert [(h["name"], h["rack"], h["os"]) for h in up["hosts"]] == [
            (h["name"], h["rack"], h["os"]) for h in st.data["hosts"]]
        assert sorted((v["name"], v["host"], v["cpu"], v["ram_mib"], v["running"],
                       [d["format"] for d in v["disks"]]) for v in up["vms"]) == sorted(
            (v["name"], v["host"], v["cpu"], v["ram_mib"], v["running"],
             [d["format"] for d in v["disks"]]) for v in st.data["vms"])
        res = cli("lab", "status", "--json", env=env)
        assert res.returncode == 0, res.stderr
        status = json.loads(res.stdout)
        assert status["up"]
        # the same domains (the uuids are kept: ABQ_<uuid>), running or not as on the site
        mirrored = {h["name"]: sorted((d["name"], d["state"] == "running")
                                      for d in h["domains"]) for h in status["hosts"]}
        assert mirrored == domains(st)
        # the rehearsal plans the site's evacuation: the same waves, the same VMs
        assert evacuation(up["site_config"], env) == evacuation(str(st.site_config))
    finally:
        res = cli("lab", "down", env=env)
        assert res.returncode == 0, res.stderr
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                            check=False).stdout
    assert f"rhlab{env['REHOST_LAB_INSTANCE']}-" not in listed
