"""qcow2 disks with backing files, moved with the default strategy (``tar``) on plain libvirt.

The lab makes qcow2 disks without backing files; this test gives three VMs' disks backing files
on the old host (each VM powered off for it, then started again), as an old host's disks may
have: a chain of two for ``carry`` (a relative name, then an absolute one), a base the new host
already holds, the same, for ``present``, and a base the new host holds with other bytes for
``differs``; ``linky``'s base is a symbolic link; ``leech``'s disk lies over ``donor``'s disk
(left off: ``donor`` holds it for writing). What a user notices: ``carry`` and ``present``
run on the new host on the same bytes (their disks and their backing files); ``differs`` is
refused before its disk is swapped in, its disk intact on the old host and the new host's file
untouched; ``linky`` and ``donor`` are refused by the preflight, before anything changes (moving
``donor`` would take ``leech``'s backing file away); no disk is left
pointing at a missing backing file, and the transfer's result says which backing files went
where.
"""

from __future__ import annotations

import json

import pytest

from rehost.core.remote import Shell
from rehost.lab.lab import LabState
from tests.campaign_helpers import journal_results, rehost, shell

pytestmark = [pytest.mark.lab, pytest.mark.slow]

DS = "/var/lib/virt"
TMPL = f"{DS}/tmpl"

BACKING_LAB = """
[lab]
name = "backing"
control = "libvirt"

[[hosts]]
name = "old-a"
os = "centos-5.11"

[[hosts]]
name = "new-a"
os = "centos-6.4"
""" + "".join(f"""
[[vms]]
name = "{name}"
host = "old-a"
disks = [{{ size_mib = 32, format = "qcow2", data_mib = 2 }}]
""" for name in ("carry", "present", "differs", "linky", "donor", "leech"))

VIRSH = ["virsh", "-c", "qemu:///system"]

#: writes a pattern into an image through qemu (as a guest would)
QEMU_IO = ["qemu-io", "-f", "qcow2", "-c"]


def sha1(sh: Shell, path: str) -> str:
    return sh.checksum(path, "sha1")


def raw_base(sh: Shell, path: str, seed: int) -> None:
    """A 32 MiB raw image with some data at the start."""
    sh.run(["mkdir", "-p", "--", TMPL])
    sh.run(["dd", "if=/dev/urandom", f"of={path}", "bs=64k", "count=8", "status=none"])
    sh.run(["truncate", "-s", "32M", "--", path])
    sh.run(["sh", "-c", 'printf "%s" "$2" | dd of="$1" bs=1 seek=1000 conv=notrunc status=none',
            "seed", path, f"seed {seed}"])


def overlay(sh: Shell, disk: str, backing: str, backing_fmt: str, pattern: int) -> None:
    """Make ``disk`` a qcow2 image over ``backing`` (a name relative to the disk's folder, or
    absolute) holding 64 KiB of its own."""
    sh.run(["rm", "-f", "--", disk])
    sh.run(["qemu-img", "create", "-f", "qcow2", "-F", backing_fmt, "-b", backing, disk])
    sh.run([*QEMU_IO, f"write -P {pattern} 2M 64k", disk])


def prepare(st: LabState) -> dict[str, list[str]]:
    """Give the VMs' disks their backing files; returns each VM's chain, disk first."""
    src, dst = shell(st, "old-a"), shell(st, "new-a")
    disk = {v: st.vm(v)["disks"][0]["path"]
            for v in ("carry", "present", "differs", "linky", "donor", "leech")}
    for vm in disk:
        src.run([*VIRSH, "destroy", vm])
    # carry: disk -> tmpl/mid.qcow2 (relative) -> /var/lib/virt/tmpl/root.raw (absolute)
    raw_base(src, f"{TMPL}/root.raw", 1)
    src.run(["qemu-img", "create", "-f", "qcow2", "-F", "raw", "-b", f"{TMPL}/root.raw",
             f"{TMPL}/mid.qcow2"])
    src.run([*QEMU_IO, "write -P 17 1M 64k", f"{TMPL}/mid.qcow2"])
    overlay(src, disk["carry"], "tmpl/mid.qcow2", "qcow2", 34)
    # present: the new host has the very same base already
    raw_base(src, f"{TMPL}/shared.raw", 2)
    dst.run(["mkdir", "-p", "--", TMPL])
    src.run(["scp", "-p", "-q", f"{TMPL}/shared.raw",
             f"root@{st.host('new-a')['address']}:{TMPL}/shared.raw"])
    overlay(src, disk["present"], f"{TMPL}/shared.raw", "raw", 51)
    # differs: the new host has a file of that name with other bytes
    raw_base(src, f"{TMPL}/other.raw", 3)
    raw_base(dst, f"{TMPL}/other.raw", 4)
    overlay(src, disk["differs"], f"{TMPL}/other.raw", "raw", 68)
    # linky: its base is a link
    raw_base(src, f"{TMPL}/real.raw", 5)
    src.run(["ln", "-s", "real.raw", f"{TMPL}/link.raw"])
    overlay(src, disk["linky"], f"{TMPL}/link.raw", "raw", 85)
    # leech: over the disk of another VM, donor
    overlay(src, disk["leech"], disk["donor"], "qcow2", 102)
    for vm in disk:
        if vm != "leech":
            src.run([*VIRSH, "start", vm])
    return {"carry": [disk["carry"], f"{TMPL}/mid.qcow2", f"{TMPL}/root.raw"],
            "present": [disk["present"], f"{TMPL}/shared.raw"],
            "differs": [disk["differs"], f"{TMPL}/other.raw"],
            "linky": [disk["linky"], f"{TMPL}/link.raw"],
            "donor": [disk["donor"]], "leech": [disk["leech"], disk["donor"]]}


