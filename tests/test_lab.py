"""The rehearsal lab itself: hosts up with their personalities, reachable over ssh and libvirt,
a shared datastore that is really shared, a shared block volume both hosts see; `lab down`
leaves nothing behind, and `lab up` twice in a row works."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rehost.core.errors import ConfigError
from rehost.core.hypervisor import Hypervisor
from rehost.core.remote import Shell, SshOptions
from rehost.lab import hosts as labhosts
from rehost.lab import lab as labmod
from rehost.lab.description import parse_description
from rehost.lab.lab import LabState

MakeLab = Callable[[str], LabState]

SEPARATE_LAB = """
[lab]
name = "separate"

[[hosts]]
name = "c5-a"
os = "centos-5.11"

[[hosts]]
name = "c6-a"
os = "centos-6.4"

[[vms]]
name = "withvolume"
host = "c5-a"
volume = true
disks = [{ size_mib = 16, format = "raw", data_mib = 1 }]
"""

SHARED_LAB = """
[lab]
name = "shared"
shared_datastore = true

[[hosts]]
name = "c5-a"
os = "centos-5.8"

[[hosts]]
name = "c6-a"
os = "centos-6.3"
"""

RELEASES = {"centos-5.11": "CentOS release 5.11 (Final)", "centos-5.8": "CentOS release 5.8 "
            "(Final)", "centos-6.4": "CentOS release 6.4 (Final)",
            "centos-6.3": "CentOS release 6.3 (Final)"}


def rehost_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rehost.core.cli", *args], capture_output=True,
                          text=True, timeout=300, check=False)


def shell(st: LabState, host: str) -> Shell:
    return Shell(st.host(host)["address"], ssh=SshOptions(config=st.data["ssh_config"]),
                 name=host)


def alive(pid: int) -> bool:
    """A process that exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@dataclass
class Footprint:
    """What a lab left on the machine: to check that `down` removes all of it."""

    root: Path
    namespaces: list[str]
    pids: set[int]
    volume_file: str | None


def footprint(st: LabState) -> Footprint:
    pids: set[int] = set()
    for h in st.data["hosts"]:
        for f in st.layout(h["name"]).pid_files():
            if (pid := labhosts.read_pid(f)) is not None:
                pids.add(pid)
    if (st.data.get("emulator") or {}).get("pid"):
        pids.add(int(st.data["emulator"]["pid"]))
    namespaces = labhosts.lab_namespaces()
    for ns in namespaces:
        pids.update(labhosts.netns_pids(ns))
    volume = st.data.get("volume")
    return Footprint(st.root, namespaces, pids, volume["file"] if volume else None)


def mounts_mentioning(path: Path) -> list[str]:
    """Lines of every process's mountinfo (ours first) that mention ``path``."""
    pattern = re.compile(re.escape(str(path)) + r"(?=/|\s|$)")
    found = []
    for info in [Path("/proc/self/mountinfo"), *Path("/proc").glob("[0-9]*/mountinfo")]:
        try:
            text = info.read_text()
        except OSError:  # the process ended while we looked
            continue
        found += [f"{info.parent.name}: {line}" for line in text.splitlines()
                  if pattern.search(line)]
    return found


def assert_gone(fp: Footprint) -> None:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                            check=True).stdout.split()
    assert not set(fp.namespaces) & set(listed), f"namespaces left: {listed}"
    assert labhosts.lab_namespaces() == []
    assert mounts_mentioning(fp.root) == []
    left = sorted(p for p in fp.pids if alive(p))
    assert left == [], f"processes left: {left}"
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True,
                           check=True).stdout
    assert str(fp.root) not in loops, loops
    if fp.volume_file:
        assert fp.volume_file not in loops
    assert not fp.root.exists()


def lab_status() -> dict[str, Any]:
    res = rehost_cli("lab", "status", "--json")
    assert res.returncode == 0, res.stderr
    data: dict[str, Any] = json.loads(res.stdout)
    return data


def assert_up(st: LabState, description: str) -> dict[str, Any]:
    """`rehost lab status --json` shows every host with its daemons up."""
    desc = parse_description(description)
    status = lab_status()
    assert status["up"] is True and status["root"] == str(st.root)
    assert sorted(status["namespaces"]) == sorted(
        [labhosts.bridge_ns()] + [labhosts.netns_prefix() + h.name for h in desc.hosts])
    by_name = {h["name"]: h for h in status["hosts"]}
    assert sorted(by_name) == sorted(h.name for h in desc.hosts)
    for h in desc.hosts:
        shown = by_name[h.name]
        assert shown["release"] == RELEASES[h.os]
        assert shown["daemons"] == {"sshd-lab.pid": True, "libvirtd.pid": True,
                                    "virtlogd.pid": True}
    for v in desc.vms:
        domains = {d["name"]: d["state"] for d in by_name[v.host]["domains"]}
        assert domains.get(v.domain) == ("running" if v.running else "off")
    return status


