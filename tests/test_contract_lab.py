"""The plugin contract, end to end: a storage strategy and a notifier built from ``rehost.api``
alone (no built-in strategy under them), loaded from site plugin files, carry whole campaigns
in the lab, ``rehost confirm`` and ``rehost rollback`` included.

The plugins are ``tests/data/contract/contract_copy.py`` (storage strategy ``contract-copy``)
and ``contract_notify.py`` (notifier ``contract-notify``, with its own settings table), copied
into the test's folder under the names the plugins take (a plugin file's stem is its name).
"""

from __future__ import annotations

import ast
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rehost.lab.lab import LabState
from rehost.lab.siteconfig import write_site_config
from tests.campaign_helpers import (
    abiquo,
    add_to_site_config,
    journal_results,
    rehost,
    rules_snapshot,
    shell,
    two_host_lab,
)

pytestmark = [pytest.mark.lab, pytest.mark.slow]

DATA = Path(__file__).parent / "data" / "contract"
VIRSH = ["virsh", "-c", "qemu:///system"]

MOVE_LAB = two_host_lab("contract", """
[[vms]]
name = "moved"
host = "c5-a"
disks = [{ size_mib = 48, format = "raw", data_mib = 3 },
         { size_mib = 32, format = "qcow2", data_mib = 2 }]
""")

#: "xfer" fails at transfer (deployed on c6-a with template disks), "boot" at start (the
#: user's disks swapped in on c6-a); both keep X_BACK on c5-a (the copy is not shared)
ROLLBACK_LAB = two_host_lab("contract-rb", """
[[vms]]
name = "xfer"
host = "c5-a"
disks = [{ size_mib = 32, format = "raw", data_mib = 2 },
         { size_mib = 16, format = "qcow2", data_mib = 1 }]

[[vms]]
name = "boot"
host = "c5-a"
disks = [{ size_mib = 32, format = "raw", data_mib = 2 },
         { size_mib = 16, format = "qcow2", data_mib = 1 }]
""")

FAIL_PLUGIN = '''
from rehost.api import hookimpl


@hookimpl(tryfirst=True)
def rehost_vm_transfer(vm, ctx):
    if vm.label == "xfer":
        raise RuntimeError("injected failure at transfer")


@hookimpl(tryfirst=True)
def rehost_vm_start(vm, ctx):
    if vm.label == "boot":
        raise RuntimeError("injected failure at start")
'''


def rehost_imports(path: Path) -> set[str]:
    """The rehost modules a source file imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m.split(".")[0] == "rehost"}


def test_the_contract_plugins_use_only_rehost_api() -> None:
    for name in ("contract_copy.py", "contract_notify.py"):
        assert rehost_imports(DATA / name) == {"rehost.api"}, name
    tree = ast.parse((DATA / "contract_copy.py").read_text())
    strategy = next(n for n in ast.walk(tree)
                    if isinstance(n, ast.ClassDef) and n.name == "ContractCopy")
    assert [ast.unparse(b) for b in strategy.bases] == ["StorageStrategy"]


def contract_site(st: LabState, tmp_path: Path, verify: str, *extra: Path) -> Path:
    """The lab's site config with storage ``contract-copy`` and the notifier; returns the
    notifier's log."""
    plugins = []
    for name in ("contract-copy", "contract-notify"):
        dest = tmp_path / f"{name}.py"
        shutil.copyfile(DATA / f"{name.replace('-', '_')}.py", dest)
        plugins.append(dest)
    log = tmp_path / "notified.log"
    write_site_config(st, storage="contract-copy")
    files = ", ".join(json.dumps(str(p)) for p in [*plugins, *extra])
    add_to_site_config(st, f'[storage.options]\nverify = "{verify}"')
    add_to_site_config(st, f"[plugins]\nfiles = [{files}]")
    add_to_site_config(st, f"[plugins.contract-notify]\nlog = {json.dumps(str(log))}")
    return log


def notified(log: Path) -> list[tuple[str, ...]]:
    """The notifier's lines: (event, VM name)."""
    return [tuple(line.split()) for line in log.read_text().splitlines()]


def rollback_result(st: LabState, vm: str) -> dict[str, Any]:
    """What the last finished rollback of a VM returned (the journal's finished stages start
    over after a rollback)."""
    from rehost.core.journal import Journal

    j = Journal(st.root / "state")
    try:
        found = [e.data for e in j.events(vm) if (e.stage, e.event) == ("rollback", "finish")]
    finally:
        j.close()
    assert found, f"no rollback of {vm} finished"
    return found[-1]


def report(st: LabState) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((st.root / "reports" / "report.json").read_text())
    return data


