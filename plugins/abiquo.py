"""The Abiquo control plane: which VMs move, where they are, and the stages that happen in
Abiquo (await_undeployed, deploy, power_off_new, start), plus Abiquo's preflight checks.

A machine in Abiquo is matched with a host of the site config by its ``ip`` (the host's
``address``) or its name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rehost.core.errors import PreconditionError
from rehost.core.model import VM, Finding
from rehost.hooks import hookimpl
from rehost.plugins.storage.base import backup_path

if TYPE_CHECKING:
    from rehost.core.abiquo import AbiquoClient, Machine, VirtualMachine
    from rehost.core.campaign import Campaign

DEPLOYED = {"ON", "OFF", "PAUSED"}


def machine_host(ctx: Campaign, machine: Machine | None) -> str | None:
    """The site config's host for an Abiquo machine."""
    if machine is None:
        return None
    for key in (machine.ip, machine.name):
        if key:
            host = ctx.host_by_address(key)
            if host is not None:
                return host.name
    return None


def _machines_by_url(client: AbiquoClient) -> dict[str, Machine]:
    return {client.absolute(m.url): m for m in client.machines()}


def _vm_machine(client: AbiquoClient, vm: VirtualMachine,
                machines: dict[str, Machine]) -> Machine | None:
    link = vm.link("machine")
    if link is None:
        return None
    return machines.get(client.absolute(link.href)) or client.machine(link.href)


def _abiquo_vm(ctx: Campaign, vm: VM, wait: bool = True) -> VirtualMachine:
    """The VM as Abiquo shows it now; while it is LOCKED (an action of an earlier,
    interrupted run still in progress) wait until it is not, unless ``wait`` is false."""
    client = ctx.abiquo
    if vm.abiquo_href:
        found = client.vm(vm.abiquo_href)
    else:
        found = client.find_vm(uuid=vm.uuid)
        vm.abiquo_href = client.absolute(found.url)
    if found.state == "LOCKED" and wait:
        found = client.wait_vm(found, DEPLOYED | {"NOT_ALLOCATED", "UNKNOWN"},
                               timeout=ctx.config.campaign.task_timeout)
    return found


# -- which VMs ---------------------------------------------------------------------------------


@hookimpl(trylast=True)
def rehost_select_vms(ctx: Campaign) -> list[VM]:
    """Every VM deployed on a source host (or those named in ``campaign.vms``), and every VM
    the journal already knows (a resumed campaign keeps its VMs wherever they are now)."""
    client = ctx.abiquo
    machines = _machines_by_url(client)
    sources = {h.name for h in ctx.config.sources()}
    wanted = ctx.config.campaign.vms
    known = {r["name"]: VM.from_dict(r["vm"]) for r in ctx.journal.vm_rows()}
    out: list[VM] = list(known.values())
    for avm in client.virtual_machines():
        uuid = avm.uuid or ""
        name = f"ABQ_{uuid}"
        if name in known:
            continue
        if wanted != "all" and not ({name, uuid, avm.name, avm.label} & set(wanted)):
            continue
        host = machine_host(ctx, _vm_machine(client, avm, machines))
        if host not in sources or avm.state not in DEPLOYED | {"LOCKED", "UNKNOWN"}:
            continue
        out.append(VM(name=name, uuid=uuid, label=avm.label or avm.name or name,
                      abiquo_href=client.absolute(avm.url), source_host=host))
    return out


# -- preflight ---------------------------------------------------------------------------------


@hookimpl
def rehost_preflight(ctx: Campaign) -> list[Finding]:
    if ctx.config.abiquo is None:
        return []
    client = ctx.abiquo
    findings: list[Finding] = []
    machines = client.machines()
    by_host = {machine_host(ctx, m): m for m in machines}
    for host in ctx.config.hosts.values():
        if host.name not in by_host:
            findings.append(Finding("critical", "abiquo-machine",
                                    f"no Abiquo machine has the address {host.address}",
                                    host=host.name))
    need_cpu = need_ram = 0
    # a VM this campaign already acted on may be LOCKED by its own interrupted action: wait
    # for it; any other LOCKED VM is someone else's business, and a finding at once
    started = {r["name"] for r in ctx.journal.vm_rows() if r["status"] != "pending"}
    for vm in ctx.vms:
        try:
            avm = _abiquo_vm(ctx, vm, wait=vm.name in started)
        except Exception as exc:
            findings.append(Finding("critical", "abiquo-vm", f"not found in Abiquo: {exc}",
                                    vm=vm.label or vm.name))
            continue
        if avm.state in ("LOCKED", "UNKNOWN"):
            findings.append(Finding("critical", "vm-state",
                                    f"is {avm.state} in Abiquo: wait until it is not",
                                    vm=vm.label or vm.name))
        if vm.source_host in {h.name for h in ctx.config.sources()}:
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
            f"the VMs to move need {need_cpu} CPU and {need_ram} MB RAM; the target hosts have "
            f"{free_cpu} CPU and {free_ram} MB free"))
    else:
        findings.append(Finding("info", "capacity",
                                f"targets have {free_cpu} CPU and {free_ram} MB RAM free for "
                                f"{need_cpu} CPU and {need_ram} MB needed"))
    return findings