# -- lab descriptions ------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("[lab]\nname = 'x'\nshared = true\n[[hosts]]\nname = 'a'\nos = 'centos-5.11'\n",
     "lab description: unknown key lab.'shared'"),
    ("[[hosts]]\nname = 'a'\nos = 'centos-5.11'\nmemory = 4\n",
     "lab description: unknown key hosts[0].'memory'"),
    ("[[hosts]]\nname = 'a'\nos = 'centos-7'\n",
     "lab description: hosts[0].os is 'centos-7': choose one of centos-5.11"),
    ("[[hosts]]\nname = 'a'\nos = 'centos-5.11'\n[[vms]]\nname = 'v'\nhost = 'b'\n",
     "lab description: vms[0].host 'b' is not a host"),
    ("[lab]\nname = 'x'\n", "lab description: no hosts"),
])
def test_a_lab_description_error_is_clear(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_description(text, "bad.toml")
    assert str(err.value).startswith(expected), str(err.value)


def test_lab_up_with_a_bad_description_exits_2_and_changes_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[[hosts]]\nname = 'a'\nos = 'debian-12'\n")
    env = dict(os.environ, REHOST_LAB_DIR=str(tmp_path / "lab"))
    res = subprocess.run([sys.executable, "-m", "rehost.core.cli", "lab", "up", "-d", str(bad)],
                         capture_output=True, text=True, timeout=60, env=env, check=False)
    assert res.returncode == 2
    assert "hosts[0].os is 'debian-12': choose one of" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "lab").exists()


# -- a lab up and down -----------------------------------------------------------------------


@pytest.mark.lab
@pytest.mark.slow
def test_lab_hosts_volume_and_a_clean_down(make_lab: MakeLab) -> None:
    st = make_lab(SEPARATE_LAB)
    assert_up(st, SEPARATE_LAB)

    # each host shows its personality over ssh, and its own name
    for h in st.data["hosts"]:
        sh = shell(st, h["name"])
        assert sh.read_text("/etc/redhat-release").strip() == RELEASES[h["os"]]
        assert sh.run(["hostname"]).stdout.strip() == h["name"]

    # the facts rehost reads through libvirt (qemu+ssh) and ssh
    for h, major, version in (("c5-a", 5, "5.11"), ("c6-a", 6, "6.4")):
        with Hypervisor(st.ssh_uri(h), name=h) as hv:
            facts = hv.facts(shell(st, h), "/var/lib/virt")
        assert (facts.hostname, facts.os_release) == (h, RELEASES[st.host(h)["os"]])
        assert (facts.centos_major, facts.centos_version) == (major, version)
        assert facts.datastore == "/var/lib/virt"
        assert facts.datastore_free_bytes is not None and facts.datastore_free_bytes > 0
        assert re.fullmatch(r"\d+\.\d+\.\d+", facts.libvirt_version)
        assert facts.cpus >= 1 and facts.memory_mib > 0

    # datastores are each host's own: a file written on one is not on the other
    probe = f"/var/lib/virt/probe-{secrets.token_hex(4)}"
    shell(st, "c5-a").write_text(probe, "only on c5-a\n")
    assert shell(st, "c5-a").exists(probe)
    assert not shell(st, "c6-a").exists(probe)

    # the shared volume is one block device both hosts see: what one writes, the other reads
    dev = st.data["volume"]["device"]
    assert st.vm("withvolume")["volume"] == dev
    for h in ("c5-a", "c6-a"):
        sh = shell(st, h)
        assert sh.run(["test", "-b", dev], check=False).exit_code == 0, f"{dev} on {h}"
        head = sh.run(["dd", f"if={dev}", "bs=29", "count=1"], check=False).stdout
        assert head == "rehost-lab shared volume lun0"
    marker = secrets.token_hex(8)
    offset = 16 * 1024 * 1024 // 512  # past the volume's known content
    shell(st, "c5-a").run(["sh", "-c", f"printf %s {marker} | dd of={dev} bs=512 "
                                       f"seek={offset} conv=notrunc,fsync oflag=direct 2>&1"])
    seen = shell(st, "c6-a").run(["dd", f"if={dev}", "bs=512", f"skip={offset}", "count=1",
                                  "iflag=direct"]).stdout
    assert seen.startswith(marker)
    # and the VM on c5-a has it attached
    xml = shell(st, "c5-a").run(["virsh", "-c", "qemu:///system", "dumpxml",
                                 st.vm("withvolume")["domain"]]).stdout
    assert f"<source dev='{dev}'" in xml

    fp = footprint(st)
    assert len(fp.pids) >= 2 * 3 + 2  # 3 daemons a host, a qemu, the emulator
    daemons = [labhosts.read_pid(f) for h in st.data["hosts"]
               for f in st.layout(h["name"]).pid_files()]
    assert all(p is not None and alive(p) for p in daemons), daemons
    labmod.down()
    assert_gone(fp)
    assert lab_status() == {"up": False, "namespaces": []}


@pytest.mark.lab
@pytest.mark.slow
def test_shared_datastore_and_lab_up_twice(make_lab: MakeLab, tmp_path: Path) -> None:
    st = make_lab(SHARED_LAB)
    assert_up(st, SHARED_LAB)
    first = footprint(st)

    # `lab up` again, on a lab that is up: the second clears the first
    st = labmod.up(tmp_path / "lab.toml")
    assert_up(st, SHARED_LAB)
    old = sorted(p for p in first.pids if alive(p))
    assert old == [], f"processes of the first lab left: {old}"
    # the hosts' mounts live in their own namespaces, not in ours
    assert str(st.root) not in Path("/proc/self/mountinfo").read_text()

    # one datastore: what one host writes, the other reads, and removes
    a, b = shell(st, "c5-a"), shell(st, "c6-a")
    for h in ("c5-a", "c6-a"):
        assert shell(st, h).read_text("/etc/redhat-release").strip() == \
            RELEASES[st.host(h)["os"]]
    probe = f"/var/lib/virt/probe-{secrets.token_hex(4)}"
    text = f"written on c5-a {secrets.token_hex(8)}\n"
    a.write_text(probe, text)
    assert b.read_text(probe) == text
    assert a.stat(probe).size == b.stat(probe).size == len(text)
    b.remove(probe)
    assert not a.exists(probe)

    fp = footprint(st)
    labmod.down()
    assert_gone(fp)