def test_a_site_strategy_and_notifier_move_a_vm_and_confirm_deletes_its_backups(
        make_lab: Callable[[str], LabState], tmp_path: Path) -> None:
    st = make_lab(MOVE_LAB)
    log = contract_site(st, tmp_path, "checksum")
    before = rules_snapshot(st)
    vm = st.vm("moved")
    backups = [d["path"] + "_BACK" for d in vm["disks"]]

    res = rehost("run", "-c", str(st.site_config))
    assert res.returncode == 0, res.stdout + res.stderr
    assert rules_snapshot(st) == before

    rep = report(st)
    [row] = rep["vms"]
    assert row["outcome"] == "done"
    assert row["transfer_strategy"] == "contract-copy"
    assert row["verified"] is True
    assert row["verify_method"] == "checksum"
    assert row["checksum_verified"] is True
    assert row["target_host"] == "c6-a"
    assert row["backups_pending"] == backups
    assert [b["path"] for b in rep["backups_pending"]] == backups
    assert [(d["checksum"], d["algorithm"]) for d in row["disks"]] == \
        [(d["sha1"], "sha1") for d in vm["disks"]]
    src, tgt = shell(st, "c5-a"), shell(st, "c6-a")
    for disk in vm["disks"]:
        assert src.checksum(disk["path"] + "_BACK", "sha1") == disk["sha1"]
        assert not src.exists(disk["path"])
        assert tgt.checksum(disk["path"], "sha1") == disk["sha1"]
        assert not tgt.exists(disk["path"] + "_BACK")
    with abiquo(st) as client:
        avm = client.find_vm(uuid=vm["uuid"])
        assert avm.state == "ON"
        machine = client.vm_machine(avm)
        assert machine is not None and machine.ip == st.host("c6-a")["address"]
    assert tgt.run([*VIRSH, "domstate", vm["domain"]]).stdout.strip() == "running"
    assert notified(log) == [("downtime_start", vm["domain"]), ("downtime_end", vm["domain"])]

    conf = rehost("confirm", "-c", str(st.site_config))
    assert conf.returncode == 0, conf.stdout + conf.stderr
    assert "deleted 2 backup(s)" in conf.stdout, conf.stdout
    for disk in vm["disks"]:
        assert not src.exists(disk["path"] + "_BACK")
        assert tgt.checksum(disk["path"], "sha1") == disk["sha1"]
    assert journal_results(st, vm["domain"], "cleanup")["deleted"] == backups
    rep = report(st)
    assert rep["vms"][0]["backups_pending"] == []
    assert rep["backups_pending"] == []


@pytest.mark.parametrize("verify", ["checksum", "size"])
def test_rollback_after_a_failure_at_transfer_or_start_puts_the_vms_back_intact(
        make_lab: Callable[[str], LabState], tmp_path: Path, verify: str) -> None:
    st = make_lab(ROLLBACK_LAB)
    fail = tmp_path / "fail.py"
    fail.write_text(FAIL_PLUGIN)
    log = contract_site(st, tmp_path, verify, fail)
    before = rules_snapshot(st)
    vms = {name: st.vm(name) for name in ("xfer", "boot")}

    res = rehost("run", "-c", str(st.site_config), "--parallel", "2")
    assert res.returncode == 1, res.stdout + res.stderr
    rows = {r["label"]: r for r in report(st)["vms"]}
    assert rows["xfer"]["failed_stage"] == "transfer"
    assert rows["boot"]["failed_stage"] == "start"
    assert rows["boot"]["transfer_strategy"] == "contract-copy"
    for v in vms.values():
        events = notified(log)
        assert ("downtime_start", v["domain"]) in events
        assert ("failed", v["domain"]) in events
    # the fingerprint of the verify mode chosen
    preserved = journal_results(st, vms["boot"]["domain"], "preserve_disks")["disks"]
    if verify == "checksum":
        assert all(d["checksum"] and d["sample"] is None for d in preserved)
    else:
        assert all(d["sample"]["blocks"] and d["checksum"] is None for d in preserved)

    # where each failure left the disks: X_BACK on c5-a for both; on c6-a the templates
    # (xfer) or the user's disks swapped in (boot)
    src, tgt = shell(st, "c5-a"), shell(st, "c6-a")
    for name, v in vms.items():
        for disk in v["disks"]:
            assert src.checksum(disk["path"] + "_BACK", "sha1") == disk["sha1"]
            assert (tgt.checksum(disk["path"], "sha1") == disk["sha1"]) is (name == "boot")

    back = rehost("rollback", "-c", str(st.site_config), "--vm", "xfer", "--vm", "boot")
    assert back.returncode == 0, back.stdout + back.stderr
    for name, v in vms.items():
        assert f"{name}: back on c5-a" in back.stdout, back.stdout
        for disk in v["disks"]:  # the strategy's restore_disks did it
            assert f"put {disk['path']}_BACK back at {disk['path']}" in back.stdout

    with abiquo(st) as client:
        for v in vms.values():
            avm = client.find_vm(uuid=v["uuid"])
            assert avm.state == "ON", f"{v['name']} is {avm.state} in Abiquo"
            machine = client.vm_machine(avm)
            assert machine is not None and machine.ip == st.host("c5-a")["address"]
    for v in vms.values():
        assert src.run([*VIRSH, "domstate", v["domain"]]).stdout.strip() == "running"
        for disk in v["disks"]:
            assert src.checksum(disk["path"], "sha1") == disk["sha1"], \
                f"{disk['path']} of {v['name']} is not the user's disk"
            assert not src.exists(disk["path"] + "_BACK")
    assert tgt.run([*VIRSH, "list", "--all", "--name"]).stdout.strip() == ""
    assert rules_snapshot(st) == before

    rows = {r["label"]: r for r in report(st)["vms"]}
    for name, v in vms.items():
        assert rows[name]["outcome"] == "rolled_back"
        assert rows[name]["still_down"] is False
        assert rows[name]["backups_pending"] == []
        assert ("downtime_end", v["domain"]) in notified(log)
        # the strategy's check_restored, as the rollback journaled it
        checked = rollback_result(st, v["domain"])["disks"]
        assert [d["path"] for d in checked] == [d["path"] for d in v["disks"]]
        if verify == "checksum":
            assert [d["checksum"] for d in checked] == [d["sha1"] for d in v["disks"]]
        else:
            assert all(d["sample_blocks"] for d in checked)
