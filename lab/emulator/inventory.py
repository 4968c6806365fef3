"""The emulator's inventory: what Abiquo's database would hold, and its shapes (the JSON
shape; the HTTP layer encodes it as XML or JSON, :mod:`rehost.abiquo.media`).

One datacenter; its racks, as the lab description's hosts name them (``[[hosts]] rack``; a
host that names none stands in ``rack-1``); one KVM machine per lab host, in its rack; one
virtual datacenter and appliance, the lab's VMs, the allocation rules and the tasks.
Everything is guarded by one lock (``Inventory.lock``); the HTTP handlers, the task worker and
the monitor all take it.

The version profile (``2.4`` or ``2.6``) chooses the field names that differ: a machine's
``virtualSwitch`` (2.4) or ``networkInterfaces`` (2.6); a VM's ``idType`` (2.4, 1 = managed)
or ``type`` (2.6, ``MANAGED``).

Each VM belongs to an enterprise and to one of its users (links rel ``enterprise`` and
``user``), and the enterprises list their users with their e-mail addresses (2.0 ``UserDto``):
the lab description's ``[[enterprises]]``, or one enterprise ``lab`` whose only user is
``admin``.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import Any

from rehost.lab.lab import LabState

MIB = 1024 * 1024
#: on the hypervisor (Abiquo's existsInHypervisor)
DEPLOYED = frozenset({"ON", "OFF", "PAUSED", "CONFIGURED"})
#: the type of the links (Abiquo 2.0 gives a link's base media type)
MEDIA = "application/vnd.abiquo.{}+xml"
PROFILES = ("2.4", "2.6")


@dataclass
class Machine:
    id: int
    name: str
    host: str  # the lab host's name
    ip: str
    cpu: int
    ram: int  # MiB
    state: str = "MANAGED"
    type: str = "KVM"
    #: the hypervisor login Abiquo keeps for the machine (shown only with ?credentials=true;
    #: a PUT never writes it)
    user: str | None = "root"
    password: str | None = None
    #: the IPMI fields: a PUT writes them from its body (a body without them wipes them)
    ipmi_ip: str | None = None
    ipmi_port: int | None = 623
    ipmi_user: str | None = "ADMIN"
    #: the id of the rack it stands in
    rack: int = 1


@dataclass
class Rack:
    id: int
    name: str


#: the rack of a lab host whose description names none
DEFAULT_RACK = "rack-1"


@dataclass
class VM:
    id: int
    uuid: str
    #: the domain's name on the hypervisor: ABQ_<uuid>, or a captured VM's own name
    name: str
    #: the name users gave it (``nodeName``)
    node_name: str
    cpu: int
    ram: int  # MiB
    disks: list[dict[str, Any]]
    volume: str | None
    state: str = "NOT_ALLOCATED"
    machine: int | None = None  # the machine it is deployed on (or being deployed to)
    #: captured (imported) into Abiquo: when its domain vanishes, its record is deleted
    captured: bool = False
    #: shown CONFIGURED while its domain is defined and off (never powered on since)
    configured: bool = False
    #: the enterprise that owns it, and its user (who created it; None: a deleted user)
    enterprise: int = 1
    user: int | None = 1

    @property
    def hd_bytes(self) -> int:
        return sum(int(d["size"]) for d in self.disks)


@dataclass
class User:
    """A user of an enterprise, as 2.0's ``UserDto`` has it (its password as a hash)."""

    id: int
    enterprise: int
    nick: str
    name: str
    surname: str
    email: str
    active: bool = True
    #: the virtual datacenters it is restricted to (comma-separated ids; empty: all)
    vdcs: str = ""
    locale: str = "en_US"


@dataclass
class Enterprise:
    id: int
    name: str


#: the enterprise and user of a lab whose description names none
DEFAULT_ENTERPRISES: list[dict[str, Any]] = [
    {"name": "lab", "users": [{"nick": "admin", "name": "admin", "surname": "",
                               "email": "admin@rehost-lab.invalid"}]}]


@dataclass
class LoadRule:
    id: int
    cpu: int
    ram: int
    rel: str  # datacenter, rack or machine
    target: int


@dataclass
class FitRule:
    id: int
    policy: str
    datacenter: int | None = None


