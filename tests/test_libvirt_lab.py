"""Without Abiquo: the plain-libvirt control plane in the lab. The old hosts define their VMs
as old hosts do (their own QEMU path, an older machine type); rehost places each VM on a new
host, defines it there from its saved XML adapted to the target, moves the disks with the same
storage strategies, and starts it. Resume after SIGKILL and rollback work the same way."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rehost.lab.lab import OLD_EMULATOR, LabState
from tests.campaign_helpers import add_to_site_config, rehost, shell
from tests.test_resume_lab import wait_for_stage

pytestmark = [pytest.mark.lab, pytest.mark.slow]


def libvirt_lab(name: str, *, shared: bool = False) -> str:
    return (f'[lab]\nname = "{name}"\ncontrol = "libvirt"\n'
            f'shared_datastore = {"true" if shared else "false"}\n\n'
            '[[hosts]]\nname = "old-a"\nos = "centos-5.11"\n\n'
            '[[hosts]]\nname = "new-a"\nos = "centos-6.4"\n\n'
            '[[hosts]]\nname = "new-b"\nos = "centos-6.4"\n\n'
            '[[vms]]\nname = "web-1"\nhost = "old-a"\n'
            'disks = [{ size_mib = 64, format = "raw", data_mib = 3 },\n'
            '         { size_mib = 32, format = "qcow2", data_mib = 1 }]\n\n'
            '[[vms]]\nname = "db-1"\nhost = "old-a"\n'
            'disks = [{ size_mib = 48, format = "raw", data_mib = 2 }]\n')


def virsh(st: LabState, host: str, *args: str) -> str:
    return shell(st, host).run(["virsh", "-c", "qemu:///system", *args]).stdout.strip()


def where_is(st: LabState, vm: str) -> dict[str, str]:
    """The VM's domain state on every lab host that has it defined."""
    found = {}
    for h in st.data["hosts"]:
        names = virsh(st, h["name"], "list", "--all", "--name").split()
        if vm in names:
            found[h["name"]] = virsh(st, h["name"], "domstate", vm)
    return found


def assert_moved(st: LabState, vm: str) -> str:
    """The VM runs on one new host, is gone from the old one, and its disks have their bytes;
    returns the new host."""
    places = where_is(st, vm)
    assert list(places.values()) == ["running"], places
    [host] = places
    assert host.startswith("new-")
    for disk in st.vm(vm)["disks"]:
        assert shell(st, host).checksum(disk["path"], "sha1") == disk["sha1"]
    return host


def use_storage(st: LabState, strategy: str) -> None:
    cfg = st.site_config.read_text()
    st.site_config.write_text(re.sub(r'(\[storage\]\nstrategy = )"[^"]*"',
                                     rf'\1"{strategy}"', cfg))


def check_report(st: LabState, shared: bool) -> None:
    report = json.loads((st.root / "reports" / "report.json").read_text())
    assert report["outcome"] == "success"
    for v in report["vms"]:
        changes = {c["what"]: c for c in v["xml_changes"]}
        assert changes["emulator"]["old"] == OLD_EMULATOR
        assert changes["emulator"]["new"] == "/usr/bin/qemu-system-x86_64"
        old_machine = changes["machine type"]["old"]
        assert old_machine and old_machine != changes["machine type"]["new"]
        stages = {s["stage"]: s["outcome"] for s in v["stages"]}
        assert stages["await_undeployed"] == "skipped"
        assert stages["remove_new_disks"] == "skipped"
        assert stages["power_off_new"] == "skipped"
        assert v["verified"] is True
        assert v["shared_datastore"] is shared
    md = (st.root / "reports" / "report.md").read_text()
    assert "emulator" in md and OLD_EMULATOR in md


def moved_from_adapted_xml(st: LabState, vm: str) -> None:
    host = assert_moved(st, vm)
    new_xml = virsh(st, host, "dumpxml", vm)
    assert OLD_EMULATOR not in new_xml  # the target's own QEMU
    assert "/usr/bin/qemu-system-x86_64" in new_xml


