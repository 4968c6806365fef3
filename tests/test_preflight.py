"""Preflight: the compatibility table, and in the lab: critical findings stop a run before
anything changes; hosts discovered from Abiquo."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from rehost.abiquo.compat import COMPATIBILITY, check_compatibility
from rehost.core.model import HostFacts
from tests import test_abiquo_client as scripted
from tests.campaign_helpers import abiquo, rehost, rules_snapshot, two_host_lab

fake = scripted.fake  # the scripted HTTP server, as a fixture here too

TWO_HOST_LAB = two_host_lab("preflight", """
[[vms]]
name = "only"
host = "c5-a"
disks = [{ size_mib = 16, format = "raw", data_mib = 1 }]
""")


def facts(version: str) -> HostFacts:
    major = int(version.split(".")[0])
    return HostFacts("h", f"CentOS release {version} (Final)", major, version, "0.10.2",
                     "0.12.1", 8, 16384)


@pytest.mark.parametrize(("abiquo_version", "centos", "critical"), [
    ("2.4", "6.3", False),
    ("2.4", "6.4", True),   # 6.4 needs Abiquo 2.6
    ("2.6", "6.4", False),
    ("2.6", "6.3", False),
    ("2.6", "6.5", True),
    ("2.4", "5.11", True),
])
def test_compatibility_table(abiquo_version: str, centos: str, critical: bool) -> None:
    found = check_compatibility(abiquo_version, facts(centos), None)
    assert any(f.severity == "critical" for f in found) is critical
    assert any(f.code == "aim-version" and f.severity == "info" for f in found)


def test_the_26_path_63_hosts_are_sources_emptied_into_64_ones() -> None:
    from rehost.abiquo.compat import target_release, upgrade_source

    assert upgrade_source("2.6", facts("6.3")) and not upgrade_source("2.4", facts("6.3"))
    assert not upgrade_source("2.6", facts("6.4")) and not upgrade_source("2.6", facts("5.11"))
    # a 6.3 target of 2.6 is allowed, with a warning: its VMs would be powered off again
    found = check_compatibility("2.6", facts("6.3"), "2.1.4")
    assert [(f.severity, f.code) for f in found] == [("warning", "upgrade-6.4")]
    # an emptied host rejoins only with a release the version wants of its new hosts
    assert target_release("2.6", facts("6.4")) is None
    assert "wants CentOS 6.4.x" in (target_release("2.6", facts("6.3")) or "")
    assert target_release("2.4", facts("6.3")) is None


def test_aim_version_must_match_the_abiquo_version() -> None:
    assert not [f for f in check_compatibility("2.6", facts("6.4"), "2.1.4")
                if f.severity == "critical"]
    bad = check_compatibility("2.6", facts("6.4"), "1.5.3")
    assert [f.message for f in bad if f.severity == "critical"] == [
        "Abiquo 2.6 needs AIM 2.1.4, the config says 1.5.3"]


@pytest.mark.lab
@pytest.mark.slow
def test_a_critical_finding_stops_the_run_before_anything_changes(make_lab) -> None:
    st = make_lab(TWO_HOST_LAB)
    good = st.site_config.read_text()
    assert "downtime_accepted = true" in good
    # the AIM version the config states is not the one Abiquo needs (the emulator speaks its
    # own version only: the config's version must stay the lab's)
    version = re.search(r'version = "([\d.]+)"', good).group(1)  # type: ignore[union-attr]
    cfg = good.replace("[abiquo]\n", '[abiquo]\naim_version = "0.9"\n').replace(
        "downtime_accepted = true", "downtime_accepted = false")
    st.site_config.write_text(cfg)
    before = rules_snapshot(st)

    plan = rehost("plan", "-c", str(st.site_config))
    assert plan.returncode == 1
    needed = COMPATIBILITY[version][1]
    assert f"critical [aim-version] Abiquo {version} needs AIM {needed}, the config says 0.9" \
        in plan.stdout
    assert "critical [downtime] every VM is powered off while it moves" in plan.stdout

    res = rehost("run", "-c", str(st.site_config))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "nothing was changed" in res.stderr
    assert rules_snapshot(st) == before
    only = st.vm("only")
    with abiquo(st) as client:
        avm = client.find_vm(uuid=only["uuid"])
        assert avm.state == "ON"
        assert client.vm_machine(avm).ip == st.host("c5-a")["address"]

    # the operator's word on the command line does for the config's
    st.site_config.write_text(good.replace("downtime_accepted = true",
                                           "downtime_accepted = false"))
    res = rehost("run", "--dry-run", "-c", str(st.site_config))
    assert res.returncode == 1 and "critical [downtime]" in res.stdout, res.stdout + res.stderr
    res = rehost("run", "--dry-run", "--accept-downtime", "-c", str(st.site_config))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "dry run: these VMs would move (nothing was changed):" in res.stdout


@pytest.mark.lab
@pytest.mark.slow
def test_hosts_discovered_from_abiquo(make_lab) -> None:
    st = make_lab(TWO_HOST_LAB)
    cfg = st.site_config.read_text()
    # no [hosts.*] tables: rehost asks Abiquo for its machines and their releases
    cfg = re.sub(r'\[hosts\."[^"]+"\]\n(?:[a-z_]+ = .*\n)+', "", cfg)
    cfg = cfg.replace("[abiquo]\n", "[abiquo]\ndiscover = true\n")
    assert "[hosts." not in cfg
    st.site_config.write_text(cfg)

    plan = rehost("plan", "-c", str(st.site_config), "--json")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    data = json.loads(plan.stdout)
    assert data["targets"] == ["c6-a"]
    assert [(v["uuid"], v["source_host"]) for v in data["vms"]] == [
        (st.vm("only")["uuid"], "c5-a")]
    assert not [f for f in data["findings"] if f["severity"] == "critical"]


# -- LOCKED VMs: someone else's action is a finding at once; our own interrupted one is awaited


def _preflight_ctx(abiquo_url: str, tmp_path: Any, status: str | None) -> Any:
    from types import SimpleNamespace

    from rehost.abiquo import site
    from rehost.core.journal import Journal
    from rehost.core.model import VM
    from tests.test_abiquo_client import client

    vm = VM(name="ABQ_u7", uuid="u7", label="web01", source_host="c5-a",
            control_ref=f"{abiquo_url}/cloud/vm/7")
    journal = Journal(tmp_path / "state")
    if status:
        journal.add_vm(vm, 0)
        journal.record(vm, "power_off", "start")
    config = SimpleNamespace(hosts={}, sources=lambda: [], targets=lambda: [],
                             campaign=SimpleNamespace(task_timeout=30))

    class Ctx:  # what the Abiquo control plane reads of the campaign
        def host_by_address(self, address: str) -> None:
            return None

    ctx = Ctx()
    ctx.config, ctx.vms, ctx.journal = config, [vm], journal  # type: ignore[attr-defined]
    site._clients[ctx] = client(abiquo_url)
    return ctx


def test_a_vm_locked_by_someone_else_is_critical_at_once(fake: Any, tmp_path: Any) -> None:
    from rehost.plugins.abiquo import AbiquoControl
    from tests.test_abiquo_client import VM as VM_JSON

    fake.script["/api/admin/datacenters"] = [(200, {"collection": []})]
    fake.script["/api/cloud/vm/7"] = [(200, {**VM_JSON, "state": "LOCKED"})]
    ctx = _preflight_ctx(fake.url, tmp_path, None)
    found = AbiquoControl().check_vms(ctx)
    ctx.journal.close()
    assert [(f.severity, f.code, f.vm) for f in found if f.code == "vm-state"] == [
        ("critical", "vm-state", "web01")]
    assert [s.path for s in fake.seen].count("/api/cloud/vm/7") == 1  # read once, no waiting


def test_a_vm_locked_by_our_own_interrupted_run_is_awaited(fake: Any, tmp_path: Any) -> None:
    from rehost.plugins.abiquo import AbiquoControl
    from tests.test_abiquo_client import VM as VM_JSON

    fake.script["/api/admin/datacenters"] = [(200, {"collection": []})]
    fake.script["/api/cloud/vm/7"] = [(200, {**VM_JSON, "state": "LOCKED"}),
                                      (200, {**VM_JSON, "state": "LOCKED"}),
                                      (200, {**VM_JSON, "state": "OFF"})]
    ctx = _preflight_ctx(fake.url, tmp_path, "running")
    found = AbiquoControl().check_vms(ctx)
    ctx.journal.close()
    assert not [f for f in found if f.code in ("vm-state", "abiquo-vm")]
    assert [s.path for s in fake.seen].count("/api/cloud/vm/7") == 3


LAB_26_PATH = """
[lab]
name = "path26"
abiquo = "2.6"

