"""Pre-copy in the lab (libvirt control plane, ``tar``): each disk is staged on the predicted
target while the VM runs; once it is off, only the blocks that changed are sent and the whole
copy is checked against the fingerprint. One campaign, three VMs, each with a fault injected at
the end of its ``precopy`` stage (``tests/data/faults/precopy_plugin.py``), before power-off:

- ``a-write``: the guest's disk changes after the pre-copy: the delta carries the change, and the
  target ends with the source's final bytes, having sent far less than the disk;
- ``b-flip``: the staged copy is damaged in a block the delta does not resend: the digest after
  the delta catches it, and the disk is copied in full instead;
- ``c-wrong``: the predicted target no longer has room at deploy: the VM lands elsewhere, is
  copied in full, and the staged copy is removed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.campaign_helpers import add_to_site_config, journal_results, rehost, shell
from tests.test_libvirt_lab import where_is

pytestmark = [pytest.mark.lab, pytest.mark.slow]

PLUGIN = Path(__file__).parent / "data" / "faults" / "precopy_plugin.py"

LAB = ('[lab]\nname = "precopy"\ncontrol = "libvirt"\n\n'
       '[[hosts]]\nname = "old-a"\nos = "centos-5.11"\n\n'
       '[[hosts]]\nname = "new-a"\nos = "centos-6.4"\n\n'
       '[[hosts]]\nname = "new-b"\nos = "centos-6.4"\n'
       + "".join(f'\n[[vms]]\nname = "{n}"\nhost = "old-a"\n'
                 'disks = [{ size_mib = 64, format = "raw", data_mib = 8 }]\n'
                 for n in ("a-write", "b-flip", "c-wrong")))

SIZE = 64 << 20


def test_precopy_sends_the_delta_catches_a_damaged_stage_and_falls_back_when_wrong(
        make_lab) -> None:
    st = make_lab(LAB)
    add_to_site_config(st, f'[campaign]\nparallel = 1\n\n[storage.options]\nprecopy = true\n\n'
                           f'[plugins]\nfiles = ["{PLUGIN}"]')
    plan = {"a-write": "write", "b-flip": "flip", "c-wrong": "occupy"}
    res = rehost("run", "-c", str(st.site_config),
                 env={"REHOST_TEST_PRECOPY": json.dumps(plan)})
    assert res.returncode == 0, res.stdout + res.stderr
    src = shell(st, "old-a")
    targets = ("new-a", "new-b")
    for name in plan:
        disk = st.vm(name)["disks"][0]
        pre = journal_results(st, name, "precopy")
        deploy = journal_results(st, name, "deploy")
        [copied] = journal_results(st, name, "transfer")["disks"]
        [staged] = pre["staged"]
        assert staged["staging"] == disk["path"] + ".rehost-precopy"
        # the VM runs on its target, on the source's final bytes (its backup on the source)
        assert where_is(st, name) == {deploy["host"]: "running", "old-a": "shut off"} or \
            where_is(st, name) == {deploy["host"]: "running"}
        final = src.checksum(disk["path"] + "_BACK", "sha1")
        assert shell(st, deploy["host"]).checksum(disk["path"], "sha1") == final
        # no staged copy is left anywhere
        for host in targets:
            assert not shell(st, host).exists(staged["staging"]), (name, host)

        if name == "a-write":
            assert final != disk["sha1"], "the guest's write reached its disk"
            assert pre["host"] == deploy["host"], "deploy keeps the predicted target"
            assert copied["precopied"] is True
            # two 64 KiB blocks changed: the delta sent them, not the disk
            assert copied["delta_bytes"] == 2 * 65536
            assert copied["delta_bytes"] < staged["bytes"] < SIZE
            assert copied["checked"] == "after the delta, on the target"
            # thin on the target, as on the source
            assert shell(st, deploy["host"]).stat(disk["path"]).allocated < SIZE // 4
        elif name == "b-flip":
            assert final == disk["sha1"]
            assert pre["host"] == deploy["host"]
            assert copied["precopied"] is False
            assert "was not the user's disk after the delta" in copied["precopy"]
            assert "the user's disk had" in copied["precopy"]
            assert copied["precopy"].endswith("copied in full")
            assert copied["checked"] == "as it arrived"
        else:
            assert final == disk["sha1"]
            assert pre["host"] != deploy["host"], (pre, deploy)
            assert copied["precopied"] is False
            assert copied["precopy"] == (f"pre-copied to {pre['host']} but deployed on "
                                         f"{deploy['host']}: copied in full")
    # the report says which disks were pre-copied, and why the others were copied in full
    report = json.loads((st.root / "reports" / "report.json").read_text())
    disks = {v["label"]: v["disks"][0] for v in report["vms"]}
    assert disks["a-write"]["precopied"] is True
    assert disks["a-write"]["bytes_moved"] == 2 * 65536
    assert 2 * 65536 < disks["a-write"]["precopy_bytes"] < SIZE
    assert disks["c-wrong"]["precopied"] is False
    assert "but deployed on" in disks["c-wrong"]["precopy_note"]
    md = (st.root / "reports" / "report.md").read_text()
    assert "before, only the delta in the window" in md and "not used: pre-copied to" in md
