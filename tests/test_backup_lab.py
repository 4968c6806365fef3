"""The backup before the window, in the lab: each disk of each VM is copied to another lab
host (``[backup] strategy = "ssh"``) before the VM is powered off, byte for byte; a backup
location that cannot be written (a read-only file system, mounted for real on the backup host)
stops that VM before anything of it changed, while the others move."""

from __future__ import annotations

import json
import posixpath

import pytest

from rehost.core.journal import Journal
from tests.campaign_helpers import add_to_site_config, rehost, shell
from tests.test_faults_lab import in_host
from tests.test_libvirt_lab import where_is

pytestmark = [pytest.mark.lab, pytest.mark.slow]

LAB = ('[lab]\nname = "backup"\ncontrol = "libvirt"\n\n'
       '[[hosts]]\nname = "old-a"\nos = "centos-5.11"\n\n'
       '[[hosts]]\nname = "new-a"\nos = "centos-6.4"\n'
       '\n[[vms]]\nname = "vm1"\nhost = "old-a"\n'
       'disks = [{ size_mib = 48, format = "raw", data_mib = 3 },'
       ' { size_mib = 16, format = "qcow2", data_mib = 2 }]\n'
       '\n[[vms]]\nname = "vm2"\nhost = "old-a"\n'
       'disks = [{ size_mib = 32, format = "raw", data_mib = 2 }]\n'
       '\n[[vms]]\nname = "bad"\nhost = "old-a"\n'
       'disks = [{ size_mib = 32, format = "raw", data_mib = 2 }]\n')


def test_each_disk_is_backed_up_before_power_off_and_a_failed_backup_stops_its_vm(
        make_lab) -> None:
    st = make_lab(LAB)
    folder = st.host("new-a")["datastore"] + "/rehost-backups"
    add_to_site_config(st, f'[backup]\nstrategy = "ssh"\n\n[backup.options]\n'
                           f'host = "new-a"\ndir = "{folder}"\n')
    # the backup location of "bad" is a read-only file system on the backup host
    in_host(st, "new-a", "mkdir", "-p", f"{folder}/bad")
    in_host(st, "new-a", "mount", "-t", "tmpfs", "-o", "ro,size=4m", "tmpfs", f"{folder}/bad")

    res = rehost("run", "-c", str(st.site_config))
    assert res.returncode == 1, res.stdout + res.stderr  # one VM failed

    backup = shell(st, "new-a")
    for name in ("vm1", "vm2"):
        assert where_is(st, name) == {"new-a": "running"}
        for disk in st.vm(name)["disks"]:
            copy = posixpath.join(folder, name, posixpath.basename(disk["path"]))
            # the copy on the backup host holds the bytes of the user's disk, and stays thin
            assert backup.checksum(copy, "sha1") == disk["sha1"]
            stat = backup.stat(copy)
            assert stat.size == shell(st, "new-a").stat(disk["path"]).size
            if disk["format"] == "raw":
                assert stat.allocated < stat.size // 4
        # the backup finished before the power-off started
        journal = Journal(st.root / "state")
        try:
            events = [(e.stage, e.event) for e in journal.events(name)]
        finally:
            journal.close()
        assert events.index(("backup_disks", "finish")) < events.index(("power_off", "start"))

    # the failed backup: the VM still runs on its source host on its own untouched disk
    assert where_is(st, "bad") == {"old-a": "running"}
    disk = st.vm("bad")["disks"][0]
    source = shell(st, "old-a")
    assert source.checksum(disk["path"], "sha1") == disk["sha1"]
    assert not source.exists(disk["path"] + "_BACK")
    status = json.loads(rehost("status", "-c", str(st.site_config), "--json").stdout)
    rows = {r["label"]: r for r in status["vms"]}
    assert (rows["bad"]["status"], rows["bad"]["stage"]) == ("failed", "backup_disks")
    assert f"the backup to new-a:{folder}/bad failed" in rows["bad"]["error"]
    assert "Read-only file system" in rows["bad"]["error"]
    assert "nothing was changed" in rows["bad"]["error"]
    assert "nothing was changed" in res.stderr

    # the journal, the status and the report say where each copy is
    kept = rows["vm1"]["backups"]
    assert [b["state"] for b in kept] == ["kept", "kept"]
    assert {b["location"] for b in kept} == {
        posixpath.join(folder, "vm1", posixpath.basename(d["path"]))
        for d in st.vm("vm1")["disks"]}
    report = json.loads((st.root / "reports" / "report.json").read_text())
    vms = {v["label"]: v for v in report["vms"]}
    assert vms["bad"]["outcome"] == "failed"
    copies = vms["vm2"]["backups"]
    assert copies["kept"] is True
    (one,) = copies["disks"]
    assert (one["host"], one["location"]) == (
        "new-a", posixpath.join(folder, "vm2", posixpath.basename(st.vm("vm2")["disks"][0]
                                                                    ["path"])))
    assert one["checksum"] and one["algorithm"] == "sparse-sha1"
    md = (st.root / "reports" / "report.md").read_text()
    assert one["location"] in md
