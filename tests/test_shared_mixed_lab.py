"""The datastore check on shared storage (issue 12): the hosts share one datastore, but some
disks were deployed to a host's own local datastore, which the other hosts do not see. Those
disks are copied (by the `copy_with` strategy, tar by default) and checked; the disks on the
shared datastore are not copied; the journal and the report say which disk was shared and
which copied, and why. Everything after the transfer handles the mixed VM: the copied disk's
X_BACK stays on the source host until `rehost confirm`, the shared one was renamed in place."""

from __future__ import annotations

import json

import pytest

from rehost.lab.lab import LabState
from tests.campaign_helpers import journal_results, rehost, shell, two_host_lab

pytestmark = [pytest.mark.lab, pytest.mark.slow]

LOCAL = "/var/lib/virt-local"
MIXED_LAB = two_host_lab("mixed", """
[[vms]]
name = "onshared"
host = "c5-a"
disks = [{ size_mib = 16, format = "raw", data_mib = 1 }]

# one disk on the shared datastore, one deployed to the host's local datastore
[[vms]]
name = "mixed"
host = "c5-a"
disks = [{ size_mib = 16, format = "raw", data_mib = 2 },
         { size_mib = 16, format = "qcow2", data_mib = 2, datastore = "local" }]

[[vms]]
name = "onlocal"
host = "c5-a"
datastore = "local"
disks = [{ size_mib = 16, format = "raw", data_mib = 2 }]
""", shared=True)


def test_disks_on_a_datastore_the_target_does_not_see_are_copied_the_others_not(
        make_lab) -> None:
    st: LabState = make_lab(MIXED_LAB)
    assert 'strategy = "shared"' in st.site_config.read_text()
    vms = {v["name"]: v for v in st.data["vms"]}
    local = [d["path"] for v in vms.values() for d in v["disks"] if d["datastore"] == "local"]
    assert len(local) == 2 and all(p.startswith(LOCAL + "/") for p in local)
    source, target = shell(st, "c5-a"), shell(st, "c6-a")
    # the local datastore is the host's own: the target does not see the source's files
    assert all(source.exists(p) and not target.exists(p) for p in local)

    res = rehost("run", "-c", str(st.site_config))
    assert res.returncode == 0, res.stdout + res.stderr

    # every disk on the target is the user's, byte for byte
    for v in vms.values():
        state = target.run(["virsh", "-c", "qemu:///system", "domstate", v["domain"]])
        assert state.stdout.strip() == "running", v["name"]
        for d in v["disks"]:
            assert target.checksum(d["path"], "sha1") == d["sha1"], d["path"]

    # the journal: per disk, shared (no byte sent) or copied, and why
    by_vm = {n: journal_results(st, v["domain"], "transfer") for n, v in vms.items()}
    assert by_vm["onshared"]["bytes"] == 0 and by_vm["onshared"]["shared"] is True
    assert by_vm["onshared"]["disks"][0]["shared"] is True
    mixed = by_vm["mixed"]["disks"]
    assert [d["shared"] for d in mixed] == [True, False]
    assert mixed[0]["bytes"] == 0 and mixed[1]["bytes"] > 0
    assert "c6-a does not see the datastore /var/lib/virt-local" in mixed[1]["why"]
    assert mixed[1]["why"].startswith("with tar:")
    assert by_vm["mixed"]["shared"] is False
    assert by_vm["mixed"]["bytes"] == mixed[1]["bytes"]
    assert [d["shared"] for d in by_vm["onlocal"]["disks"]] == [False]

    # the copied disks' X_BACK stay on the source host until confirm; the shared disks'
    # were renamed in place (the source host sees them at their path, as the user's disk)
    shared_paths = [vms["onshared"]["disks"][0]["path"], vms["mixed"]["disks"][0]["path"]]
    for p in shared_paths:
        assert not source.exists(p + "_BACK")
        assert source.checksum(p, "sha1") == target.checksum(p, "sha1")
    for p in local:
        assert source.exists(p + "_BACK") and not target.exists(p + "_BACK")

    # the report says which disk was shared and which copied, and why
    report = json.loads((st.root / "reports" / "report.json").read_text())
    disks = {d["path"]: d for v in report["vms"] for d in v["disks"]}
    for p in shared_paths:
        assert disks[p]["shared"] is True and disks[p]["bytes_moved"] == 0
    for p in local:
        assert disks[p]["shared"] is False and disks[p]["bytes_moved"] > 0
        assert "does not see the datastore /var/lib/virt-local" in disks[p]["shared_why"]
    md = (st.root / "reports" / "report.md").read_text()
    assert f"`{local[0]}`" in md and "copied (with tar: c6-a does not see" in md
    assert "| shared |" in md

    done = rehost("confirm", "-c", str(st.site_config))
    assert done.returncode == 0, done.stdout + done.stderr
    assert not any(source.exists(p + "_BACK") for p in local)
    for v in vms.values():
        for d in v["disks"]:
            assert target.checksum(d["path"], "sha1") == d["sha1"], d["path"]