@dataclass
class Task:
    id: str
    vm: int
    type: str
    state: str = "PENDING"
    timestamp: int = field(default_factory=lambda: int(time.time()))
    jobs: list[dict[str, Any]] = field(default_factory=list)


class Inventory:
    DATACENTER_ID = 1
    RACK_ID = 1
    VDC_ID = 1
    VAPP_ID = 1

    def __init__(self, lab: LabState, base: str = "", profile: str | None = None) -> None:
        self.lab = lab
        self.base = base.rstrip("/")
        self.profile = profile or str(lab.data.get("abiquo") or "2.6")
        if self.profile not in PROFILES:
            raise ValueError(f"emulator profile {self.profile!r}: choose 2.4 or 2.6")
        self.lock = threading.RLock()
        self.machines: dict[int, Machine] = {}
        self.racks: dict[int, Rack] = {}
        self.vms: dict[int, VM] = {}
        self.load_rules: dict[int, LoadRule] = {}
        self.fit_rules: dict[int, FitRule] = {1: FitRule(1, "PROGRESSIVE")}
        self.tasks: dict[str, Task] = {}
        self.enterprises: dict[int, Enterprise] = {}
        self.users: dict[int, User] = {}
        self._next_rule = 2
        #: bumped whenever a task starts or ends: the monitor ignores what it saw meanwhile
        self.generation = 0
        for i, h in enumerate(lab.data["hosts"], start=1):
            self.machines[i] = Machine(i, h["name"], h["name"], h["address"], int(h["cpus"]),
                                       int(h["ram_mib"]), password=secrets.token_hex(8),
                                       ipmi_ip=f"192.0.2.{i}",
                                       rack=self._rack_id(h.get("rack") or DEFAULT_RACK))
        self._load_enterprises(lab.data.get("enterprises") or DEFAULT_ENTERPRISES)
        for i, v in enumerate(lab.data["vms"], start=1):
            ent, user = self._owner_of(v)
            self.vms[i] = VM(i, v["uuid"], v.get("domain") or f"ABQ_{v['uuid']}", v["name"],
                             int(v["cpu"]), int(v["ram_mib"]), list(v["disks"]),
                             v.get("volume"), captured=bool(v.get("captured")),
                             configured=bool(v.get("configured")), enterprise=ent,
                             user=user)

    def _rack_id(self, name: str) -> int:
        """The id of the rack named ``name`` (ids from 1 in the order hosts name them)."""
        for r in self.racks.values():
            if r.name == name:
                return r.id
        rack = Rack(len(self.racks) + 1, name)
        self.racks[rack.id] = rack
        return rack.id

    def _load_enterprises(self, described: list[dict[str, Any]]) -> None:
        """Enterprise ids from 1 in the description's order; user ids from 1 across them
        (Abiquo's user ids are global)."""
        for e, ent in enumerate(described, start=1):
            self.enterprises[e] = Enterprise(e, str(ent["name"]))
            for u in ent.get("users") or []:
                uid = len(self.users) + 1
                self.users[uid] = User(
                    uid, e, str(u["nick"]), str(u.get("name", u["nick"])),
                    str(u.get("surname", "")), str(u.get("email", "")),
                    bool(u.get("active", True)),
                    ",".join(str(x) for x in u.get("vdcs") or []))

    def _owner_of(self, vm: dict[str, Any]) -> tuple[int, int | None]:
        """A lab VM's enterprise (by name; the first one when it names none) and user (by
        nick; the enterprise's first user when it names none)."""
        name = vm.get("enterprise")
        ent = next((e.id for e in self.enterprises.values() if e.name == name), 1)
        users = [u for u in self.users.values() if u.enterprise == ent]
        nick = vm.get("owner")
        user = next((u.id for u in users if u.nick == nick), users[0].id if users else None)
        return ent, user

    # -- lookups and computed values ------------------------------------------------------------

    def machine_by_host(self, host: str) -> Machine:
        return next(m for m in self.machines.values() if m.host == host)

    def used(self, machine: Machine) -> tuple[int, int]:
        """CPU and RAM (MiB) of the VMs deployed on (or being deployed to) ``machine``."""
        on = [v for v in self.vms.values() if v.machine == machine.id]
        return sum(v.cpu for v in on), sum(v.ram for v in on)

    def fit_policy(self) -> str:
        """The datacenter's own rule wins over a global one; the newest rule wins a tie."""
        rules = sorted(self.fit_rules.values(), key=lambda r: (r.datacenter is not None, r.id))
        return rules[-1].policy if rules else "PROGRESSIVE"

    def rules_for(self, machine: Machine) -> list[LoadRule]:
        applies = {("datacenter", self.DATACENTER_ID), ("rack", machine.rack),
                   ("machine", machine.id)}
        return [r for r in self.load_rules.values() if (r.rel, r.target) in applies]

    def new_rule_id(self) -> int:
        self._next_rule += 1
        return self._next_rule - 1

    def new_task(self, vm: VM, kind: str, jobs: list[str]) -> Task:
        task = Task(str(uuidlib.uuid4()), vm.id, kind)
        task.jobs = [{"id": f"{task.id}.{i}", "parentTaskId": task.id, "type": j,
                      "state": "PENDING", "rollbackState": "UNKNOWN", "description": j.lower(),
                      "timestamp": task.timestamp} for i, j in enumerate(jobs)]
        self.tasks[task.id] = task
        self.generation += 1
        return task

    # -- addresses ------------------------------------------------------------------------------

    def href(self, path: str) -> str:
        return f"{self.base}/{path.lstrip('/')}"

    def dc_path(self) -> str:
        return f"admin/datacenters/{self.DATACENTER_ID}"

    def rack_path(self, rack: int | None = None) -> str:
        return f"{self.dc_path()}/racks/{self.RACK_ID if rack is None else rack}"

    def machine_path(self, m: Machine) -> str:
        return f"{self.rack_path(m.rack)}/machines/{m.id}"

    def vapp_path(self) -> str:
        return f"cloud/virtualdatacenters/{self.VDC_ID}/virtualappliances/{self.VAPP_ID}"

    def vm_path(self, vm: VM) -> str:
        return f"{self.vapp_path()}/virtualmachines/{vm.id}"

    def enterprise_path(self, e: Enterprise | int) -> str:
        return f"admin/enterprises/{e if isinstance(e, int) else e.id}"

    def user_path(self, u: User) -> str:
        return f"{self.enterprise_path(u.enterprise)}/users/{u.id}"

    def task_path(self, task: Task) -> str:
        return f"{self.vm_path(self.vms[task.vm])}/tasks/{task.id}"

    def link(self, rel: str, path: str, entity: str = "", title: str = "") -> dict[str, str]:
        return {"rel": rel, "href": self.href(path),
                "type": MEDIA.format(entity) if entity else "", "title": title}

    # -- JSON shapes (ABIQUO-API.md) ------------------------------------------------------------

    def datacenter_json(self) -> dict[str, Any]:
        p = self.dc_path()
        return {"id": self.DATACENTER_ID, "name": "rehost-lab", "location": "lab",
                "links": [self.link("edit", p, "datacenter"),
                          self.link("racks", f"{p}/racks", "racks")]}

    def rack_json(self, rack: Rack) -> dict[str, Any]:
        """2.0's ``RackDto`` (``UcsRack`` adds UCS fields, not played here)."""
        p = self.rack_path(rack.id)
        return {"id": rack.id, "name": rack.name, "shortDescription": "", "haEnabled": False,
                "vlanIdMin": 2, "vlanIdMax": 4094, "nrsq": 10,
                "links": [self.link("edit", p, "rack"),
                          self.link("datacenter", self.dc_path(), "datacenter"),
                          self.link("machines", f"{p}/machines", "machines")]}

    def machine_json(self, m: Machine, credentials: bool = False) -> dict[str, Any]:
        cpu_used, ram_used = self.used(m)
        p = self.machine_path(m)
        h = self.lab.host(m.host)
        datastores = [{"id": m.id, "name": "datastore", "rootPath": h["datastore"],
                       "directory": "", "enabled": True}]
        if h.get("local_datastore"):
            # the host's own disk, beside the shared one: a VM deployed there is on it
            datastores.append({"id": 1000 + m.id, "name": "local", "rootPath":
                               h["local_datastore"], "directory": "", "enabled": True})
        network: dict[str, Any] = {"virtualSwitch": "abiquo"} if self.profile == "2.4" else {
            "networkInterfaces": {"collection": [{"name": "abiquo", "mac": None}]}}
        return {
            "id": m.id, "name": m.name, "description": f"lab host {m.host}", "state": m.state,
            **network, "port": 8889, "ip": m.ip, "ipService": m.ip,
            "type": m.type, "user": m.user if credentials else None,
            "password": m.password if credentials else None,
            "datastores": {"collection": datastores},
            "ipmiIP": m.ipmi_ip, "ipmiPort": m.ipmi_port, "ipmiUser": m.ipmi_user,
            "ipmiPassword": None,
            "initiatorIQN": None, "cpu": m.cpu, "cpuUsed": cpu_used, "ram": m.ram,
            "ramUsed": ram_used,
            "links": [self.link("edit", p, "machine"),
                      self.link("rack", self.rack_path(m.rack), "rack"),
                      self.link("datacenter", self.dc_path(), "datacenter"),
                      self.link("checkstate", f"{p}/action/checkstate", "machinestate"),
                      self.link("virtualmachines", f"{p}/virtualmachines",
                                "virtualmachineswithnodeextended")],
        }

    def _vm_fields(self, vm: VM) -> dict[str, Any]:
        """A VM's fields as ``virtualmachinewithnodeextended`` has them."""
        managed: dict[str, Any] = {"idType": 1} if self.profile == "2.4" else {
            "type": "MANAGED"}
        return {
            "id": vm.id, "name": vm.name, "description": vm.node_name,
            "ram": vm.ram, "cpu": vm.cpu, "hdInBytes": vm.hd_bytes, "vdrpPort": 0,
            "vdrpIP": None, "idState": 0, "state": vm.state, "highDisponibility": 0,
            **managed, "password": None, "uuid": vm.uuid, "nodeId": vm.id,
            "nodeName": vm.node_name, "x": 0, "y": 0, **self._owner_fields(vm),
        }

    def _owner_fields(self, vm: VM) -> dict[str, str]:
        """``virtualmachinewithnodeextended``'s owner fields (2.0: empty for a deleted
        user)."""
        user = self.users.get(vm.user) if vm.user is not None else None
        if user is None:
            return {"userName": "", "userSurname": "", "enterpriseName": ""}
        return {"userName": user.name, "userSurname": user.surname,
                "enterpriseName": self.enterprises[user.enterprise].name}

    def _owner_links(self, vm: VM) -> list[dict[str, str]]:
        """Links rel ``enterprise`` and ``user`` (2.0 ``buildVirtualMachineAdminLinks``)."""
        links = [self.link("enterprise", self.enterprise_path(vm.enterprise), "enterprise")]
        user = self.users.get(vm.user) if vm.user is not None else None
        if user is not None:
            links.append(self.link("user", self.user_path(user), "user"))
        return links

    def machine_vm_json(self, vm: VM) -> dict[str, Any]:
        """A VM as a machine's list shows it (the infrastructure view; Abiquo 2.0's
        ``buildVirtualMachineAdminLinks``): links to its machine, to the VM itself (rel
        ``virtualmachine``), to its enterprise and user; no ``edit`` link."""
        m = self.machines[vm.machine] if vm.machine is not None else None
        links = []
        if m is not None:
            links.append(self.link("machine", self.machine_path(m), "machine", m.type))
        links += [self.link("virtualmachine", self.vm_path(vm), "virtualmachine"),
                  *self._owner_links(vm)]
        return {**self._vm_fields(vm), "links": links}

    def vdc_json(self) -> dict[str, Any]:
        p = f"cloud/virtualdatacenters/{self.VDC_ID}"
        return {"id": self.VDC_ID, "name": "lab", "hypervisorType": "KVM",
                "links": [self.link("edit", p, "virtualdatacenter"),
                          self.link("virtualappliances", f"{p}/virtualappliances",
                                    "virtualappliances")]}

    def vapp_json(self) -> dict[str, Any]:
        p = self.vapp_path()
        return {"id": self.VAPP_ID, "name": "lab", "publicApp": 0, "highDisponibility": 0,
                "error": 0,
                "links": [self.link("edit", p, "virtualappliance"),
                          self.link("virtualmachines", f"{p}/virtualmachines",
                                    "virtualmachines")]}

    def vm_json(self, vm: VM) -> dict[str, Any]:
        p = self.vm_path(vm)
        links = [self.link("edit", p, "virtualmachine"),
                 self.link("virtualappliance", self.vapp_path(), "virtualappliance"),
                 self.link("virtualdatacenter", f"cloud/virtualdatacenters/{self.VDC_ID}",
                           "virtualdatacenter"),
                 self.link("state", f"{p}/state", "virtualmachinestate"),
                 self.link("deploy", f"{p}/action/deploy", "acceptedrequest"),
                 self.link("undeploy", f"{p}/action/undeploy", "acceptedrequest"),
                 self.link("tasks", f"{p}/tasks", "tasks"),
                 # the admin's view (2.0 buildVirtualMachineCloudAdminLinks)
                 *self._owner_links(vm)]
        if vm.machine is not None and vm.state != "NOT_ALLOCATED":
            m = self.machines[vm.machine]
            links.append(self.link("machine", self.machine_path(m), "machine", m.type))
        return {**self._vm_fields(vm), "links": links}

    def enterprise_json(self, e: Enterprise) -> dict[str, Any]:
        """2.0's ``EnterpriseDto`` (its limits left at no limit) and
        ``buildEnterpriseLinks``."""
        p = self.enterprise_path(e)
        return {"id": e.id, "name": e.name, "isReservationRestricted": False,
                "repositorySoft": 0, "repositoryHard": 0, "cpuCountSoftLimit": 0,
                "cpuCountHardLimit": 0, "ramSoftLimitInMb": 0, "ramHardLimitInMb": 0,
                "links": [self.link("edit", p, "enterprise"),
                          self.link("users", f"{p}/users", "users"),
                          self.link("virtualmachines", f"{p}/action/virtualmachines",
                                    "virtualmachines")]}

    def user_json(self, u: User) -> dict[str, Any]:
        """2.0's ``UserDto`` as ``UserResource.createTransferObject`` fills it: the password
        is sent too (a hash), and ``availableVirtualDatacenters`` is absent when empty."""
        p = self.user_path(u)
        return {"id": u.id, "name": u.name, "surname": u.surname, "nick": u.nick,
                "email": u.email, "locale": u.locale, "active": u.active,
                "description": "", "authType": "ABIQUO",
                "password": hashlib.md5(f"lab:{u.nick}".encode()).hexdigest(),
                "availableVirtualDatacenters": u.vdcs or None,
                "links": [self.link("enterprise", self.enterprise_path(u.enterprise),
                                    "enterprise"),
                          self.link("role", "admin/roles/2", "role"),
                          self.link("edit", p, "user"),
                          self.link("virtualmachines", f"{p}/action/virtualmachines",
                                    "virtualmachines")]}

    def task_json(self, task: Task) -> dict[str, Any]:
        return {"taskId": task.id, "ownerId": str(task.vm), "userId": "1", "type": task.type,
                "timestamp": task.timestamp, "state": task.state,
                "jobs": {"collection": [dict(j) for j in task.jobs]},
                "links": [self.link("self", self.task_path(task), "task"),
                          self.link("parent", self.vm_path(self.vms[task.vm]),
                                    "virtualmachine")]}

    def accepted_json(self, task: Task | None, what: str, vm: VM | None = None) -> dict[str, Any]:
        """202's body: a link rel ``status`` to the task; with no task (nothing to do), to
        ``.../tasks/untraceable`` (Abiquo 2.0's UNTRACEABLE_TASK)."""
        if task is None:
            assert vm is not None
            href = f"{self.vm_path(vm)}/tasks/untraceable"
        else:
            href = self.task_path(task)
        return {"message": f"You {what} request has been accepted",
                "links": [self.link("status", href, "task")]}

    def load_rule_json(self, r: LoadRule) -> dict[str, Any]:
        target = {"datacenter": self.dc_path(), "rack": self.rack_path(r.target)}.get(r.rel)
        if r.rel == "machine":
            target = self.machine_path(self.machines[r.target])
        return {"id": r.id, "cpuLoadPercentage": r.cpu, "ramLoadPercentage": r.ram,
                "links": [self.link("edit", f"admin/rules/machineLoadLevel/{r.id}",
                                    "machineloadrule"),
                          self.link(r.rel, str(target), r.rel)]}

    def fit_rule_json(self, r: FitRule) -> dict[str, Any]:
        links = [self.link("edit", f"admin/rules/fitsPolicy/{r.id}", "fitpolicyrule")]
        if r.datacenter is not None:
            links.append(self.link("datacenter", self.dc_path(), "datacenter"))
        return {"id": r.id, "fitPolicy": r.policy, "links": links}
