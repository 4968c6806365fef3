"""Faults of the site, injected in the lab (not simulated in-process): the target host's sshd
dies while a VM's disks are being copied to it. That VM stops at a safe point; the VMs not yet
taken down are held, still running on their source host (one outage, not one per VM); once
sshd is back, `rehost resume` moves them all with their bytes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from rehost.lab import hosts as labhosts
from rehost.lab.lab import LabState
from tests.campaign_helpers import rehost, shell
from tests.test_libvirt_lab import virsh, where_is
from tests.test_resume_lab import wait_for_stage

pytestmark = [pytest.mark.lab, pytest.mark.slow]

THREE_VMS = ('[lab]\nname = "faults"\ncontrol = "libvirt"\n\n'
             '[[hosts]]\nname = "old-a"\nos = "centos-5.11"\n\n'
             '[[hosts]]\nname = "new-a"\nos = "centos-6.4"\n'
             # the first one's copy takes long enough for the fault to land inside it
             '\n[[vms]]\nname = "big"\nhost = "old-a"\n'
             'disks = [{ size_mib = 640, format = "raw", data_mib = 600 }]\n'
             + "".join(f'\n[[vms]]\nname = "vm{i}"\nhost = "old-a"\n'
                       'disks = [{ size_mib = 32, format = "raw", data_mib = 2 }]\n'
                       for i in (1, 2)))


def cold_copies(st: LabState) -> None:
    """No pre-copy (on by default for big's 600 MiB): the fault must land in the copy made
    while the VM is down, which pre-copy would have made a delta of nothing."""
    from tests.campaign_helpers import add_to_site_config

    add_to_site_config(st, "[storage.options]\nprecopy = false")


def sshd_pids(st: LabState, host: str) -> list[int]:
    """Every sshd of a lab host: its listener and one per connection."""
    found = []
    for pid in labhosts.netns_pids(st.layout(host).netns):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "sshd":
                found.append(pid)
        except OSError:
            continue
    return found


def restart_sshd(st: LabState, host: str) -> None:
    """sshd again, in the host's own namespaces (those of its libvirtd)."""
    libvirtd = labhosts.read_pid(st.layout(host).path("run") / "libvirtd.pid")
    assert libvirtd is not None
    subprocess.run(["nsenter", "-t", str(libvirtd), "-m", "-u", "-n", "/usr/sbin/sshd", "-f",
                    "/etc/ssh/sshd_config_lab"], check=True, timeout=30)
    deadline = time.monotonic() + 30
    while shell(st, host).run(["true"], check=False).exit_code != 0:
        assert time.monotonic() < deadline, "sshd did not come back"
        time.sleep(0.2)


def test_the_target_sshd_dies_mid_copy_the_others_are_held_and_resume_finishes(
        make_lab) -> None:
    st = make_lab(THREE_VMS)
    cold_copies(st)
    journal = st.root / "state" / "journal.sqlite"
    proc = subprocess.Popen([sys.executable, "-m", "rehost.core.cli", "run", "-c",
                             str(st.site_config)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for_stage(journal, "transfer", time.monotonic() + 300)
        for pid in sshd_pids(st, "new-a"):  # the target's sshd is gone, mid-copy
            os.kill(pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, out + err
    assert "held the VMs not yet powered off" in err and "`rehost resume`" in err

    status = json.loads(rehost("status", "-c", str(st.site_config), "--json").stdout)
    rows = {r["label"]: r for r in status["vms"]}
    assert (rows["big"]["status"], rows["big"]["stage"]) == ("failed", "transfer")
    for name in ("vm1", "vm2"):
        # never taken down: still running where it was, its disk untouched
        assert rows[name]["status"] == "held"
        assert virsh(st, "old-a", "domstate", name) == "running"  # (new-a is unreachable)
        disk = st.vm(name)["disks"][0]
        assert shell(st, "old-a").checksum(disk["path"], "sha1") == disk["sha1"]
    # the failed VM's disk is safe on its source host
    big = st.vm("big")["disks"][0]
    assert shell(st, "old-a").checksum(big["path"] + "_BACK", "sha1") == big["sha1"]
    report = json.loads((st.root / "reports" / "report.json").read_text())
    assert {v["label"]: v["outcome"] for v in report["vms"]} == {
        "big": "failed", "vm1": "held", "vm2": "held"}

    restart_sshd(st, "new-a")
    res = rehost("resume", "-c", str(st.site_config))
    assert res.returncode == 0, res.stdout + res.stderr
    for name in ("big", "vm1", "vm2"):
        assert where_is(st, name) == {"new-a": "running"}
        for disk in st.vm(name)["disks"]:
            assert shell(st, "new-a").checksum(disk["path"], "sha1") == disk["sha1"]
    assert "qemu-system-x86_64" in virsh(st, "new-a", "dumpxml", "vm1")


def in_host(st: LabState, host: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """A command in a lab host's own namespaces (those of its libvirtd and sshd)."""
    libvirtd = labhosts.read_pid(st.layout(host).path("run") / "libvirtd.pid")
    assert libvirtd is not None
    return subprocess.run(["nsenter", "-t", str(libvirtd), "-m", "-u", "-n", *argv],
                          capture_output=True, text=True, check=True, timeout=60)


def test_the_target_datastore_fills_up_mid_copy_nothing_is_lost_and_resume_finishes(
        make_lab) -> None:
    st = make_lab(THREE_VMS)
    cold_copies(st)
    datastore = st.host("new-a")["datastore"]
    # the target's datastore is a filesystem of its own, with room for the campaign
    in_host(st, "new-a", "mount", "-t", "tmpfs", "-o", "size=900m", "tmpfs", datastore)
    journal = st.root / "state" / "journal.sqlite"
    filler = f"{datastore}/filler"
    proc = subprocess.Popen([sys.executable, "-m", "rehost.core.cli", "run", "-c",
                             str(st.site_config), "--parallel", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        wait_for_stage(journal, "transfer", time.monotonic() + 300)
        # frozen at the start of big's copy, something else fills the datastore up
        os.killpg(proc.pid, signal.SIGSTOP)
        try:
            free = int(in_host(st, "new-a", "df", "-B1", "--output=avail",
                               datastore).stdout.split()[-1])
            in_host(st, "new-a", "fallocate", "-l", str(free - (8 << 20)), filler)
        finally:
            os.killpg(proc.pid, signal.SIGCONT)
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 1, out + err
    assert "No space left on device on new-a: its datastore /var/lib/virt has" in err, err
    assert "the datastore of new-a is full while moving big (transfer)" in err
    assert "held the VMs not yet powered off" in err and "`rehost resume`" in err

    status = json.loads(rehost("status", "-c", str(st.site_config), "--json").stdout)
    rows = {r["label"]: r for r in status["vms"]}
    assert (rows["big"]["status"], rows["big"]["stage"]) == ("failed", "transfer")
    for name in ("vm1", "vm2"):
        assert rows[name]["status"] == "held"
        assert where_is(st, name) == {"old-a": "running"}
        disk = st.vm(name)["disks"][0]
        assert shell(st, "old-a").checksum(disk["path"], "sha1") == disk["sha1"]
    big = st.vm("big")["disks"][0]
    assert shell(st, "old-a").checksum(big["path"] + "_BACK", "sha1") == big["sha1"]

    # the operator makes room, and resume finishes the campaign
    in_host(st, "new-a", "rm", "-f", filler)
    res = rehost("resume", "-c", str(st.site_config))
    assert res.returncode == 0, res.stdout + res.stderr
    for name in ("big", "vm1", "vm2"):
        assert where_is(st, name) == {"new-a": "running"}
        for disk in st.vm(name)["disks"]:
            assert shell(st, "new-a").checksum(disk["path"], "sha1") == disk["sha1"]


def test_the_target_host_reboots_between_stages_and_resume_finishes(make_lab) -> None:
    from rehost.lab.reinstall import reboot

    st = make_lab(THREE_VMS)
    journal = st.root / "state" / "journal.sqlite"
    proc = subprocess.Popen([sys.executable, "-m", "rehost.core.cli", "run", "-c",
                             str(st.site_config), "--parallel", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        # big is defined on new-a, its disks not yet there: new-a reboots now
        wait_for_stage(journal, "power_off_new", time.monotonic() + 300)
        os.killpg(proc.pid, signal.SIGSTOP)
        try:
            reboot("new-a", st.root)
        finally:
            os.killpg(proc.pid, signal.SIGCONT)
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # whatever the run made of it (a stage may have failed on the dead connection), nothing
    # is lost, and resume finishes the campaign
    big = st.vm("big")["disks"][0]
    if proc.returncode != 0:
        status = json.loads(rehost("status", "-c", str(st.site_config), "--json").stdout)
        rows = {r["label"]: r for r in status["vms"]}
        assert rows["big"]["status"] in ("failed", "done"), (out, err)
        assert shell(st, "old-a").checksum(big["path"] + "_BACK", "sha1") == big["sha1"]
        res = rehost("resume", "-c", str(st.site_config))
        assert res.returncode == 0, res.stdout + res.stderr
    for name in ("big", "vm1", "vm2"):
        assert where_is(st, name) == {"new-a": "running"}
        for disk in st.vm(name)["disks"]:
            assert shell(st, "new-a").checksum(disk["path"], "sha1") == disk["sha1"]


BARRIER = Path(__file__).parent / "data" / "faults" / "barrier_plugin.py"


def release(fifo: Path, proc: subprocess.Popen[str]) -> None:
    """Open the barrier's FIFO for writing (which lets the held VM go on), unless rehost is
    gone: a non-blocking open fails until the plugin has opened its end."""
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: the plugin has touched its marker but not opened yet
            time.sleep(0.01)
            continue
        os.write(fd, b"go\n")
        os.close(fd)
        return


def run_with_fault(st: LabState, vm: str, stage: str, event: str, fault: Any,
                   *extra: str) -> subprocess.CompletedProcess[str]:
    """Run the campaign one VM at a time; when ``vm``'s ``stage`` reaches ``event``, a test
    plugin holds that VM there (in the process, before anything else happens to it) while the
    fault is injected in the lab; then rehost goes on and the test waits for its end."""
    from tests.campaign_helpers import add_to_site_config

    add_to_site_config(st, f'[plugins]\nfiles = ["{BARRIER}"]')
    gate = st.root / "barrier"
    gate.mkdir(exist_ok=True)
    (gate / "reached").unlink(missing_ok=True)
    if not (gate / "go").exists():
        os.mkfifo(gate / "go")
    env = {**os.environ, "REHOST_TEST_BARRIER": f"{vm}:{stage}:{event}:{gate}"}
    proc = subprocess.Popen([sys.executable, "-m", "rehost.core.cli", "run", "-c",
                             str(st.site_config), "--parallel", "1", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not (gate / "reached").exists():
            if proc.poll() is not None:
                out, err = proc.communicate()
                raise AssertionError(f"rehost ended before {vm} {stage} {event}:\n{out}{err}")
            assert time.monotonic() < deadline, f"{vm} never reached {stage} {event}"
            time.sleep(0.02)  # waiting for the plugin's marker; the plugin itself holds the VM
        try:
            fault()
        finally:
            release(gate / "go", proc)
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_a_vm_that_will_not_start_on_its_target_goes_back_on_its_own_disks(make_lab) -> None:
    """No plugin pretends here: the new domain is given a disk that is not on the target,
    so libvirt refuses to start it; campaign.auto_rollback puts it back."""
    from tests.campaign_helpers import add_to_site_config

    st = make_lab(THREE_VMS)
    add_to_site_config(st, "[campaign]\nauto_rollback = true")

    def break_its_emulator() -> None:
        xml = virsh(st, "new-a", "dumpxml", "--inactive", "vm1")
        broken = re.sub(r"</devices>", "<disk type='file' device='disk'><source "
                        "file='/var/lib/virt/no-such-disk.img'/><target dev='vdz' "
                        "bus='virtio'/></disk></devices>", xml)
        path = "/tmp/vm1-broken.xml"  # in the target's own /tmp
        shell(st, "new-a").run(["sh", "-c", 'cat > "$1"', "sh", path], input=broken)
        virsh(st, "new-a", "define", path)

    done = run_with_fault(st, "vm1", "swap_disks", "finish", break_its_emulator)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "ROLLED BACK: vm1" in done.stdout
    # back where it was, running on its own disks; the others moved
    assert where_is(st, "vm1") == {"old-a": "running"}
    disk = st.vm("vm1")["disks"][0]
    assert shell(st, "old-a").checksum(disk["path"], "sha1") == disk["sha1"]
    assert not shell(st, "new-a").exists(disk["path"])
    for name in ("big", "vm2"):
        assert where_is(st, name) == {"new-a": "running"}
        for d in st.vm(name)["disks"]:
            assert shell(st, "new-a").checksum(d["path"], "sha1") == d["sha1"]


def test_a_disk_missing_on_the_source_stops_that_vm_before_it_goes_down(make_lab) -> None:
    st = make_lab(THREE_VMS)
    disk = st.vm("vm1")["disks"][0]
    moved = disk["path"] + ".elsewhere"

    def move_its_disk() -> None:  # after the preflight, before vm1's disks are looked at
        shell(st, "old-a").run(["mv", disk["path"], moved])

    done = run_with_fault(st, "vm1", "locate", "start", move_its_disk)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"vm1: its disk {disk['path']} is not on old-a: nothing was changed" in done.stderr
    status = json.loads(rehost("status", "-c", str(st.site_config), "--json").stdout)
    rows = {r["label"]: r for r in status["vms"]}
    assert (rows["vm1"]["status"], rows["vm1"]["stage"]) == ("failed", "backup_xml")
    assert where_is(st, "vm1") == {"old-a": "running"}  # never powered off
    # the operator puts the disk back; resume moves it with its bytes
    shell(st, "old-a").run(["mv", moved, disk["path"]])
    res = rehost("resume", "-c", str(st.site_config))
    assert res.returncode == 0, res.stdout + res.stderr
    for name in ("big", "vm1", "vm2"):
        assert where_is(st, name) == {"new-a": "running"}
        for d in st.vm(name)["disks"]:
            assert shell(st, "new-a").checksum(d["path"], "sha1") == d["sha1"]