def test_campaigns_with_scp_then_tar_move_the_vms_to_the_new_hosts(make_lab) -> None:
    st = make_lab(libvirt_lab("plain-copy"))
    assert "emulator" not in st.data  # no Abiquo here
    assert OLD_EMULATOR in virsh(st, "old-a", "dumpxml", "web-1")

    plan = json.loads(rehost("plan", "-c", str(st.site_config), "--json").stdout)
    assert plan["ok"] and plan["control"] == "libvirt"
    assert sorted(v["name"] for v in plan["vms"]) == ["db-1", "web-1"]

    # one VM with scp, the other with tar: the same campaign, its journal goes on
    for vm, strategy in (("web-1", "scp"), ("db-1", "tar")):
        use_storage(st, strategy)
        res = rehost("run", "-c", str(st.site_config), "--vm", vm)
        assert res.returncode == 0, res.stdout + res.stderr
        moved_from_adapted_xml(st, vm)
    # a copy: the backups stay on the old host until confirmed
    for disk in st.vm("web-1")["disks"]:
        assert shell(st, "old-a").exists(disk["path"] + "_BACK")
    check_report(st, shared=False)
    report = json.loads((st.root / "reports" / "report.json").read_text())
    assert {v["label"]: v["transfer_strategy"] for v in report["vms"]} == {
        "web-1": "scp", "db-1": "tar"}


def test_a_shared_datastore_campaign_moves_the_vms_in_place(make_lab) -> None:
    st = make_lab(libvirt_lab("plain-shared", shared=True))
    use_storage(st, "shared")
    res = rehost("run", "-c", str(st.site_config))
    assert res.returncode == 0, res.stdout + res.stderr
    for vm in ("web-1", "db-1"):
        moved_from_adapted_xml(st, vm)
    # one file, moved in place: no backup left beside it
    for disk in st.vm("web-1")["disks"]:
        assert not shell(st, "old-a").exists(disk["path"] + "_BACK")
    check_report(st, shared=True)


FAIL_AT_START = '''
from rehost.api import hookimpl

@hookimpl(tryfirst=True)
def rehost_vm_start(vm, ctx):
    if vm.name == "db-1":
        raise RuntimeError("injected: db-1 will not start on its new host")
'''


def test_sigkill_resume_and_auto_rollback_without_abiquo(make_lab, tmp_path: Path) -> None:
    """Killed during a copy, resumed; a VM that will not start on its new host goes back to
    its old one at once (campaign.auto_rollback), on its own disks, defined as it was."""
    st = make_lab(libvirt_lab("plain-resume"))
    plugin = tmp_path / "no_start.py"
    plugin.write_text(FAIL_AT_START)
    add_to_site_config(st, f'[plugins]\nfiles = ["{plugin}"]\n\n[campaign]\nauto_rollback = true')
    journal = st.root / "state" / "journal.sqlite"
    proc = subprocess.Popen([sys.executable, "-m", "rehost.core.cli", "run", "-c",
                             str(st.site_config)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_stage(journal, "transfer", time.monotonic() + 300)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    res = rehost("resume", "-c", str(st.site_config))
    assert res.returncode == 1, res.stdout + res.stderr  # one VM did not move
    assert "ROLLED BACK: db-1" in res.stdout
    assert assert_moved(st, "web-1")
    status = json.loads(rehost("status", "-c", str(st.site_config), "--json").stdout)
    rows = {r["label"]: r for r in status["vms"]}
    assert rows["db-1"]["status"] == "rolled_back"
    assert rows["db-1"]["error"] == "start failed: rolled back automatically"
    assert where_is(st, "db-1") == {"old-a": "running"}
    src = shell(st, "old-a")
    for disk in st.vm("db-1")["disks"]:
        assert src.checksum(disk["path"], "sha1") == disk["sha1"]
        assert not src.exists(disk["path"] + "_BACK")
    # defined again from its own saved XML: the old host's QEMU, as before
    assert OLD_EMULATOR in virsh(st, "old-a", "dumpxml", "db-1")
    report = json.loads((st.root / "reports" / "report.json").read_text())
    db = next(v for v in report["vms"] if v["label"] == "db-1")
    assert db["outcome"] == "rolled_back" and db["still_down"] is False
    # nothing more to roll back by hand
    again = rehost("rollback", "-c", str(st.site_config), "--vm", "db-1")
    assert again.returncode == 0 and "nothing to roll back" in again.stdout
