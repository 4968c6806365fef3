"""The Abiquo client against the lab's emulator over real HTTP, with real libvirtd hosts behind
it: what Abiquo says and what libvirt on the host says must agree.

Tests that move VMs use a lab of their own (``make_lab``); the session lab is left as found.
"""

from __future__ import annotations

import os
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import libvirt
import pytest

from rehost.abiquo.client import AbiquoClient, Machine, VirtualMachine
from rehost.abiquo.errors import AbiquoError
from rehost.lab.lab import LabState, sha1_file

pytestmark = pytest.mark.lab

PRIVATE_LAB = """
[lab]
name = "emu"
datastore = "/var/lib/virt"
volume_mib = 8

[[hosts]]
name = "c5-a"
os = "centos-5.11"
cpus = 4
ram_mib = 4096

[[hosts]]
name = "c5-b"
os = "centos-5.11"
cpus = 4
ram_mib = 4096

[[hosts]]
name = "c6-a"
os = "centos-6.4"
cpus = 8
ram_mib = 16384

[[vms]]
name = "mover"
host = "c5-a"
volume = true
disks = [{ size_mib = 16, format = "raw", data_mib = 1 },
         { size_mib = 16, format = "qcow2", data_mib = 1 }]

[[vms]]
name = "stay-a"
host = "c5-a"
disks = [{ size_mib = 8, format = "raw", data_mib = 1 }]

[[vms]]
name = "stay-b1"
host = "c5-b"
disks = [{ size_mib = 8, format = "raw", data_mib = 1 }]

[[vms]]
name = "stay-b2"
host = "c5-b"
disks = [{ size_mib = 8, format = "raw", data_mib = 1 }]
"""


def client_for(st: LabState, **kw: object) -> AbiquoClient:
    emu = st.data["emulator"]
    password = Path(emu["password_file"]).read_text().strip()
    return AbiquoClient(emu["url"], emu["user"], password, version=emu["version"],
                        poll_interval=0.1, backoff=0, task_timeout=120, **kw)  # type: ignore[arg-type]


def libvirt_state(st: LabState, host: str, domain: str) -> str | None:
    """``running``, ``paused``, ``off`` or None (not defined), as the host's libvirtd says."""
    conn = libvirt.open(st.socket_uri(host))
    try:
        dom = conn.lookupByName(domain)
    except libvirt.libvirtError:
        return None
    finally:
        conn.close()
    state = dom.state()[0]
    return {libvirt.VIR_DOMAIN_RUNNING: "running",
            libvirt.VIR_DOMAIN_PAUSED: "paused"}.get(state, "off")


def hosts_running(st: LabState, domain: str) -> dict[str, str]:
    return {h["name"]: s for h in st.data["hosts"]
            if (s := libvirt_state(st, h["name"], domain)) is not None}


