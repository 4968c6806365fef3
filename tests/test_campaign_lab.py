"""Whole campaigns in the rehearsal lab, through the real command line.

What a user would notice afterwards: every VM ON in Abiquo on a CentOS 6 machine, its domain
running on that host, every file disk there holding the user's bytes (not the template), the
shared volume untouched and attached again, and the allocation rules as they were before.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rehost.core.model import VM_STAGES
from rehost.lab.lab import LabState
from tests.campaign_helpers import (
    RECORDER,
    SMALL_LAB,
    abiquo,
    add_to_site_config,
    events,
    journal_results,
    rehost,
    rules_snapshot,
    shell,
    two_host_lab,
)

pytestmark = [pytest.mark.lab, pytest.mark.slow]

SHARED_LAB = two_host_lab("shared", """
[[vms]]
name = "twodisks"
host = "c5-a"
disks = [{ size_mib = 64, format = "qcow2", data_mib = 3 },
         { size_mib = 32, format = "raw", data_mib = 2 }]

[[vms]]
name = "withvolume"
host = "c5-a"
volume = true
disks = [{ size_mib = 32, format = "raw", data_mib = 2 }]

# stays on c5-a: with PERFORMANCE, deploys go to the CentOS 6 host while it is the less loaded
[[vms]]
name = "bystander"
host = "c5-a"
cpu = 2
disks = [{ size_mib = 16, format = "raw", data_mib = 1 }]
""", shared=True)


def assert_moved(st: LabState, names: list[str] | None = None) -> None:
    """Every lab VM (or those named) runs on a CentOS 6 host with the user's own disks."""
    targets = {h["name"] for h in st.data["hosts"] if h["os"].startswith("centos-6")}
    with abiquo(st) as client:
        for v in st.data["vms"]:
            if names is not None and v["name"] not in names:
                continue
            avm = client.find_vm(uuid=v["uuid"])
            assert avm.state == "ON", f"{v['name']} is {avm.state} in Abiquo"
            machine = client.vm_machine(avm)
            assert machine is not None
            host = next(h for h in st.data["hosts"] if h["address"] == machine.ip)
            assert host["name"] in targets, f"{v['name']} is on {host['name']}"
            sh = shell(st, host["name"])
            assert "CentOS release 6" in sh.read_text("/etc/redhat-release")
            state = sh.run(["virsh", "-c", "qemu:///system", "domstate", v["domain"]])
            assert state.stdout.strip() == "running"
            for disk in v["disks"]:
                assert sh.checksum(disk["path"], "sha1") == disk["sha1"], \
                    f"{disk['path']} of {v['name']} is not the user's disk"
                assert not sh.exists(disk["path"] + "_BACK")
            if v["volume"]:
                xml = sh.run(["virsh", "-c", "qemu:///system", "dumpxml", v["domain"]]).stdout
                assert v["volume"] in xml, "the shared volume is not attached again"


def assert_volume_untouched(st: LabState) -> None:
    from rehost.lab.lab import sha1_file

    vol = st.data.get("volume")
    if vol:
        assert sha1_file(Path(vol["file"])) == vol["sha1"]


