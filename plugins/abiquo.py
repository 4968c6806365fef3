"""The Abiquo control plane (``[control] strategy = "abiquo"``, the default): which VMs move,
where they are, and the stages that happen in Abiquo (await_undeployed, deploy,
power_off_new, start), Abiquo's preflight checks, the target guard (disks are touched only on
a CentOS 6 host Abiquo deployed to), hosts discovered from Abiquo, and ``rehost rollback``.

Its settings are the ``[abiquo]`` section of the site config
(:class:`rehost.abiquo.settings.AbiquoSettings`). A machine in Abiquo is matched with a host of
the site config by its ``ip`` (the host's ``address``) or its name.

Rollback, each step checked before the next:

1. the storage strategy makes the user's disks safe as ``X_BACK`` on the source datastore;
2. a copy deployed elsewhere is powered off and undeployed (only template disks or copies are
   deleted with it);
3. the VM is deployed again, pinned to its source host by temporary 1% load-level rules on
   every other machine (removed again whatever happens);
4. the storage strategy checks ``X_BACK`` is the user's disk and puts it back at ``X``; the VM
   is started, and the disks are checked again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rehost.abiquo.compat import check_compatibility, target_release, upgrade_source
from rehost.abiquo.settings import SETTINGS
from rehost.abiquo.site import (
    client,
    machine_host,
    set_machine_rule,
    settings,
    undo_machine_rule,
)
from rehost.abiquo.types import DEPLOYED
from rehost.api import (
    VM,
    AwaitUndeployedResult,
    Context,
    ControlPlane,
    DeployResult,
    Finding,
    Host,
    LocateResult,
    PluginSettings,
    PowerOffNewResult,
    PreconditionError,
    PreserveResult,
    RehostError,
    RollbackResult,
    StartResult,
    StrategyRecord,
    TargetLoad,
    backup_path,
    hookimpl,
    parse_centos_release,
)

if TYPE_CHECKING:
    from rehost.abiquo.types import Machine, VirtualMachine


#: a VM in these states is still selected: preflight says what is wrong with it
_SELECTABLE = DEPLOYED | {"LOCKED", "UNKNOWN"}


def _name(avm: VirtualMachine) -> str:
    return avm.display_name or f"ABQ_{avm.uuid}"


class AbiquoControl(ControlPlane):
    name = "abiquo"

    def __init__(self, options: dict[str, object] | None = None) -> None:
        super().__init__(options)
        self.reject_unknown_options()

    # -- the VM as Abiquo shows it --------------------------------------------------------------

    def abiquo_vm(self, ctx: Context, vm: VM, wait: bool = True) -> VirtualMachine:
        """The VM as Abiquo shows it now; while it is LOCKED (an action of an earlier,
        interrupted run still in progress) wait until it is not, unless ``wait`` is false."""
        c = client(ctx)
        if vm.control_ref:
            found = c.vm(vm.control_ref)
        else:
            found = c.find_vm(uuid=vm.uuid)
            vm.control_ref = c.absolute(found.url)
        if found.state == "LOCKED" and wait:
            found = c.wait_vm(found, DEPLOYED | {"NOT_ALLOCATED", "UNKNOWN"},
                              timeout=ctx.config.campaign.task_timeout)
        return found

    # -- hosts and VMs ------------------------------------------------------------------------

    def discover_hosts(self, ctx: Context) -> list[Host]:
        """Abiquo's racks, and with ``discover = true`` under [abiquo] its machines.

        A host of the site config that names no ``rack`` gets the rack its machine stands in
        in Abiquo (datacenter -> racks -> machines), which the evacuation plan keeps VMs in;
        a ``rack`` the site config says wins. With ``discover = true``, every KVM machine of
        Abiquo that the site config does not name becomes a host, reached by its ip over ssh,
        in its Abiquo rack; its role comes from its /etc/redhat-release (CentOS 5: source,
        CentOS 6: target, else left out)."""
        discover = settings(ctx).discover
        unracked = [h for h in ctx.config.hosts.values() if not h.rack]
        if not discover and not unracked:
            return []
        try:
            racked = client(ctx).racked_machines()
        except RehostError as exc:
            if discover:
                raise
            ctx.log.warning("cannot read Abiquo's racks ({}): the evacuation plan knows no "
                            "rack for {}", exc, ", ".join(h.name for h in unracked))
            return []
        for rack, m in racked:
            host = machine_host(ctx, m)
            if host is not None and not ctx.config.hosts[host].rack and rack.name:
                ctx.config.hosts[host].rack = rack.name
        if not discover:
            return []
        found: list[Host] = []
        known = {h.address for h in ctx.config.hosts.values()}
        for rack, m in racked:
            if (m.type or "KVM").upper() != "KVM" or not m.ip or m.ip in known:
                continue
            name = m.name or m.ip
            probe = Host(name=name, address=m.ip, datastore="/var/lib/virt",
                         rack=rack.name or "")
            ctx.add_host(probe)
            try:
                release = ctx.shell(name).read_text("/etc/redhat-release")
            except RehostError as exc:
                ctx.log.warning("discover: machine {} ({}) not reachable over ssh: {}", name,
                                m.ip, exc)
                ctx.forget_host(name)
                continue
            major, _ = parse_centos_release(release)
            if major not in (5, 6):
                ctx.log.warning("discover: machine {} runs {}: neither source nor target",
                                name, release.strip())
                ctx.forget_host(name)
                continue
            probe.role = "source" if major == 5 else "target"
            if major == 6 and settings(ctx).version == "2.6":
                facts = ctx.facts(name)
                if upgrade_source("2.6", facts):
                    probe.role = "source"  # the 2.6 path: 6.3 hosts are emptied into 6.4
            found.append(probe)
        return found

    def select_vms(self, ctx: Context) -> list[VM]:
        """Every VM on a source host (or those named in ``campaign.vms``: by domain name,
        uuid or ``nodeName``), and every VM the journal already knows (a resumed campaign
        keeps its VMs wherever they are). The VMs of a host are read from its machine's own
        list, which shows every tenant's VMs. The VM's domain is its Abiquo ``name``
        (``ABQ_<uuid>``, or a captured VM's own name: the preflight refuses those)."""
        c = client(ctx)
        wanted = ctx.config.campaign.vms
        known = {r["name"]: VM.from_dict(r["vm"]) for r in ctx.journal.vm_rows()}
        known_uuids = {v.uuid for v in known.values()}
        out: list[VM] = list(known.values())
        sources = {h.name for h in ctx.config.sources()}
        for machine in c.machines():
            host = machine_host(ctx, machine)
            if host not in sources:
                continue
            for avm in c.machine_vms(machine):
                if not avm.url or avm.state not in _SELECTABLE:
                    continue  # not an Abiquo VM (found on the host, not managed), or gone
                if not avm.nodeName and not avm.label:
                    avm = c.vm(avm)  # the list did not carry the name users know
                uuid = avm.uuid or ""
                name = avm.name or f"ABQ_{uuid}"
                if name in known or uuid in known_uuids:
                    continue
                if wanted != "all" and not ({name, uuid, avm.nodeName, avm.label}
                                            & set(wanted)):
                    continue
                out.append(VM(name=name, uuid=uuid, label=_name(avm),
                              control_ref=c.absolute(avm.url), source_host=host))
        return out

    # -- preflight ----------------------------------------------------------------------------

    def preflight(self, ctx: Context) -> list[Finding]:
        findings = self._hosts(ctx)
        findings += self.check_vms(ctx)
        return findings

    def _hosts(self, ctx: Context) -> list[Finding]:
        """CentOS 5 sources, CentOS 6 targets as the compatibility table wants them."""
        findings: list[Finding] = []
        a = settings(ctx)
        facts = {}
        for h in ctx.config.hosts.values():
            try:
                facts[h.name] = ctx.facts(h.name)
            except RehostError:
                continue  # the core's reachability check reports it
        sources = [h for h in ctx.config.sources() if h.name in facts]
        targets = [h for h in ctx.config.targets() if h.name in facts]
        upgrading = [h for h in sources if upgrade_source(a.version, facts[h.name])]
        for h in sources:
            if h in upgrading:
                # the 2.6 path: 6.3 hosts are emptied into 6.4 ones (one power-off, not two)
                findings.append(Finding(
                    "info", "source-6.3", f"{facts[h.name].os_release}: Abiquo 2.6 wants "
                    "6.4; its VMs move to the 6.4 hosts now", host=h.name))
                for vm in [v for v in ctx.vms if v.source_host == h.name]:
                    findings.append(Finding(
                        "info", "extra-power-off", f"powered off to move from CentOS 6.3 to "
                        f"6.4 (Abiquo 2.6): the power-off the 6.4 upgrade of {h.name} would "
                        "have cost it", vm=vm.label or vm.name, host=h.name))
            elif facts[h.name].centos_major != 5:
                findings.append(Finding("warning", "source-os",
                                        f"source host runs {facts[h.name].os_release}, not "
                                        "CentOS 5", host=h.name))
        if not any(facts[h.name].centos_major == 5 for h in sources) and not upgrading:
            findings.append(Finding("critical", "no-source", "no source host runs CentOS 5"
                                    + (" (or CentOS 6.3, with Abiquo 2.6)"
                                       if a.version == "2.6" else "")))
        good = [h for h in targets if facts[h.name].centos_major == 6]
        if not good:
            findings.append(Finding("critical", "no-target", "no target host runs CentOS 6"))
        for h in targets:
            if facts[h.name].centos_major != 6:
                findings.append(Finding("critical", "target-os",
                                        f"target host runs {facts[h.name].os_release}, not "
                                        "CentOS 6", host=h.name))
        for h in good:
            findings.extend(check_compatibility(a.version, facts[h.name], a.aim_version))
        return findings

    def check_vms(self, ctx: Context) -> list[Finding]:
        c = client(ctx)
        findings: list[Finding] = []
        by_host = {machine_host(ctx, m): m for m in c.machines()}
        for host in ctx.config.hosts.values():
            if host.name not in by_host:
                findings.append(Finding("critical", "abiquo-machine",
                                        f"no Abiquo machine has the address {host.address}",
                                        host=host.name))
        need_cpu = need_ram = 0
        # a VM this campaign already acted on may be LOCKED by its own interrupted action:
        # wait for it; any other LOCKED VM is someone else's business, and a finding at once
        started = {r["name"] for r in ctx.journal.vm_rows() if r["status"] != "pending"}
        sources = {h.name for h in ctx.config.sources()}
        for vm in ctx.vms:
            try:
                avm = self.abiquo_vm(ctx, vm, wait=vm.name in started)
            except Exception as exc:
                findings.append(Finding("critical", "abiquo-vm", f"not found in Abiquo: {exc}",
                                        vm=vm.label or vm.name))
                continue
            if avm.state in ("LOCKED", "UNKNOWN"):
                findings.append(Finding("critical", "vm-state",
                                        f"is {avm.state} in Abiquo: wait until it is not",
                                        vm=vm.label or vm.name))
            elif avm.state == "CONFIGURED" and vm.name not in started:
                findings.append(Finding(
                    "warning", "configured",
                    "is CONFIGURED in Abiquo (defined on its host, not powered on since it was "
                    "last configured): it moves like a VM that is OFF, and is powered on on the "
                    "target host at the end", vm=vm.label or vm.name))
            if avm.captured and vm.name not in started:
                findings.append(Finding(
                    "critical", "captured",
                    f"was captured into Abiquo (its domain is {avm.name!r}, not ABQ_<uuid>): "
                    "once its domain is undefined on the source host, Abiquo deletes the VM's "
                    "record instead of marking it NOT_ALLOCATED, so it cannot be deployed on "
                    f"the target host; refused (abiquo.captured = {settings(ctx).captured!r}). "
                    "Leave it out "
                    "(name the other VMs with --vm or campaign.vms) and move it by hand",
                    vm=vm.label or vm.name))
            if vm.source_host in sources and vm.fact(DeployResult) is None:
                # (a VM deployed on its target already, in a resumed campaign, holds its
                # place there: it is in the machines' used CPU and RAM)
                need_cpu += avm.cpu or 0
                need_ram += avm.ram or 0
        free_cpu = free_ram = 0
        for h in ctx.config.targets():
            m = by_host.get(h.name)
            if m is None:
                continue
            if m.state != "MANAGED":
                findings.append(Finding("warning", "target-state",
                                        f"Abiquo machine is {m.state}: it receives no deploys",
                                        host=h.name))
                continue
            free_cpu += (m.cpu or 0) - (m.cpuUsed or 0)
            free_ram += (m.ram or 0) - (m.ramUsed or 0)
        if need_cpu > free_cpu or need_ram > free_ram:
            findings.append(Finding(
                "critical", "capacity",
                f"the VMs to move need {need_cpu} CPU and {need_ram} MB RAM; the target hosts "
                f"have {free_cpu} CPU and {free_ram} MB free"))
        else:
            findings.append(Finding("info", "capacity",
                                    f"targets have {free_cpu} CPU and {free_ram} MB RAM free "
                                    f"for {need_cpu} CPU and {need_ram} MB needed"))
        return findings

    # -- the target guard ---------------------------------------------------------------------

    def guard_target(self, ctx: Context, host: str) -> None:
        super().guard_target(ctx, host)
        facts = ctx.facts(host)
        if facts.centos_major != 6:  # unknown is not CentOS 6 either
            raise PreconditionError(f"{host} runs {facts.os_release}, not CentOS 6: will not "
                                    "touch its disks")

    # -- stages -------------------------------------------------------------------------------

    def locate(self, vm: VM, ctx: Context) -> LocateResult:
        c = client(ctx)
        avm = self.abiquo_vm(ctx, vm)
        if avm.state not in DEPLOYED:
            raise PreconditionError(f"{vm.label or vm.name} is {avm.state} in Abiquo, not "
                                    "deployed")
        host = machine_host(ctx, c.vm_machine(avm))
        if host is None:
            raise PreconditionError(f"{vm.name}: Abiquo's machine for it is not in the site "
                                    "config")
        if ctx.host(host).role != "source":
            raise PreconditionError(f"{vm.name} is on {host}, which is not a source host")
        hv = ctx.hypervisor(host)
        if not hv.exists(vm.name):
            raise PreconditionError(f"Abiquo says {vm.name} is on {host}, but libvirt there has "
                                    "no such domain")
        vm.source_host = host
        vm.label = vm.label or _name(avm)
        return LocateResult(host=host, abiquo_state=avm.state,
                            libvirt_state=hv.state(vm.name), cpu=avm.cpu, ram=avm.ram)

    def await_undeployed(self, vm: VM, ctx: Context) -> AwaitUndeployedResult:
        avm = self.abiquo_vm(ctx, vm)
        now = client(ctx).wait_vm(avm, {"NOT_ALLOCATED"},
                                  timeout=ctx.config.campaign.task_timeout)
        return AwaitUndeployedResult(state=now.state)

    def deploy(self, vm: VM, ctx: Context) -> DeployResult:
        c = client(ctx)
        avm = self.abiquo_vm(ctx, vm)
        if avm.state == "NOT_ALLOCATED":
            # the deploy writes template disks at the VM's disk paths: the user's disks must
            # be safe under their _BACK names first
            sh = ctx.shell(vm.source_host or "")
            for disk in vm.file_disks():
                if sh.exists(disk.source or "") or not sh.exists(backup_path(disk)):
                    raise PreconditionError(
                        f"{disk.source} is not preserved as {backup_path(disk)} on "
                        f"{vm.source_host}: will not deploy (it would overwrite the user's "
                        "disk)")
            task = c.deploy(avm, timeout=ctx.config.campaign.task_timeout)
            how = f"task {task.taskId} {task.state}"
        elif avm.state in DEPLOYED:
            how = "already deployed"
        else:
            raise PreconditionError(f"{vm.name} is {avm.state} in Abiquo: cannot deploy")
        host = machine_host(ctx, c.vm_machine(avm))
        if host is None or ctx.host(host).role != "target":
            where = host or "a machine not in the site config"
            gone = self._undeploy_misplaced(ctx, vm, avm)
            raise PreconditionError(
                f"{vm.name} was deployed on {where}, not on a target host ({gone}); the "
                f"user's disks stay as _BACK on {vm.source_host}. Check the fence (the "
                "allocation rules of the source machines), then `rehost resume` deploys it "
                "again")
        facts = ctx.facts(host)
        if facts.centos_major != 6:  # unknown is not CentOS 6 either
            gone = self._undeploy_misplaced(ctx, vm, avm)
            raise PreconditionError(f"{vm.name} landed on {host} ({facts.os_release}), not "
                                    f"CentOS 6 ({gone}); the user's disks stay as _BACK on "
                                    f"{vm.source_host}")
        vm.target_host = host
        return DeployResult(host=host, how=how, os_release=facts.os_release,
                            abiquo_state=c.vm(avm).state)

    def _machine(self, ctx: Context, host: str) -> Machine:
        found = next((m for m in client(ctx).machines() if machine_host(ctx, m) == host), None)
        if found is None:
            raise PreconditionError(f"{host} is not a machine in Abiquo (add it to a rack)")
        return found

    def capacity(self, ctx: Context, host: str) -> TargetLoad:
        """As Abiquo's allocator counts: the machine's CPUs and RAM and what its VMs use;
        the datastore's free space from the host."""
        m = self._machine(ctx, host)
        facts = ctx.facts(host)
        return TargetLoad(host=host, cpus=m.cpu or 0, memory_mib=m.ram or 0,
                          free_bytes=facts.datastore_free_bytes or 0,
                          used_cpus=m.cpuUsed or 0, used_mib=m.ramUsed or 0)

    def rejoined(self, ctx: Context, host: str) -> None:
        """Abiquo checks the reinstalled machine (its ``checkstate`` action): it must be
        ``MANAGED`` before VMs are deployed there."""
        why = target_release(settings(ctx).version, ctx.facts(host))
        if why is not None:
            raise PreconditionError(f"{host} cannot rejoin as a target: {why}")
        m = self._machine(ctx, host)
        state = client(ctx).check_machine_state(m)
        if state != "MANAGED":
            raise PreconditionError(f"Abiquo sees the machine {m.name} as {state}, not "
                                    "MANAGED: check it in Abiquo (its hypervisor, its AIM), "
                                    f"then `rehost host rejoin {host}` again")

    def _undeploy_misplaced(self, ctx: Context, vm: VM, avm: VirtualMachine) -> str:
        """A deploy that landed where the user's disks must not go (a source host: the
        fence failed or was removed) is undeployed again at once, so that no template VM is
        left running there: it is only a template VM, since the user's disks are safe under
        their _BACK names on the source host (checked first; otherwise it is left alone)."""
        sh = ctx.shell(vm.source_host or "")
        for disk in vm.file_disks():
            if not sh.exists(backup_path(disk)):
                return (f"left as it is: {backup_path(disk)} is not on {vm.source_host}, so "
                        "its disks there may be the user's")
        try:
            client(ctx).undeploy(avm, timeout=ctx.config.campaign.task_timeout)
        except Exception as exc:
            return f"undeploying it failed: {exc}"
        return "it was undeployed again: its disks there were templates"

    def power_off_new(self, vm: VM, ctx: Context) -> PowerOffNewResult:
        c = client(ctx)
        avm = self.abiquo_vm(ctx, vm)
        if avm.state == "ON":
            c.power_off(avm, timeout=ctx.config.campaign.task_timeout)
        state = ctx.hypervisor(vm.target_host or "").state(vm.name)
        if state == "running":
            raise PreconditionError(f"Abiquo powered {vm.name} off but libvirt on "
                                    f"{vm.target_host} still shows it running")
        return PowerOffNewResult(abiquo_state=c.vm(avm).state, libvirt_state=state)

    def start(self, vm: VM, ctx: Context) -> StartResult:
        c = client(ctx)
        avm = self.abiquo_vm(ctx, vm)
        if avm.state != "ON":
            c.power_on(avm, timeout=ctx.config.campaign.task_timeout)
        now = c.vm(avm)
        if now.state != "ON":
            raise PreconditionError(f"{vm.name} is {now.state} in Abiquo after power on")
        state = ctx.hypervisor(vm.target_host or "").state(vm.name)
        if state != "running":
            raise PreconditionError(f"{vm.name} is ON in Abiquo but {state} in libvirt on "
                                    f"{vm.target_host}")
        return StartResult(host=vm.target_host or "", abiquo_state=now.state,
                           libvirt_state=state)

    # -- rollback -----------------------------------------------------------------------------

    def rollback(self, vm: VM, ctx: Context) -> RollbackResult:
        src = vm.source_host
        if not src:
            raise PreconditionError(f"{vm.name} was never located: it is where it was")
        c = client(ctx)
        limit = ctx.config.campaign.task_timeout
        avm = self.abiquo_vm(ctx, vm)
        hv = ctx.hypervisor(src)
        # never undefined (and so never preserved): it only needs to run again
        if hv.exists(vm.name) and vm.fact(PreserveResult) is None:
            if avm.state in DEPLOYED:
                if avm.state != "ON":
                    c.power_on(avm, timeout=limit)
            elif hv.state(vm.name) != "running":
                hv.start(vm.name)
            return RollbackResult(host=src, steps=["started again on the source host",
                                                   *ctx.storage.discard_staging(vm, ctx)])

        here = machine_host(ctx, c.vm_machine(avm)) if avm.state in DEPLOYED else None
        if here is not None and here == src and not hv.exists(vm.name):
            # undefined, but Abiquo's monitor has not noticed yet: it will
            avm = c.wait_vm(avm, {"NOT_ALLOCATED"}, timeout=limit)
            here = None
        if here is not None and avm.state == "ON":
            c.power_off(avm, timeout=limit)
        steps = ctx.storage.secure_disks(vm, ctx, here)
        if here is not None:
            c.undeploy(avm, timeout=limit)
            steps.append(f"undeployed from {here}")
            avm = c.wait_vm(avm, {"NOT_ALLOCATED"}, timeout=limit)

        self._deploy_pinned(ctx, avm, src)
        steps.append(f"deployed again on {src}")
        avm = c.vm(avm)
        if avm.state == "ON":
            c.power_off(avm, timeout=limit)
        steps += ctx.storage.restore_disks(vm, ctx)
        c.power_on(avm, timeout=limit)
        state = hv.state(vm.name)
        if state != "running":
            raise PreconditionError(f"{vm.name} is ON in Abiquo but {state} on {src}")
        disks = ctx.storage.check_restored(vm, ctx)
        # what the move left on the target (a copy, a partial copy): the disks on the source
        # were just found to be the user's, so those are copies
        others = {h for h in (here, vm.target_host) if h and h != src}
        for other in others:
            steps += ctx.storage.discard_copies(vm, ctx, other)
        if not others:  # never deployed: what a pre-copy staged is all the move left there
            steps += ctx.storage.discard_staging(vm, ctx)
        vm.target_host = None
        return RollbackResult(host=src, steps=steps, disks=disks, pending=[],
                              abiquo_state=c.vm(avm).state, libvirt_state=state)

    def _deploy_pinned(self, ctx: Context, avm: VirtualMachine, src: str) -> None:
        """Deploy the VM on ``src`` only: a 1% rule on every other machine meanwhile (a rule a
        machine has is changed, then put back, never doubled)."""
        c = client(ctx)
        others = [m for m in c.machines()
                  if machine_host(ctx, m) != src and m.state == "MANAGED"]
        pins = []
        try:
            for m in others:
                pins.append(set_machine_rule(ctx, m, cpu=1, ram=1))
            c.deploy(avm, timeout=ctx.config.campaign.task_timeout)
        finally:
            for rec in reversed(pins):
                undo_machine_rule(ctx, rec)
        landed = machine_host(ctx, c.vm_machine(avm))
        if landed != src:
            raise PreconditionError(f"the deploy landed on {landed}, not on {src}: the user's "
                                    f"disks stay as _BACK on {src}")


@hookimpl(trylast=True)
def rehost_control_planes() -> list[StrategyRecord]:
    return [StrategyRecord("control", "abiquo",
                           "Abiquo 2.4/2.6: VMs found, undeployed and deployed through its API",
                           AbiquoControl)]


@hookimpl
def rehost_plugin_settings() -> list[PluginSettings]:
    return [SETTINGS]
