"""The emulator's resources: Abiquo's URLs (ABIQUO-API.md) mapped to the calls of
:class:`~rehost.lab.emulator.service.Emulator` and to the inventory's JSON shapes.

Each handler answers ``(status, entity, body)``; a list body is a collection, which the HTTP
layer (:mod:`.server`) pages. Errors are :class:`~rehost.lab.emulator.service.ApiError`; a
redirection (``303 See Other``) is :class:`SeeOther`.

Bodies arrive decoded in the JSON shape (from XML every value is text). Profile ``2.4`` has
no ``/cloud/virtualmachines`` (404).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from rehost.lab.emulator.inventory import FitRule, LoadRule
from rehost.lab.emulator.service import ApiError, Emulator

DC = r"admin/datacenters/(?P<dc>\d+)"
RACK = DC + r"/racks/(?P<rack>\d+)"
MACHINE = RACK + r"/machines/(?P<machine>\d+)"
VAPP = r"cloud/virtualdatacenters/(?P<vdc>\d+)/virtualappliances/(?P<vapp>\d+)"
VM = VAPP + r"/virtualmachines/(?P<vm>\d+)"
#: ``_`` stands for any enterprise in a user's address (2.0 ``UserResource``)
ENTERPRISE = r"admin/enterprises/(?P<ent>\d+|_)"

Answer = tuple[int, str, Any]  # status, entity (for the media type), body
Route = Callable[["Api", dict[str, str], Any], Answer]

#: the deploy option each profile knows (its name changed in 2.6)
DEPLOY_OPTIONS = {"2.4": "forceEnterpriseSoftLimits", "2.6": "forceVdcLimits"}


class SeeOther(Exception):
    """``303 See Other`` to ``location``."""

    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


def _flag(value: Any) -> bool:
    """A boolean from JSON (true) or XML (text "true")."""
    return value is True or str(value).strip().lower() == "true"


class Api:
    """Requests to answers; independent of the HTTP server so it reads as a table."""

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.inv = emu.inv
        self.routes: list[tuple[str, re.Pattern[str], Route]] = []
        for method, pattern, fn in ROUTES:
            self.routes.append((method, re.compile(f"^{pattern}/?$"), fn))

    def handle(self, method: str, path: str, body: Any,
               query: dict[str, list[str]] | None = None) -> Answer:
        """Answer one request. A handler sees the path's parts by name and the query's
        parameters as ``?name`` (the last value given)."""
        path_matched = False
        for m, pattern, fn in self.routes:
            match = pattern.match(path)
            if match:
                path_matched = True
                if m == method:
                    args = match.groupdict()
                    args.update({f"?{k}": v[-1] for k, v in (query or {}).items() if v})
                    with self.inv.lock:
                        return fn(self, args, body)
        if path_matched:
            raise ApiError(405, "405-METHOD NOT ALLOWED",
                           "The resource does not expose this method")
        raise ApiError(404, "404-NOT FOUND", "The requested resource does not exist")

    # -- infrastructure -------------------------------------------------------------------------

    def _dc(self, args: dict[str, str]) -> None:
        if int(args["dc"]) != self.inv.DATACENTER_ID:
            raise ApiError(404, "DC-0", "The requested datacenter does not exist")
        if "rack" in args and int(args["rack"]) not in self.inv.racks:
            raise ApiError(404, "RACK-4", "This rack does not exist")

    def _machine(self, args: dict[str, str]) -> Any:
        self._dc(args)
        m = self.inv.machines.get(int(args["machine"]))
        # a machine is found only under its own rack (2.0's findMachine takes both ids)
        if m is None or m.rack != int(args["rack"]):
            raise ApiError(404, "MACHINE-0", "The requested machine does not exist")
        return m

    def _vm(self, args: dict[str, str]) -> Any:
        if (int(args["vdc"]), int(args["vapp"])) != (self.inv.VDC_ID, self.inv.VAPP_ID):
            raise ApiError(404, "VAPP-0", "The requested virtual appliance does not exist")
        return self.emu.vm(int(args["vm"]))

    def datacenters(self, a: dict[str, str], b: Any) -> Answer:
        return 200, "datacenters", [self.inv.datacenter_json()]

    def datacenter(self, a: dict[str, str], b: Any) -> Answer:
        self._dc(a)
        return 200, "datacenter", self.inv.datacenter_json()

    def racks(self, a: dict[str, str], b: Any) -> Answer:
        self._dc(a)
        return 200, "racks", [self.inv.rack_json(r) for r in self.inv.racks.values()]

    def rack(self, a: dict[str, str], b: Any) -> Answer:
        self._dc(a)
        return 200, "rack", self.inv.rack_json(self.inv.racks[int(a["rack"])])

    def machines(self, a: dict[str, str], b: Any) -> Answer:
        """The machines of one rack."""
        self._dc(a)
        creds = a.get("?credentials") == "true"
        rack = int(a["rack"])
        return 200, "machines", [self.inv.machine_json(m, creds)
                                 for m in self.inv.machines.values() if m.rack == rack]

    def machine(self, a: dict[str, str], b: Any) -> Answer:
        return 200, "machine", self.inv.machine_json(self._machine(a),
                                                     a.get("?credentials") == "true")

    def edit_machine(self, a: dict[str, str], b: Any) -> Answer:
        """Abiquo 2.0's MachineService.modifyMachine: the IPMI fields are written from the
        body (absent: wiped), the hypervisor login never; the state only to or from HALTED."""
        m = self._machine(a)
        if not isinstance(b, dict) or not b.get("state"):
            raise ApiError(400, "GEN-2", "Invalid document; the machine needs a state")
        m.ipmi_ip = b.get("ipmiIP")
        port = b.get("ipmiPort")
        m.ipmi_port = int(port) if port not in (None, "") else None
        m.ipmi_user = b.get("ipmiUser")
        self.emu.set_machine_state(m.id, str(b["state"]))
        return 200, "machine", self.inv.machine_json(m)

    def checkstate(self, a: dict[str, str], b: Any) -> Answer:
        m = self._machine(a)
        return 200, "machinestate", {"state": self.emu.check_machine_state(m.id), "links": []}

    def machine_vms(self, a: dict[str, str], b: Any) -> Answer:
        """Every tenant's VMs on the machine, in the infrastructure view."""
        m = self._machine(a)
        vms = [self.inv.machine_vm_json(v) for v in self.inv.vms.values()
               if v.machine == m.id and v.state != "NOT_ALLOCATED"]
        return 200, "virtualmachineswithnodeextended", vms

    # -- virtual machines -----------------------------------------------------------------------

    def all_vms(self, a: dict[str, str], b: Any) -> Answer:
        if self.emu.profile == "2.4":
            raise ApiError(404, "404-NOT FOUND", "The requested resource does not exist")
        return 200, "virtualmachineswithnodeextended", [self.inv.vm_json(v)
                                                        for v in self.inv.vms.values()]

    def vdcs(self, a: dict[str, str], b: Any) -> Answer:
        return 200, "virtualdatacenters", [self.inv.vdc_json()]

    def vapps(self, a: dict[str, str], b: Any) -> Answer:
        if int(a["vdc"]) != self.inv.VDC_ID:
            raise ApiError(404, "VDC-0", "The requested virtual datacenter does not exist")
        return 200, "virtualappliances", [self.inv.vapp_json()]

    def vapp_vms(self, a: dict[str, str], b: Any) -> Answer:
        if (int(a["vdc"]), int(a["vapp"])) != (self.inv.VDC_ID, self.inv.VAPP_ID):
            raise ApiError(404, "VAPP-0", "The requested virtual appliance does not exist")
        return 200, "virtualmachineswithnodeextended", [self.inv.vm_json(v)
                                                        for v in self.inv.vms.values()]

    def vm(self, a: dict[str, str], b: Any) -> Answer:
        return 200, "virtualmachinewithnodeextended", self.inv.vm_json(self._vm(a))

    def vm_state(self, a: dict[str, str], b: Any) -> Answer:
        vm = self._vm(a)
        return 200, "virtualmachinestate", {"state": vm.state, "links": []}

    def set_vm_state(self, a: dict[str, str], b: Any) -> Answer:
        vm = self._vm(a)
        if not isinstance(b, dict) or "state" not in b:
            raise ApiError(400, "GEN-2", "Invalid document; virtualmachinestate needs a state")
        task = self.emu.set_state(vm.id, str(b["state"]))
        return 202, "acceptedrequest", self.inv.accepted_json(task, "power state change")

    def deploy(self, a: dict[str, str], b: Any) -> Answer:
        """A deploy with no body (Abiquo 2.0 has a deploy without one), or a
        ``virtualmachinetask`` with the option this version names: another option is refused
        (the emulator's choice: a client sending the other version's name is caught)."""
        vm = self._vm(a)
        if isinstance(b, dict):
            known = {DEPLOY_OPTIONS[self.emu.profile], "links"}
            unknown = sorted(k for k in b if k not in known)
            if unknown:
                raise ApiError(400, "GEN-2", f"Invalid document: virtualmachinetask has no "
                               f"field {unknown[0]!r} in version {self.emu.profile} (it has "
                               f"{DEPLOY_OPTIONS[self.emu.profile]})")
        task = self.emu.deploy(vm.id)
        return 202, "acceptedrequest", self.inv.accepted_json(task, "deploy")

    def undeploy(self, a: dict[str, str], b: Any) -> Answer:
        vm = self._vm(a)
        force = _flag(b.get("forceUndeploy")) if isinstance(b, dict) else False
        task = self.emu.undeploy(vm.id, force)
        return 202, "acceptedrequest", self.inv.accepted_json(task, "undeploy", vm)

    def tasks(self, a: dict[str, str], b: Any) -> Answer:
        vm = self._vm(a)
        found = [t for t in self.inv.tasks.values() if t.vm == vm.id]
        return 200, "tasks", [self.inv.task_json(t) for t in reversed(found)]

    def task(self, a: dict[str, str], b: Any) -> Answer:
        vm = self._vm(a)
        if a["task"] == "untraceable":  # Abiquo 2.0: See Other, the VM's state
            raise SeeOther(self.inv.href(f"{self.inv.vm_path(vm)}/state"))
        t = self.inv.tasks.get(a["task"])
        if t is None or t.vm != vm.id:
            raise ApiError(404, "TASK-1", "The requested task does not exist")
        return 200, "task", self.inv.task_json(t)

    # -- enterprises and their users ------------------------------------------------------------

    def _enterprise(self, args: dict[str, str]) -> Any:
        if args["ent"] == "_":
            return None
        e = self.inv.enterprises.get(int(args["ent"]))
        if e is None:
            raise ApiError(404, "EN-0", "The requested enterprise does not exist")
        return e

    def enterprises(self, a: dict[str, str], b: Any) -> Answer:
        return 200, "enterprises", [self.inv.enterprise_json(e)
                                    for e in self.inv.enterprises.values()]

    def enterprise(self, a: dict[str, str], b: Any) -> Answer:
        e = self._enterprise(a)
        if e is None:
            raise ApiError(404, "404-NOT FOUND", "The requested resource does not exist")
        return 200, "enterprise", self.inv.enterprise_json(e)

    def users(self, a: dict[str, str], b: Any) -> Answer:
        """An enterprise's users (``_``: every enterprise's, as a cloud admin sees them),
        ordered by name as 2.0 orders them."""
        e = self._enterprise(a)
        found = [u for u in self.inv.users.values() if e is None or u.enterprise == e.id]
        found.sort(key=lambda u: (u.name, u.id))
        return 200, "users", [self.inv.user_json(u) for u in found]

    def user(self, a: dict[str, str], b: Any) -> Answer:
        e = self._enterprise(a)
        u = self.inv.users.get(int(a["user"]))
        if u is None:
            raise ApiError(404, "USER-3", "The requested user does not exist")
        if e is not None and u.enterprise != e.id:  # 2.0 validatePathParameters
            raise ApiError(404, "USER-0", "The user is not assigned to the enterprise")
        return 200, "user", self.inv.user_json(u)

    # -- rules ----------------------------------------------------------------------------------

    def load_rules(self, a: dict[str, str], b: Any) -> Answer:
        return 200, "machineloadrules", [self.inv.load_rule_json(r)
                                         for r in self.inv.load_rules.values()]

    def load_rule(self, a: dict[str, str], b: Any) -> Answer:
        r = self.inv.load_rules.get(int(a["id"]))
        if r is None:
            raise ApiError(404, "RULE-3", "The requested load level rule does not exist")
        return 200, "machineloadrule", self.inv.load_rule_json(r)

    def create_load_rule(self, a: dict[str, str], b: Any) -> Answer:
        if not isinstance(b, dict):
            raise ApiError(400, "GEN-2", "Invalid document")
        links = [x for x in b.get("links") or [] if x.get("rel") in
                 ("datacenter", "rack", "machine")]
        if len(links) != 1:
            raise ApiError(400, "RULE-5", "Expected one link with the rel attribute; possible "
                           "values (datacenter/rack/machine)")
        rel, href = links[0]["rel"], str(links[0].get("href", ""))
        target = self._target(rel, href)
        if any((r.rel, r.target) == (rel, target) for r in self.inv.load_rules.values()):
            # one rule per element and level (later Abiquo documentation); the code is the
            # emulator's own: 2.x's is not known
            raise ApiError(409, "RULE-7", f"The {rel} already has a load level rule: change "
                           "it instead of adding another")
        try:
            cpu, ram = int(b["cpuLoadPercentage"]), int(b["ramLoadPercentage"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ApiError(400, "GEN-2", "cpuLoadPercentage and ramLoadPercentage are "
                           "mandatory integers") from exc
        rule = LoadRule(self.inv.new_rule_id(), cpu, ram, rel, target)
        self.inv.load_rules[rule.id] = rule
        return 201, "machineloadrule", self.inv.load_rule_json(rule)

    def _target(self, rel: str, href: str) -> int:
        path = urlsplit(href).path.split("/api/", 1)[-1].strip("/")
        pattern = {"datacenter": DC, "rack": RACK, "machine": MACHINE}[rel]
        match = re.fullmatch(pattern, path)
        if not match:
            raise ApiError(400, "LNK-0", f"Invalid link. Check documentation ({rel}: {href})")
        args = match.groupdict()
        if rel == "machine":
            return int(self._machine(args).id)
        self._dc(args)
        return int(args.get(rel, args["dc"]))

    def delete_load_rule(self, a: dict[str, str], b: Any) -> Answer:
        if self.inv.load_rules.pop(int(a["id"]), None) is None:
            raise ApiError(404, "RULE-3", "The requested load level rule does not exist")
        return 204, "", None

    def fit_rules(self, a: dict[str, str], b: Any) -> Answer:
        return 200, "fitpolicyrules", [self.inv.fit_rule_json(r)
                                       for r in self.inv.fit_rules.values()]

    def fit_rule(self, a: dict[str, str], b: Any) -> Answer:
        r = self.inv.fit_rules.get(int(a["id"]))
        if r is None:
            raise ApiError(404, "RULE-2", "The requested load balance rule does not exist")
        return 200, "fitpolicyrule", self.inv.fit_rule_json(r)

    def create_fit_rule(self, a: dict[str, str], b: Any) -> Answer:
        if not isinstance(b, dict) or b.get("fitPolicy") not in ("PROGRESSIVE", "PERFORMANCE"):
            raise ApiError(400, "RULE-6", "The load balance type indicated is null or invalid")
        dc = [x for x in b.get("links") or [] if x.get("rel") == "datacenter"]
        target = self._target("datacenter", str(dc[0].get("href", ""))) if dc else None
        rule = FitRule(self.inv.new_rule_id(), str(b["fitPolicy"]), target)
        self.inv.fit_rules[rule.id] = rule
        return 201, "fitpolicyrule", self.inv.fit_rule_json(rule)

    def delete_fit_rule(self, a: dict[str, str], b: Any) -> Answer:
        rid = int(a["id"])
        if rid not in self.inv.fit_rules:
            raise ApiError(404, "RULE-2", "The requested load balance rule does not exist")
        if len(self.inv.fit_rules) == 1:
            raise ApiError(409, "RULE-4", "At least one load balance rule is required")
        del self.inv.fit_rules[rid]
        return 204, "", None


ROUTES: list[tuple[str, str, Route]] = [
    ("GET", r"admin/datacenters", Api.datacenters),
    ("GET", DC, Api.datacenter),
    ("GET", DC + r"/racks", Api.racks),
    ("GET", RACK, Api.rack),
    ("GET", RACK + r"/machines", Api.machines),
    ("GET", MACHINE, Api.machine),
    ("PUT", MACHINE, Api.edit_machine),
    ("GET", MACHINE + r"/action/checkstate", Api.checkstate),
    ("GET", MACHINE + r"/virtualmachines", Api.machine_vms),
    ("GET", r"cloud/virtualmachines", Api.all_vms),
    ("GET", r"cloud/virtualdatacenters", Api.vdcs),
    ("GET", r"cloud/virtualdatacenters/(?P<vdc>\d+)/virtualappliances", Api.vapps),
    ("GET", VAPP + r"/virtualmachines", Api.vapp_vms),
    ("GET", VM, Api.vm),
    ("GET", VM + r"/state", Api.vm_state),
    ("PUT", VM + r"/state", Api.set_vm_state),
    ("POST", VM + r"/action/deploy", Api.deploy),
    ("POST", VM + r"/action/undeploy", Api.undeploy),
    ("GET", VM + r"/tasks", Api.tasks),
    ("GET", VM + r"/tasks/(?P<task>[\w-]+)", Api.task),
    ("GET", r"admin/enterprises", Api.enterprises),
    ("GET", ENTERPRISE, Api.enterprise),
    ("GET", ENTERPRISE + r"/users", Api.users),
    ("GET", ENTERPRISE + r"/users/(?P<user>\d+)", Api.user),
    ("GET", r"admin/rules/machineLoadLevel", Api.load_rules),
    ("POST", r"admin/rules/machineLoadLevel", Api.create_load_rule),
    ("GET", r"admin/rules/machineLoadLevel/(?P<id>\d+)", Api.load_rule),
    ("DELETE", r"admin/rules/machineLoadLevel/(?P<id>\d+)", Api.delete_load_rule),
    ("GET", r"admin/rules/fitsPolicy", Api.fit_rules),
    ("POST", r"admin/rules/fitsPolicy", Api.create_fit_rule),
    ("GET", r"admin/rules/fitsPolicy/(?P<id>\d+)", Api.fit_rule),
    ("DELETE", r"admin/rules/fitsPolicy/(?P<id>\d+)", Api.delete_fit_rule),
]
