"""Abiquo 2.4 in the lab (the emulator's 2.4 profile: XML only, 2.0's field names, no global
list of VMs): VMs named by ``nodeName``, a captured VM refused by the preflight with nothing
changed, a CONFIGURED VM reported and moved, and a load-level rule the site already had on its
CentOS 5 machine changed during the campaign and back, values unchanged, at the end."""

from __future__ import annotations

import json

import pytest

from tests.campaign_helpers import abiquo, rehost, rules_snapshot, shell

pytestmark = [pytest.mark.lab, pytest.mark.slow]

LAB_24 = """
[lab]
name = "abq24"
abiquo = "2.4"

[[hosts]]
name = "c5-a"
os = "centos-5.11"

[[hosts]]
name = "c6-a"
os = "centos-6.3"

[[vms]]
name = "web-prod-1"
host = "c5-a"
disks = [{ size_mib = 32, format = "raw", data_mib = 2 }]

[[vms]]
name = "legacy"
host = "c5-a"
captured = true
disks = [{ size_mib = 16, format = "raw", data_mib = 1 }]

[[vms]]
name = "idle"
host = "c5-a"
configured = true
disks = [{ size_mib = 16, format = "qcow2", data_mib = 1 }]
"""


def test_abiquo_24_node_names_captured_configured_and_an_existing_rule(make_lab) -> None:
    st = make_lab(LAB_24)
    assert 'version = "2.4"' in st.site_config.read_text()
    legacy, idle, web = st.vm("legacy"), st.vm("idle"), st.vm("web-prod-1")
    assert legacy["domain"] == "legacy" and web["domain"] == f"ABQ_{web['uuid']}"
    with abiquo(st) as c:
        assert c.format == "xml"
        c5 = next(m for m in c.machines() if m.name == "c5-a")
        # the site's own rule on its CentOS 5 machine
        c.create_load_level_rule(c5, cpu=90, ram=80)
        states = {v.nodeName: v.state for v in c.machine_vms(c5)}
    assert states == {"web-prod-1": "ON", "legacy": "ON", "idle": "CONFIGURED"}
    before = rules_snapshot(st)
    assert [r[2:] for r in before["load"]] == [(90, 80)]

    # the preflight refuses the captured VM, says why, and reports the CONFIGURED one
    plan = rehost("plan", "-c", str(st.site_config), "--json")
    assert plan.returncode == 1, plan.stdout + plan.stderr
    data = json.loads(plan.stdout)
    assert sorted(v["label"] for v in data["vms"]) == ["idle", "legacy", "web-prod-1"]
    found = {(f["code"], f["vm"]): f for f in data["findings"]}
    captured = found[("captured", "legacy")]
    assert captured["severity"] == "critical"
    assert "deletes the VM's record" in captured["message"]
    assert found[("configured", "idle")]["severity"] == "warning"
    assert not [f for f in data["findings"] if f["severity"] == "critical"
                and f["code"] != "captured"], data["findings"]

    res = rehost("run", "-c", str(st.site_config))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "nothing was changed" in res.stderr
    assert rules_snapshot(st) == before
    src = shell(st, "c5-a")
    for v in (legacy, web, idle):
        for disk in v["disks"]:
            assert src.checksum(disk["path"], "sha1") == disk["sha1"]

    # named by nodeName: the VM users know as web-prod-1, and the CONFIGURED one
    res = rehost("run", "-c", str(st.site_config), "--vm", "web-prod-1", "--vm", "idle")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "2 of 2 VM(s) moved" in res.stdout
    target = shell(st, "c6-a")
    with abiquo(st) as c:
        for v in (web, idle):
            avm = c.find_vm(uuid=v["uuid"])
            assert avm.state == "ON" and avm.nodeName == v["name"]
            assert c.vm_machine(avm).name == "c6-a"  # type: ignore[union-attr]
            for disk in v["disks"]:
                assert target.checksum(disk["path"], "sha1") == disk["sha1"]
        # the captured VM stays where it is, untouched
        kept = c.find_vm(name="legacy")
        assert kept.state == "ON" and c.vm_machine(kept).name == "c5-a"  # type: ignore[union-attr]
    state = src.run(["virsh", "-c", "qemu:///system", "domstate", "legacy"]).stdout.strip()
    assert state == "running"
    # the site's rule is there, alone, with its values: changed for the campaign, not doubled
    assert rules_snapshot(st) == before