def chain_on(sh: Shell, disk: str) -> list[str]:
    """The backing chain qemu-img resolves for ``disk`` (it fails on a missing file)."""
    out = sh.run(["qemu-img", "info", "-U", "--backing-chain", "--output=json", disk]).stdout
    return [image["filename"] for image in json.loads(out)]


def test_backing_files_travel_with_their_disks_or_the_vm_is_refused(make_lab) -> None:
    st = make_lab(BACKING_LAB)
    assert '[storage]\nstrategy = "tar"' in st.site_config.read_text()
    chains = prepare(st)
    src, dst = shell(st, "old-a"), shell(st, "new-a")
    before = {p: sha1(src, p) for chain in chains.values() for p in chain}
    theirs = sha1(dst, f"{TMPL}/other.raw")
    shared_there = sha1(dst, f"{TMPL}/shared.raw")
    assert shared_there == before[f"{TMPL}/shared.raw"] and theirs != before[f"{TMPL}/other.raw"]

    # the preflight names each backing file, and refuses the link
    plan = rehost("plan", "-c", str(st.site_config))
    assert plan.returncode == 1, plan.stdout + plan.stderr
    out = plan.stdout + plan.stderr
    assert f"has the backing file {TMPL}/mid.qcow2" in out, out
    assert f"has the backing file {TMPL}/root.raw" in out
    assert f"the backing file {TMPL}/link.raw of {chains['linky'][0]} is a symbolic link" in out
    assert (f"{chains['donor'][0]} is the backing file of {chains['leech'][0]} (domain leech): "
            "moving it would leave that disk without it") in out

    res = rehost("run", "-c", str(st.site_config), "--vm", "carry", "--vm", "present",
                 "--vm", "differs")
    assert res.returncode == 1, res.stdout + res.stderr

    # carry and present run on the new host, on the same bytes, every backing file there
    for vm in ("carry", "present"):
        state = dst.run([*VIRSH, "domstate", vm]).stdout.strip()
        assert state == "running", (vm, res.stdout + res.stderr)
        assert chain_on(dst, chains[vm][0]) == chains[vm]
        for path in chains[vm]:
            assert sha1(dst, path) == before[path], path
    assert not dst.exists(f"{TMPL}/mid.qcow2.rehost-partial")
    carried = journal_results(st, "carry", "transfer")
    assert [(b["backing"], b["how"]) for b in carried["backing_files"]] == \
        [(f"{TMPL}/root.raw", "copied"), (f"{TMPL}/mid.qcow2", "copied")]
    assert carried["disks"][0]["backing"] == [f"{TMPL}/mid.qcow2", f"{TMPL}/root.raw"]
    present = journal_results(st, "present", "transfer")
    assert [(b["backing"], b["how"]) for b in present["backing_files"]] == \
        [(f"{TMPL}/shared.raw", "already there")]
    assert journal_results(st, "carry", "verify")["ok"] is True

    # differs: refused before its disk got there; the new host's file is its own still
    rows = {r["label"]: r for r in json.loads(
        rehost("status", "-c", str(st.site_config), "--json").stdout)["vms"]}
    assert rows["differs"]["status"] == "failed" and rows["differs"]["stage"] == "transfer"
    assert f"the backing file {TMPL}/other.raw" in rows["differs"]["error"]
    assert "is not the one on old-a" in rows["differs"]["error"]
    assert sha1(dst, f"{TMPL}/other.raw") == theirs
    assert not dst.exists(chains["differs"][0])
    assert not dst.exists(chains["differs"][0] + "_BACK")
    assert sha1(src, chains["differs"][0] + "_BACK") == before[chains["differs"][0]]
    # linky and donor were not asked for, and would have been refused: they run where they
    # were, untouched
    for vm in ("linky", "donor"):
        assert rows.get(vm) is None
        assert src.run([*VIRSH, "domstate", vm]).stdout.strip() == "running"
        assert sha1(src, chains[vm][0]) == before[chains[vm][0]]
    # the old host keeps every backing file (other VMs may use them)
    for chain in chains.values():
        for path in chain[1:]:
            assert sha1(src, path) == before[path]