# -- stages ------------------------------------------------------------------------------------


@hookimpl(trylast=True)
def rehost_vm_locate(vm: VM, ctx: Campaign) -> dict[str, Any]:
    client = ctx.abiquo
    avm = _abiquo_vm(ctx, vm)
    if avm.state not in DEPLOYED:
        raise PreconditionError(f"{vm.label or vm.name} is {avm.state} in Abiquo, not deployed")
    host = machine_host(ctx, client.vm_machine(avm))
    if host is None:
        raise PreconditionError(f"{vm.name}: Abiquo's machine for it is not in the site config")
    if ctx.host(host).role != "source":
        raise PreconditionError(f"{vm.name} is on {host}, which is not a source host")
    hv = ctx.hypervisor(host)
    if not hv.exists(vm.name):
        raise PreconditionError(f"Abiquo says {vm.name} is on {host}, but libvirt there has "
                                "no such domain")
    vm.source_host = host
    vm.label = vm.label or avm.label or avm.name or vm.name
    return {"host": host, "abiquo_state": avm.state, "libvirt_state": hv.state(vm.name),
            "cpu": avm.cpu, "ram": avm.ram}


@hookimpl(trylast=True)
def rehost_vm_await_undeployed(vm: VM, ctx: Campaign) -> dict[str, Any]:
    avm = _abiquo_vm(ctx, vm)
    now = ctx.abiquo.wait_vm(avm, {"NOT_ALLOCATED"}, timeout=ctx.config.campaign.task_timeout)
    return {"abiquo_state": now.state}


@hookimpl(trylast=True)
def rehost_vm_deploy(vm: VM, ctx: Campaign) -> dict[str, Any]:
    client = ctx.abiquo
    avm = _abiquo_vm(ctx, vm)
    if avm.state == "NOT_ALLOCATED":
        # the deploy writes template disks at the VM's disk paths: the user's disks must be
        # safe under their _BACK names first
        sh = ctx.shell(vm.source_host or "")
        for disk in vm.file_disks():
            if sh.exists(disk.source or "") or not sh.exists(backup_path(disk)):
                raise PreconditionError(
                    f"{disk.source} is not preserved as {backup_path(disk)} on "
                    f"{vm.source_host}: will not deploy (it would overwrite the user's disk)")
        task = client.deploy(avm, timeout=ctx.config.campaign.task_timeout)
        how = f"task {task.taskId} {task.state}"
    elif avm.state in DEPLOYED:
        how = "already deployed"
    else:
        raise PreconditionError(f"{vm.name} is {avm.state} in Abiquo: cannot deploy")
    host = machine_host(ctx, client.vm_machine(avm))
    if host is None or ctx.host(host).role != "target":
        raise PreconditionError(
            f"{vm.name} was deployed on {host or 'a machine not in the site config'}, not on a "
            "target host: its disks there are templates; the user's disks stay as _BACK on "
            f"{vm.source_host}")
    facts = ctx.facts(host)
    if facts.centos_major != 6:  # unknown is not CentOS 6 either
        raise PreconditionError(f"{vm.name} landed on {host} ({facts.os_release}), not CentOS 6:"
                                f" the user's disks stay as _BACK on {vm.source_host}")
    vm.target_host = host
    return {"host": host, "os_release": facts.os_release, "how": how,
            "abiquo_state": client.vm(avm).state}


@hookimpl(trylast=True)
def rehost_vm_power_off_new(vm: VM, ctx: Campaign) -> dict[str, Any]:
    client = ctx.abiquo
    avm = _abiquo_vm(ctx, vm)
    if avm.state == "ON":
        client.power_off(avm, timeout=ctx.config.campaign.task_timeout)
    state = ctx.hypervisor(vm.target_host or "").state(vm.name)
    if state == "running":
        raise PreconditionError(f"Abiquo powered {vm.name} off but libvirt on {vm.target_host} "
                                "still shows it running")
    return {"abiquo_state": client.vm(avm).state, "libvirt_state": state}


@hookimpl(trylast=True)
def rehost_vm_start(vm: VM, ctx: Campaign) -> dict[str, Any]:
    client = ctx.abiquo
    avm = _abiquo_vm(ctx, vm)
    if avm.state != "ON":
        client.power_on(avm, timeout=ctx.config.campaign.task_timeout)
    now = client.vm(avm)
    if now.state != "ON":
        raise PreconditionError(f"{vm.name} is {now.state} in Abiquo after power on")
    state = ctx.hypervisor(vm.target_host or "").state(vm.name)
    if state != "running":
        raise PreconditionError(f"{vm.name} is ON in Abiquo but {state} in libvirt on "
                                f"{vm.target_host}")
    return {"abiquo_state": now.state, "libvirt_state": state, "host": vm.target_host}
