"""Racks, as Abiquo 2.4/2.6 shows them (datacenter -> racks -> machines): the emulator serves
the lab's hosts in the racks the lab description gives them, and the ``abiquo`` control
plane's discovery reads each machine's rack, so that an evacuation plan keeps VMs in Abiquo's
racks without the site config saying them. The emulator runs in-process over real HTTP; no
lab hosts are needed (nothing here touches a hypervisor)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rehost.abiquo.client import AbiquoClient
from rehost.abiquo.errors import AbiquoError
from rehost.core.campaign import Campaign
from rehost.core.config import parse_config
from rehost.core.plugins import build_plugin_manager
from rehost.lab.emulator.inventory import LoadRule
from rehost.lab.emulator.scheduler import NoMachine, choose_machine
from rehost.lab.emulator.server import EmulatorServer, serve_in_thread
from rehost.lab.emulator.service import Emulator
from rehost.lab.lab import LabState

PASSWORD = "rack-test-password"
#: (host, rack as the lab description says it; "" names none)
HOSTS = [("c5-a", "r1"), ("c5-b", "r2"), ("c6-a", "r1"), ("c6-b", "")]


def lab_state() -> LabState:
    hosts = [{"name": n, "address": f"198.18.9.{i}", "cpus": 4, "ram_mib": 4096, "rack": r,
              "datastore": "/var/lib/virt"}
             for i, (n, r) in enumerate(HOSTS, start=11)]
    vms: list[dict[str, object]] = [{"name": "new", "uuid": "u-new", "cpu": 1, "ram_mib": 512,
                                     "disks": [], "volume": None}]
    return LabState({"hosts": hosts, "vms": vms})


@pytest.fixture(params=["2.4", "2.6"])
def emulator(request: pytest.FixtureRequest) -> Iterator[tuple[Emulator, AbiquoClient]]:
    emu = Emulator(lab_state(), profile=request.param)  # not started: no hypervisor asked
    server = EmulatorServer(emu, "admin", PASSWORD)
    serve_in_thread(server)
    try:
        yield emu, AbiquoClient(server.base_url, "admin", PASSWORD, version=request.param,
                                poll_interval=0.1, backoff=0, task_timeout=10)
    finally:
        server.shutdown()
        server.server_close()


def test_machines_are_listed_under_the_racks_the_lab_gives_them(
        emulator: tuple[Emulator, AbiquoClient]) -> None:
    _, c = emulator
    (dc,) = c.datacenters()
    racks = c.racks(dc)
    # a host that names no rack stands in rack-1
    assert [r.name for r in racks] == ["r1", "r2", "rack-1"]
    placed = {m.name: r.name for r, m in c.racked_machines()}
    assert placed == {"c5-a": "r1", "c5-b": "r2", "c6-a": "r1", "c6-b": "rack-1"}
    assert sorted(m.name or "" for m in c.machines(racks[0])) == ["c5-a", "c6-a"]
    # each machine links to its own rack, and is found only under it
    for rack, m in c.racked_machines():
        assert m.href("rack") == rack.url
        assert c.machine(m.url).name == m.name
    c5b = next(m for _, m in c.racked_machines() if m.name == "c5-b")
    with pytest.raises(AbiquoError) as info:
        c.machine(c5b.url.replace(f"/racks/{racks[1].id}/", f"/racks/{racks[0].id}/"))
    assert info.value.status == 404


def test_a_rack_rule_holds_only_the_machines_of_its_rack(
        emulator: tuple[Emulator, AbiquoClient]) -> None:
    emu, c = emulator
    (dc,) = c.datacenters()
    r1 = next(r for r in c.racks(dc) if r.name == "r1")
    c.create_load_level_rule(r1, cpu=1, ram=1)
    rule = next(iter(emu.inv.load_rules.values()))
    assert (rule.rel, rule.target) == ("rack", r1.id)
    # r1's machines (c5-a, c6-a) take nothing; the others still do
    assert choose_machine(emu.inv, emu.inv.vms[1]).name in ("c5-b", "c6-b")
    for m in emu.inv.machines.values():
        if m.name in ("c5-b", "c6-b"):
            emu.inv.load_rules[100 + m.id] = LoadRule(100 + m.id, 1, 1, "machine", m.id)
    with pytest.raises(NoMachine):
        choose_machine(emu.inv, emu.inv.vms[1])


def test_discovery_gives_each_host_its_abiquo_rack_unless_the_site_config_says_one(
        emulator: tuple[Emulator, AbiquoClient], tmp_path: Path) -> None:
    emu, c = emulator
    password = tmp_path / "password"
    password.write_text(PASSWORD)
    hosts = "".join(
        f'[hosts.{n}]\naddress = "198.18.9.{i}"\nrole = "{"source" if "5" in n else "target"}"'
        + ('\nrack = "site-says"' if n == "c5-b" else "") + "\n\n"
        for i, (n, _) in enumerate(HOSTS, start=11))
    site = (f'[campaign]\nname = "racks"\nstate_dir = "{tmp_path / "state"}"\n\n'
            f'[abiquo]\nurl = "{c.url}"\nuser = "admin"\n'
            f'password_file = "{password}"\nversion = "{emu.profile}"\n\n' + hosts)
    cfg = parse_config(site, "site.toml")
    assert {h.name: h.rack for h in cfg.hosts.values()} == {
        "c5-a": "", "c5-b": "site-says", "c6-a": "", "c6-b": ""}
    ctx = Campaign(cfg, build_plugin_manager(entry_points=False))
    try:
        assert ctx.hooks.discover_hosts(ctx) == []  # discover = false: no new hosts
        # what the evacuation plan reads (core/evacuate.py: the hosts' racks)
        assert {h.name: h.rack for h in ctx.config.hosts.values()} == {
            "c5-a": "r1", "c5-b": "site-says", "c6-a": "r1", "c6-b": "rack-1"}
    finally:
        ctx.close()
