"""The emulator's scheduler alone (no lab): load-level rules on datacenter, rack and machine,
fit policies, machine states."""

from __future__ import annotations

import pytest

from rehost.lab.emulator.inventory import FitRule, Inventory, LoadRule
from rehost.lab.emulator.scheduler import NoMachine, choose_machine
from rehost.lab.lab import LabState


def inventory() -> Inventory:
    hosts = [{"name": n, "address": f"198.18.9.{i}", "cpus": c, "ram_mib": r}
             for i, (n, c, r) in enumerate([("c5-a", 4, 4096), ("c5-b", 4, 4096),
                                            ("c6-a", 8, 16384)], start=11)]
    vms: list[dict[str, object]] = [
        {"name": n, "uuid": f"u-{n}", "cpu": 1, "ram_mib": 512, "disks": [], "volume": None}
        for n in ("new", "a1", "b1", "b2")]
    inv = Inventory(LabState({"hosts": hosts, "vms": vms}))
    placed = {2: "c5-a", 3: "c5-b", 4: "c5-b"}
    for vm_id, host in placed.items():
        inv.vms[vm_id].machine = inv.machine_by_host(host).id
        inv.vms[vm_id].state = "ON"
    return inv


def test_progressive_fills_the_most_loaded_machine_first() -> None:
    inv = inventory()
    assert choose_machine(inv, inv.vms[1]).name == "c5-b"


def test_performance_picks_the_least_loaded_machine() -> None:
    inv = inventory()
    inv.fit_rules[9] = FitRule(9, "PERFORMANCE")
    assert choose_machine(inv, inv.vms[1]).name == "c6-a"
    inv.fit_rules[10] = FitRule(10, "PROGRESSIVE", datacenter=1)  # the datacenter's own wins
    assert choose_machine(inv, inv.vms[1]).name == "c5-b"


def test_load_level_rules_apply_to_machine_rack_and_datacenter() -> None:
    inv = inventory()
    b = inv.machine_by_host("c5-b").id
    inv.load_rules[1] = LoadRule(1, 1, 1, "machine", b)
    assert choose_machine(inv, inv.vms[1]).name == "c5-a"
    # c5-a: 1 CPU used of 4; 50% allows 2: the new VM fits exactly (used + required <= allowed)
    inv.load_rules[2] = LoadRule(2, 50, 100, "rack", inv.RACK_ID)
    assert choose_machine(inv, inv.vms[1]).name == "c5-a"
    inv.load_rules[3] = LoadRule(3, 25, 100, "datacenter", inv.DATACENTER_ID)
    assert choose_machine(inv, inv.vms[1]).name == "c6-a"
    inv.load_rules[4] = LoadRule(4, 100, 1, "machine", inv.machine_by_host("c6-a").id)
    with pytest.raises(NoMachine) as info:
        choose_machine(inv, inv.vms[1])
    assert "c6-a: RAM 0+512 MiB exceeds 1% of 16384 MiB" in str(info.value)


def test_only_managed_machines_receive_deploys() -> None:
    inv = inventory()
    for m in inv.machines.values():
        if m.name != "c6-a":
            m.state = "HALTED"
    assert choose_machine(inv, inv.vms[1]).name == "c6-a"
    inv.machine_by_host("c6-a").state = "STOPPED"
    with pytest.raises(NoMachine, match="c6-a is STOPPED"):
        choose_machine(inv, inv.vms[1])