def test_scp_campaign_moves_every_vm_and_restores_the_rules(
        make_lab, tmp_path: Path) -> None:
    from importlib import resources

    st = make_lab(resources.files("rehost.lab").joinpath("default.toml").read_text())
    from rehost.lab.siteconfig import write_site_config

    write_site_config(st, storage="scp")  # the lab chooses tar
    recorder = tmp_path / "recorder.py"
    recorder.write_text(RECORDER)
    log = tmp_path / "events.jsonl"
    add_to_site_config(st, f'[plugins]\nfiles = ["{recorder}"]')
    before = rules_snapshot(st)

    plan = rehost("plan", "-c", str(st.site_config))
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "4 VM(s) to move" in plan.stdout

    res = rehost("run", "-c", str(st.site_config), "--parallel", "2", "--per-host-limit", "1",
                 env={"REHOST_TEST_EVENTS": str(log)})
    assert res.returncode == 0, res.stdout + res.stderr
    assert "4 of 4 VM(s) moved" in res.stdout

    assert_moved(st)
    assert_volume_untouched(st)
    assert rules_snapshot(st) == before

    # the source datastores keep the user's disks as _BACK until `rehost confirm`
    for v in st.data["vms"]:
        src = shell(st, v["host"])
        for disk in v["disks"]:
            assert src.checksum(disk["path"] + "_BACK", "sha1") == disk["sha1"]
            assert not src.exists(disk["path"])

    # every stage of every VM, in order, as hook events (the golden order, end to end)
    evs = events(log)
    for v in st.data["vms"]:
        mine = [(e["hook"], e["stage"]) for e in evs
                if e.get("vm") == v["domain"] and e["hook"].startswith("stage_")]
        expected = [(h, s) for s in VM_STAGES for h in ("stage_start", "stage_finish")]
        assert mine == expected
    # progress of every disk's copy, ending with the whole disk arrived
    for v in st.data["vms"]:
        for disk in v["disks"]:
            seen = [(e["done"], e["total"]) for e in evs if e["hook"] == "transfer_progress"
                    and e["path"] == disk["path"] + "_BACK"]
            assert seen, f"no progress was reported for {disk['path']}"
            assert seen[-1][0] == seen[-1][1]
            if disk["format"] == "raw":  # scp moves the whole file
                assert seen[-1][1] == disk["size"]
            assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    campaign = [(e["hook"], e["stage"]) for e in evs
                if e["hook"].startswith("stage_") and e["vm"] is None]
    assert campaign == [(h, s) for s in ("preflight", "fence", "unfence", "report")
                        for h in ("stage_start", "stage_finish")]

    report = Path(st.root / "reports" / "report.md").read_text()
    for v in st.data["vms"]:
        assert v["name"] in report and v["uuid"] in report
    assert "c5-a: no VM left to move" in report
    import json

    data = json.loads(Path(st.root / "reports" / "report.json").read_text())
    sizes = {d["path"]: d["virtual_size"] for v in data["vms"] for d in v["disks"]}
    assert sizes == {d["path"]: d["size"] for v in st.data["vms"] for d in v["disks"]}

    # no secret in the journal, the JSON log, the saved XML or the reports
    password = Path(st.data["emulator"]["password_file"]).read_text().strip().encode()
    written = [p for d in (st.root / "state", st.root / "reports") for p in d.rglob("*")
               if p.is_file()]
    assert any(p.name == "rehost.log.jsonl" for p in written)
    assert any(p.name == "journal.sqlite" for p in written)
    for p in written:
        assert password not in p.read_bytes(), f"the Abiquo password is in {p}"
    assert password not in (res.stdout + res.stderr).encode()

    # `rehost confirm` deletes the backups of verified VMs, and only those
    conf = rehost("confirm", "-c", str(st.site_config))
    assert conf.returncode == 0, conf.stdout + conf.stderr
    for v in st.data["vms"]:
        src = shell(st, v["host"])
        for disk in v["disks"]:
            assert not src.exists(disk["path"] + "_BACK")
    assert_moved(st)

    status = rehost("status", "-c", str(st.site_config), "--json")
    rows = json.loads(status.stdout)["vms"]
    assert {r["status"] for r in rows} == {"done"}
    assert {r["target_host"] for r in rows} == {"c6-a"}


def test_shared_datastore_with_performance_moves_without_copying(make_lab) -> None:
    st = make_lab(SHARED_LAB)
    from rehost.lab.siteconfig import write_site_config

    write_site_config(st, allocation="performance")
    assert 'strategy = "shared"' in st.site_config.read_text()
    before = rules_snapshot(st)

    res = rehost("run", "-c", str(st.site_config), "--vm", "twodisks", "--vm", "withvolume")
    assert res.returncode == 0, res.stdout + res.stderr
    moved = ["twodisks", "withvolume"]
    assert_moved(st, moved)
    assert_volume_untouched(st)
    assert rules_snapshot(st) == before
    for v in (st.vm(n) for n in moved):
        transfer = journal_results(st, v["domain"], "transfer")
        assert transfer["bytes"] == 0 and transfer["shared"] is True


def abiquo_24(description: str) -> str:
    """A lab description for the emulator's Abiquo 2.4 profile (XML only, 2.0's field names);
    Abiquo 2.4 supports CentOS 6.3 target hosts."""
    return description.replace("[lab]\n", '[lab]\nabiquo = "2.4"\n', 1).replace(
        'os = "centos-6.4"', 'os = "centos-6.3"')


@pytest.mark.parametrize("profile", ["2.6", "2.4"])
def test_site_plugin_strategy_and_halt(make_lab, profile: str) -> None:
    """The installed example site plugin (entry point) supplies the storage strategy chosen
    in the site config; halt disables the source machine during the run and restores it. Run
    against both of the emulator's Abiquo profiles (2.4: the client speaks XML only)."""
    st = make_lab(SMALL_LAB.replace("[lab]\n", '[lab]\nabiquo = "2.6"\n', 1)
                  if profile == "2.6" else abiquo_24(SMALL_LAB))
    assert f'version = "{profile}"' in st.site_config.read_text()
    from rehost.lab.siteconfig import write_site_config

    write_site_config(st, storage="site-rsync", allocation="halt")
    listing = rehost("plugins", "-c", str(st.site_config))
    assert "site-rsync" in listing.stdout and "example-site" in listing.stdout
    before = rules_snapshot(st)

    res = rehost("run", "-c", str(st.site_config), "--vm", "good")
    assert res.returncode == 0, res.stdout + res.stderr
    assert rules_snapshot(st) == before
    good = st.vm("good")
    transfer = journal_results(st, good["domain"], "transfer")
    assert transfer["site_plugin"] == "rehost-example-site"
    target = shell(st, "c6-a")
    disk = good["disks"][0]
    assert target.checksum(disk["path"], "sha1") == disk["sha1"]
    st_file = target.stat(disk["path"])
    assert st_file.allocated < st_file.size // 4, "rsync --sparse should keep the disk thin"
    # the VM not asked for stays where it was, untouched
    bad = st.vm("bad")
    with abiquo(st) as client:
        assert client.vm_machine(client.find_vm(uuid=bad["uuid"])).ip == \
            st.host("c5-a")["address"]