[[hosts]]
name = "c63"
os = "centos-6.3"

[[hosts]]
name = "c64"
os = "centos-6.4"

[[vms]]
name = "on-63"
host = "c63"
disks = [{ size_mib = 16, format = "raw", data_mib = 1 }]
"""


@pytest.mark.lab
@pytest.mark.slow
def test_the_26_path_moves_the_vms_of_a_63_host_to_a_64_one(make_lab) -> None:
    st = make_lab(LAB_26_PATH)
    # the site says the 6.3 host is a source: Abiquo 2.6 wants 6.4
    cfg = st.site_config.read_text()
    head = cfg.index('[hosts."c63"]')
    end = cfg.index("\n\n", head)
    st.site_config.write_text(cfg[:head] + cfg[head:end].replace('role = "target"',
                                                                  'role = "source"')
                              + cfg[end:])
    plan = rehost("plan", "--json", "-c", str(st.site_config))
    assert plan.returncode == 0, plan.stdout + plan.stderr
    findings = json.loads(plan.stdout)["findings"]
    extra = [f for f in findings if f["code"] == "extra-power-off"]
    assert [f["vm"] for f in extra] == ["on-63"]
    assert "6.4 upgrade of c63" in extra[0]["message"]
    assert not [f for f in findings if f["severity"] == "critical"]
    done = rehost("run", "-c", str(st.site_config))
    assert done.returncode == 0, done.stdout + done.stderr
    vm = st.vm("on-63")
    disk = vm["disks"][0]
    from tests.campaign_helpers import shell

    assert shell(st, "c64").checksum(disk["path"], "sha1") == disk["sha1"]
    with abiquo(st) as client:
        avm = client.find_vm(uuid=vm["uuid"])
        assert client.vm_machine(avm).ip == st.host("c64")["address"]