def virsh(st: LabState, host: str, *args: str) -> None:
    """Really run virsh against the host (over its ssh URI, as an operator would)."""
    proc = subprocess.run(["virsh", "-c", st.ssh_uri(host), *args], capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr


def machine(c: AbiquoClient, name: str) -> Machine:
    return next(m for m in c.machines() if m.name == name)


def wait_for(what: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def template_header(st: LabState, host: str, disk: dict[str, object]) -> bytes:
    """The first bytes the guest would read from the disk."""
    path = st.layout(host).datastore_in_controller(str(disk["path"]))
    if disk["format"] == "raw":
        return path.read_bytes()[:15]
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        subprocess.run(["qemu-img", "convert", "-U", "-f", str(disk["format"]), "-O", "raw",
                        str(path), str(raw)], check=True, timeout=60)
        with open(raw, "rb") as f:
            return f.read(15)


# -- the session lab (left as found) -----------------------------------------------------------


def test_lab_up_starts_the_emulator_and_its_inventory_matches_the_lab(lab: LabState) -> None:
    emu = lab.data["emulator"]
    assert stat.S_IMODE(os.stat(emu["password_file"]).st_mode) == 0o600
    assert "[abiquo]" in lab.site_config.read_text()
    c = client_for(lab)
    assert [d.name for d in c.datacenters()] and len(c.racks(c.datacenters()[0])) == 1
    machines = {m.name: m for m in c.machines()}
    assert set(machines) == {h["name"] for h in lab.data["hosts"]}
    for h in lab.data["hosts"]:
        m = machines[h["name"]]
        assert (m.type, m.state, m.ip, m.cpu, m.ram) == ("KVM", "MANAGED", h["address"],
                                                         h["cpus"], h["ram_mib"])
        on_it = [v for v in lab.data["vms"] if v["host"] == h["name"]]
        assert (m.cpuUsed, m.ramUsed) == (sum(v["cpu"] for v in on_it),
                                          sum(v["ram_mib"] for v in on_it))
        assert {v.uuid for v in c.virtual_machines(m)} == {v["uuid"] for v in on_it}
    for v in lab.data["vms"]:
        vm = c.find_vm(uuid=v["uuid"])
        assert (vm.name, vm.state) == (v["domain"], "ON")
        assert c.vm_state(vm) == "ON"
        host = c.vm_machine(vm)
        assert host is not None and host.name == v["host"]
        assert vm.link("machine") is not None and vm.link("machine").title == "KVM"  # type: ignore[union-attr]
    assert [(r.fitPolicy, r.datacenter) for r in c.fit_policy_rules()] == [("PROGRESSIVE", None)]


def test_errors_carry_abiquo_codes(lab: LabState) -> None:
    emu = lab.data["emulator"]
    bad = AbiquoClient(emu["url"], emu["user"], "wrong-password", retries=3, backoff=0)
    with pytest.raises(AbiquoError) as info:
        bad.machines()
    assert info.value.status == 401 and info.value.code == "401-UNAUTHORIZED"
    c = client_for(lab)
    vm = c.find_vm(name=lab.data["vms"][0]["name"])
    with pytest.raises(AbiquoError) as info:
        c.vm(vm.url.rsplit("/", 1)[0] + "/999")
    assert (info.value.status, info.value.code) == (404, "VM-1")
    assert "does not exist" in info.value.message
    with pytest.raises(AbiquoError) as info:
        c.deploy(vm)
    assert (info.value.status, info.value.code) == (409, "VM-7")
    with pytest.raises(AbiquoError) as info:
        c.power_on(vm)
    assert (info.value.status, info.value.code) == (409, "VM-4")
    with pytest.raises(AbiquoError) as info:
        c.find_vm(uuid="00000000-0000-0000-0000-000000000000")
    assert info.value.code == "VM-1"
    with pytest.raises(AbiquoError) as info:
        c.get(c.url + "/admin/rules/machineLoadLevel/999", "machineloadrule")
    assert (info.value.status, info.value.code) == (404, "RULE-3")
    with pytest.raises(AbiquoError) as info:
        AbiquoClient(emu["url"], emu["user"], "x", version="3.0").datacenters()
    assert info.value.status in (401, 406)


def test_power_off_and_on_reach_libvirt_on_the_right_host(lab: LabState) -> None:
    c = client_for(lab)
    v = lab.data["vms"][-1]
    vm = c.find_vm(uuid=v["uuid"])
    task = c.power_off(vm)
    assert (task.type, task.state) == ("POWER_OFF", "FINISHED_SUCCESSFULLY")
    assert c.vm(vm).state == "OFF"
    assert hosts_running(lab, v["domain"]) == {v["host"]: "off"}
    task = c.power_on(vm)
    assert (task.type, task.state) == ("POWER_ON", "FINISHED_SUCCESSFULLY")
    assert c.vm(vm).state == "ON"
    assert hosts_running(lab, v["domain"]) == {v["host"]: "running"}


def test_monitor_reflects_a_domain_shut_off_behind_abiquos_back(lab: LabState) -> None:
    c = client_for(lab)
    v = lab.data["vms"][0]
    vm = c.find_vm(uuid=v["uuid"])
    virsh(lab, v["host"], "destroy", v["domain"])
    assert c.wait_vm(vm, {"OFF"}, timeout=20).state == "OFF"
    c.power_on(vm)
    assert c.vm(vm).state == "ON" and libvirt_state(lab, v["host"], v["domain"]) == "running"


# -- a lab of the test's own (VMs move) --------------------------------------------------------


def test_deploys_land_where_rules_and_fit_policy_say(
        make_lab: Callable[[str], LabState]) -> None:
    st = make_lab(PRIVATE_LAB)
    c = client_for(st)
    v = st.vm("mover")
    vm = c.find_vm(name="mover")
    assert c.vm_machine(vm).name == "c5-a"  # type: ignore[union-attr]
    used_before = machine(c, "c5-a").cpuUsed

    # someone undefines the domain on its host: Abiquo's monitor frees the VM
    virsh(st, "c5-a", "destroy", v["domain"])
    virsh(st, "c5-a", "undefine", v["domain"])
    assert c.wait_vm(vm, {"NOT_ALLOCATED"}, timeout=20).link("machine") is None
    assert machine(c, "c5-a").cpuUsed == used_before - v["cpu"]
    user_disks = {d["path"]: d["sha1"] for d in v["disks"]}

    def deploy_lands_on() -> str:
        task = c.deploy(vm)
        assert (task.type, task.state) == ("DEPLOY", "FINISHED_SUCCESSFULLY")
        now = c.vm(vm)
        assert now.state == "ON"
        placed = c.vm_machine(now)
        assert placed is not None
        assert hosts_running(st, v["domain"]) == {placed.name: "running"}
        return str(placed.name)

    def undeploy(host: str) -> None:
        task = c.undeploy(vm)
        assert (task.type, task.state) == ("UNDEPLOY", "FINISHED_SUCCESSFULLY")
        assert c.vm(vm).state == "NOT_ALLOCATED"
        assert hosts_running(st, v["domain"]) == {}
        for d in v["disks"]:
            assert not st.layout(host).datastore_in_controller(d["path"]).exists()

    # PROGRESSIVE (the default): the most loaded machine first (c5-b runs two VMs)
    assert deploy_lands_on() == "c5-b"
    for d in v["disks"]:  # a fresh template disk, same size and format; the user's disk stays
        assert template_header(st, "c5-b", d) == b"abiquo template"
        path = st.layout("c5-a").datastore_in_controller(d["path"])
        assert sha1_file(path) == user_disks[d["path"]]
    dom_xml = libvirt.open(st.socket_uri("c5-b")).lookupByName(v["domain"]).XMLDesc()
    assert st.data["volume"]["device"] in dom_xml  # the persistent volume is attached again
    with pytest.raises(AbiquoError) as info:
        c.deploy(vm)
    assert (info.value.status, info.value.code) == (409, "VM-7")
    with pytest.raises(AbiquoError) as info:  # not a power state
        c.set_vm_state(vm, "REBOOT")
    assert (info.value.status, info.value.code) == (400, "VM-10")
    undeploy("c5-b")
    # undeploying a VM that is not deployed: accepted, nothing to do, no task to wait for
    nothing = c.undeploy(vm)
    assert nothing.untraceable and c.vm(vm).state == "NOT_ALLOCATED"
    with pytest.raises(AbiquoError) as info:
        c.power_on(vm)
    assert (info.value.status, info.value.code) == (409, "VM-11")
    assert sha1_file(Path(st.data["volume"]["file"])) == st.data["volume"]["sha1"]

    # a 1% load-level rule blocks a machine
    rule_b = c.create_load_level_rule(machine(c, "c5-b"), cpu=1, ram=1)
    assert rule_b.target is not None and rule_b.target.rel == "machine"
    with pytest.raises(AbiquoError) as info:  # one rule per machine: change it, never add
        c.create_load_level_rule(machine(c, "c5-b"), cpu=50, ram=50)
    assert info.value.status == 409
    assert deploy_lands_on() == "c5-a"
    undeploy("c5-a")
    rule_a = c.create_load_level_rule(machine(c, "c5-a"), cpu=1, ram=1)
    assert {r.id for r in c.load_level_rules()} == {rule_a.id, rule_b.id}
    assert deploy_lands_on() == "c6-a"
    undeploy("c6-a")
    c.delete_load_level_rule(rule_a)
    c.delete_load_level_rule(rule_b)
    assert c.load_level_rules() == []

    # PERFORMANCE: the least loaded machine
    old = c.fit_policy_rules()
    perf = c.create_fit_policy_rule("PERFORMANCE")
    for r in old:
        c.delete_fit_policy_rule(r)
    assert [r.fitPolicy for r in c.fit_policy_rules()] == ["PERFORMANCE"]
    assert deploy_lands_on() == "c6-a"
    undeploy("c6-a")
    c.create_fit_policy_rule("PROGRESSIVE")
    c.delete_fit_policy_rule(perf)

    # HALTED machines receive no deploys
    for name in ("c5-a", "c5-b"):
        assert c.set_machine_state(machine(c, name), "HALTED").state == "HALTED"
    assert deploy_lands_on() == "c6-a"
    halted = machine(c, "c6-a")
    assert c.set_machine_state(halted, "HALTED").state == "HALTED"
    with pytest.raises(AbiquoError) as info:  # a disabled machine refuses undeploys too
        c.undeploy(vm)
    assert (info.value.status, info.value.code) == (409, "VM-4")
    assert c.set_machine_state(halted, "MANAGED").state == "MANAGED"
    undeploy("c6-a")

    # no machine left: Abiquo's allocator refuses the deploy (409 ALLOC-0), nothing changes
    c.create_load_level_rule(machine(c, "c6-a"), cpu=1, ram=1)
    with pytest.raises(AbiquoError) as info:
        c.deploy(vm)
    assert (info.value.status, info.value.code) == (409, "ALLOC-0")
    assert "c5-a is HALTED" in info.value.message and "c6-a" in info.value.message
    assert c.vm(vm).state == "NOT_ALLOCATED" and hosts_running(st, v["domain"]) == {}
    for name in ("c5-a", "c5-b"):
        c.set_machine_state(machine(c, name), "MANAGED")
    assert {m.state for m in c.machines()} == {"MANAGED"}

    # the hypervisor login Abiquo keeps for each machine is shown only with ?credentials=true;
    # a PUT never writes it, and disabling then enabling a machine keeps its IPMI fields (a
    # PUT writes those from its body)
    for name in ("c5-a", "c5-b", "c6-a"):
        m = machine(c, name)
        assert c.get(m.url, "machine").get("password") is None
        login = c.get(m.url, "machine", params={"credentials": "true"})
        assert login["user"] == "root" and login["password"]
        ipmi = {k: c.get(m.url, "machine").get(k) for k in ("ipmiIP", "ipmiUser")}
        assert all(ipmi.values())
        c.set_machine_state(m, "HALTED")
        c.set_machine_state(m, "MANAGED")
        after = c.get(m.url, "machine", params={"credentials": "true"})
        assert (after["user"], after["password"]) == (login["user"], login["password"]), name
        assert {k: after.get(k) for k in ipmi} == ipmi
        c.request("PUT", m.href("edit"), accept="machine", content="machine",
                  body={**c.get(m.url, "machine"), "user": "intruder", "password": "x"})
        assert c.get(m.url, "machine", params={"credentials": "true"})["user"] == "root"
    # a state change neither to nor from HALTED is ignored
    assert c.set_machine_state(machine(c, "c5-a"), "STOPPED").state == "MANAGED"


def test_a_vm_is_locked_while_its_task_runs(make_lab: Callable[[str], LabState]) -> None:
    st = make_lab(PRIVATE_LAB)
    c = client_for(st)
    v = st.vm("stay-a")
    vm = c.find_vm(uuid=v["uuid"])
    accepted = c.undeploy(vm, wait=False)
    try:  # at once: LOCKED (Abiquo 2.0: VM-12), unless the undeploy already ended
        assert c.undeploy(vm, wait=False).untraceable
    except AbiquoError as exc:
        assert (exc.status, exc.code) == (409, "VM-12")
    states = set()
    while True:
        # the VM is read before the task: if the task still runs after, it ran then too
        seen = c.vm(vm).state
        task = c.task(accepted.href("status"))
        if task.state not in ("PENDING", "STARTED"):
            break
        states.add(seen)
    assert task.state == "FINISHED_SUCCESSFULLY"
    assert states == {"LOCKED"}
    assert c.vm(vm).state == "NOT_ALLOCATED"
    for d in v["disks"]:  # undeploy deletes the VM's disks on its host
        assert not st.layout("c5-a").datastore_in_controller(d["path"]).exists()
    accepted = c.deploy(vm, wait=False)
    with pytest.raises(AbiquoError) as info:
        c.deploy(vm, wait=False)
    assert (info.value.status, info.value.code) == (409, "VM-7")
    c.wait_task(accepted.href("status"))
    assert c.vm(vm).state == "ON"
    assert isinstance(c.vm(vm), VirtualMachine)


# -- the version profiles (an in-process emulator of the other profile on the session lab) --


@pytest.fixture
def emulator_24(lab: LabState):  # type: ignore[no-untyped-def]
    """The session lab's hosts behind a second, in-process emulator playing Abiquo 2.4 (its
    monitor is not started: it only reads)."""
    from rehost.lab.emulator.server import EmulatorServer, serve_in_thread
    from rehost.lab.emulator.service import Emulator

    emu = Emulator(lab, profile="2.4")
    emu.discover()
    server = EmulatorServer(emu, "admin", "pw")
    serve_in_thread(server)
    yield server
    server.shutdown()
    server.server_close()
    emu.stop()


def test_the_profiles_speak_their_versions_media_types(lab: LabState, emulator_24) -> None:  # type: ignore[no-untyped-def]
    import requests

    emu = lab.data["emulator"]
    password = Path(emu["password_file"]).read_text().strip()
    if emu["version"] != "2.6":
        pytest.skip("the session lab plays Abiquo 2.4 (REHOST_LAB_ABIQUO): this test compares "
                    "it, as 2.6, with an in-process 2.4")

    def get(base: str, path: str, auth: tuple[str, str],
            accept: str | None = None) -> requests.Response:
        headers = {"Accept": accept} if accept else {}
        return requests.get(f"{base}/{path}", auth=auth, headers=headers, timeout=10)

    machines = "admin/datacenters/1/racks/1/machines"
    for base, auth in ((emu["url"], (emu["user"], password)),
                       (emulator_24.base_url, ("admin", "pw"))):
        plain = get(base, machines, auth)  # no Accept: XML, in both
        assert plain.status_code == 200
        assert plain.headers["Content-Type"].startswith("application/vnd.abiquo.machines+xml")
        assert plain.text.lstrip().startswith("<?xml") and "<machines>" in plain.text
    # 2.6: JSON when asked; its field names
    j = get(emu["url"], machines, (emu["user"], password),
            "application/vnd.abiquo.machines+json; version=2.6")
    first = j.json()["collection"][0]
    assert "networkInterfaces" in first and "virtualSwitch" not in first
    # 2.4: XML only, 2.0's field names; no /cloud/virtualmachines; its own version only
    base, auth = emulator_24.base_url, ("admin", "pw")
    assert get(base, machines, auth,
               "application/vnd.abiquo.machines+json; version=2.4").status_code == 406
    assert get(base, machines, auth,
               "application/vnd.abiquo.machines+xml; version=2.6").status_code == 406
    assert get(base, "cloud/virtualmachines", auth).status_code == 404
    err = get(base, "cloud/virtualmachines", auth)
    assert err.headers["Content-Type"].startswith("application/vnd.abiquo.error+xml")
    assert "<errors><error><code>404-NOT FOUND</code>" in err.text
    c24 = AbiquoClient(base, "admin", "pw", version="2.4", backoff=0)
    assert c24.format == "xml"
    m = next(x for x in c24.machines() if x.name == "c5-a")
    assert "virtualSwitch" in m.raw and "networkInterfaces" not in m.raw
    vms = c24.machine_vms(m)
    assert {v.nodeName for v in vms} == {v["name"] for v in lab.data["vms"]
                                         if v["host"] == "c5-a"}
    one = c24.vm(vms[0])
    assert one.raw["idType"] == "1" and one.name == f"ABQ_{one.uuid}" and not one.captured
    # found by its uuid through the machines' lists (2.4 has no global list)
    assert c24.find_vm(uuid=one.uuid or "").url == one.url
    c26 = client_for(lab)
    assert c26.format == "json"
    assert c26.vm(one.url.replace(base, emu["url"])).raw["type"] == "MANAGED"