FAILING_PLUGIN = '''
from rehost.hooks import hookimpl

@hookimpl(tryfirst=True)
def rehost_vm_transfer(vm, ctx):
    if vm.label == "bad":
        raise RuntimeError("injected: the copy link broke")
    return None
'''


def test_a_failed_vm_stops_safely_and_the_others_go_on(make_lab, tmp_path: Path) -> None:
    st = make_lab(SMALL_LAB)
    plugin = tmp_path / "breaker.py"
    plugin.write_text(FAILING_PLUGIN)
    add_to_site_config(st, f'[plugins]\nfiles = ["{plugin}"]')
    before = rules_snapshot(st)

    res = rehost("run", "-c", str(st.site_config))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "FAILED: ABQ_" in res.stdout
    assert rules_snapshot(st) == before

    good, bad = st.vm("good"), st.vm("bad")
    target = shell(st, "c6-a")
    assert target.checksum(good["disks"][0]["path"], "sha1") == good["disks"][0]["sha1"]
    # the failed VM's disk is safe: X_BACK on the source host, with the user's bytes
    src = shell(st, "c5-a")
    assert src.checksum(bad["disks"][0]["path"] + "_BACK", "sha1") == bad["disks"][0]["sha1"]

    import json

    rows = {r["label"]: r for r in json.loads(
        rehost("status", "-c", str(st.site_config), "--json").stdout)["vms"]}
    assert rows["bad"]["status"] == "failed" and rows["bad"]["stage"] == "transfer"
    assert "injected: the copy link broke" in rows["bad"]["error"]
    assert rows["good"]["status"] == "done"
    report = Path(st.root / "reports" / "report.md").read_text()
    assert "failed in stage `transfer`" in report
    assert "kept under their backup names on the source host" in report


CORRUPTING_PLUGIN = '''
from rehost.hooks import hookimpl

@hookimpl
def rehost_stage_finish(stage, vm, ctx, result):
    # fault injection: a disk damaged on the target after the swap
    if vm is not None and vm.label == "bad" and stage == "swap_disks":
        path = vm.file_disks()[0].source
        ctx.shell(vm.target_host).run(["dd", "if=/dev/zero", "of=" + path, "bs=512",
                                       "count=1", "conv=notrunc"])
'''


@pytest.mark.parametrize("verify", ["checksum", "size"])
def test_verify_catches_a_damaged_disk_and_keeps_the_backup(make_lab, tmp_path: Path,
                                                            verify: str) -> None:
    """Whole-disk checksums, or (verify = "size") the size and sampled blocks, the first
    among them."""
    st = make_lab(SMALL_LAB)
    plugin = tmp_path / "corrupt.py"
    plugin.write_text(CORRUPTING_PLUGIN)
    add_to_site_config(st, f'[plugins]\nfiles = ["{plugin}"]')
    add_to_site_config(st, f'[storage.options]\nverify = "{verify}"')

    res = rehost("run", "-c", str(st.site_config), "--vm", "bad", "--delete-backups")
    assert res.returncode == 1, res.stdout + res.stderr
    import json

    row = json.loads(rehost("status", "-c", str(st.site_config), "--json").stdout)["vms"][0]
    assert row["status"] == "failed" and row["stage"] == "verify"
    assert "the user's disk had" in row["error"]
    if verify == "size":
        assert "differs from the user's disk in 1 of" in row["error"], row["error"]
    # cleanup never ran: the user's disk is still on the source host, intact
    bad = st.vm("bad")
    src = shell(st, "c5-a")
    assert src.checksum(bad["disks"][0]["path"] + "_BACK", "sha1") == bad["disks"][0]["sha1"]


def test_tar_strategy_moves_only_the_data_and_keeps_the_disk_thin(make_lab) -> None:
    st = make_lab(SMALL_LAB)
    from rehost.lab.siteconfig import write_site_config

    write_site_config(st, storage="tar")
    # and the quicker check: size and sampled blocks instead of whole-disk checksums
    add_to_site_config(st, '[storage.options]\nverify = "size"\nsamples = 8')
    res = rehost("run", "-c", str(st.site_config), "--vm", "good")
    assert res.returncode == 0, res.stdout + res.stderr
    good = st.vm("good")
    disk = good["disks"][0]
    target = shell(st, "c6-a")
    assert target.checksum(disk["path"], "sha1") == disk["sha1"]
    on_target = target.stat(disk["path"])
    assert on_target.size == disk["size"]
    assert on_target.allocated < disk["size"] // 8, "the copy filled the holes"
    transfer = journal_results(st, good["domain"], "transfer")
    assert transfer["strategy"] == "tar"
    verify = journal_results(st, good["domain"], "verify")
    assert verify["method"] == "size+sample"
    assert [d["sample_blocks"] for d in verify["disks"]] == [8] * len(good["disks"])
    assert verify["disks"][0]["checksum"] is None  # sampled, not read whole
    assert transfer["bytes"] < disk["size"] // 8
