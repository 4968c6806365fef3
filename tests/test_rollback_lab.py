"""`rehost rollback`: a VM that stopped part-way goes back to its source host, running on the
user's own disks, whatever the stage it stopped in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.campaign_helpers import (
    abiquo,
    add_to_site_config,
    rehost,
    rules_snapshot,
    shell,
    two_host_lab,
)

pytestmark = [pytest.mark.lab, pytest.mark.slow]

VMS = """
[[vms]]
name = "bad"
host = "c5-a"
disks = [{ size_mib = 64, format = "raw", data_mib = 3 },
         { size_mib = 32, format = "qcow2", data_mib = 1 }]
"""

FAIL_IN = '''
from rehost.hooks import hookimpl

@hookimpl(tryfirst=True)
def rehost_vm_{stage}(vm, ctx):
    raise RuntimeError("injected failure in {stage}")
'''


@pytest.mark.parametrize(("shared", "stage"), [
    (False, "transfer"),     # deployed on the target with templates; X_BACK on the source
    (True, "verify"),        # shared datastore: the user's disks are already the new VM's
    (False, "deploy"),       # undefined and preserved, not deployed anywhere
])
def test_rollback_puts_the_vm_back_with_its_own_disks(
        make_lab, tmp_path: Path, shared: bool, stage: str) -> None:
    st = make_lab(two_host_lab("rollback", VMS, shared=shared))
    plugin = tmp_path / "fail.py"
    plugin.write_text(FAIL_IN.format(stage=stage))
    add_to_site_config(st, f'[plugins]\nfiles = ["{plugin}"]')
    before = rules_snapshot(st)

    res = rehost("run", "-c", str(st.site_config))
    assert res.returncode == 1, res.stdout + res.stderr
    # the failure plugin stays in the config: rollback must not need the failed stage
    back = rehost("rollback", "-c", str(st.site_config), "--vm", "bad")
    assert back.returncode == 0, back.stdout + back.stderr
    assert "bad: back on c5-a" in back.stdout

    bad = st.vm("bad")
    src, tgt = shell(st, "c5-a"), shell(st, "c6-a")
    with abiquo(st) as client:
        avm = client.find_vm(uuid=bad["uuid"])
        assert avm.state == "ON"
        assert client.vm_machine(avm).ip == st.host("c5-a")["address"]
    assert src.run(["virsh", "-c", "qemu:///system", "domstate", bad["domain"]]).stdout.strip() \
        == "running"
    assert tgt.run(["virsh", "-c", "qemu:///system", "list", "--all", "--name"]).stdout.strip() \
        == ""
    for disk in bad["disks"]:
        assert src.checksum(disk["path"], "sha1") == disk["sha1"]
        assert not src.exists(disk["path"] + "_BACK")
    assert rules_snapshot(st) == before

    row = json.loads(rehost("status", "-c", str(st.site_config), "--json").stdout)["vms"][0]
    assert row["status"] == "rolled_back"
    report = json.loads((st.root / "reports" / "report.json").read_text())
    assert report["vms"][0]["outcome"] == "rolled_back"
    assert report["vms"][0]["still_down"] is False

    if stage != "transfer":
        return
    # a VM rolled back stays where it is: a later resume or run leaves it alone ...
    res = rehost("resume", "-c", str(st.site_config))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "nothing to resume: every VM of the campaign was rolled back" in res.stdout
    res = rehost("run", "-c", str(st.site_config))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "bad: rolled back earlier, left where it is" in res.stderr, res.stderr
    with abiquo(st) as client:
        assert client.vm_machine(client.find_vm(uuid=bad["uuid"])).ip == \
            st.host("c5-a")["address"]
    for disk in bad["disks"]:
        assert src.checksum(disk["path"], "sha1") == disk["sha1"]
    # ... until the operator names it: then it moves from the start, users told first
    plugin.write_text("")
    res = rehost("run", "-c", str(st.site_config), "--vm", "bad")
    assert res.returncode == 0, res.stdout + res.stderr
    with abiquo(st) as client:
        avm = client.find_vm(uuid=bad["uuid"])
        assert avm.state == "ON"
        assert client.vm_machine(avm).ip == st.host("c6-a")["address"]
    for disk in bad["disks"]:
        assert tgt.checksum(disk["path"], "sha1") == disk["sha1"]
    from rehost.core.journal import Journal
    from rehost.core.model import VM_STAGES

    j = Journal(st.root / "state")
    try:
        history = [(e.stage, e.event) for e in j.events(bad["domain"])]
    finally:
        j.close()
    last_rollback = max(i for i, e in enumerate(history) if e == ("rollback", "finish"))
    # every stage again (one that did not apply, as the backup with none configured, is
    # journaled as skipped)
    assert [s for s, ev in history[last_rollback + 1:] if ev in ("finish", "skip")] \
        == list(VM_STAGES)
    assert rules_snapshot(st) == before

