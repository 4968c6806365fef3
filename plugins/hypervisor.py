"""Stages done with libvirt on the source host: backup_xml, power_off, undefine."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rehost.core.disks import parse_disks
from rehost.core.errors import PreconditionError
from rehost.hooks import hookimpl

if TYPE_CHECKING:
    from rehost.core.campaign import Campaign
    from rehost.core.model import VM


@hookimpl(trylast=True)
def rehost_vm_backup_xml(vm: VM, ctx: Campaign) -> dict[str, Any]:
    """Save the domain XML (the persistent definition, and the live one where the domain
    runs: it names backing chains) and list the disks. A backup saved by an earlier run is
    kept: after ``undefine`` it is the only copy."""
    path = ctx.vm_dir(vm) / "domain.xml"
    live_path = ctx.vm_dir(vm) / "domain-live.xml"
    if not path.exists():
        hv = ctx.hypervisor(vm.source_host or "")
        xml = hv.dumpxml(vm.name, inactive=True)
        live = hv.dumpxml(vm.name)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(xml)
        tmp.replace(path)
        live_path.write_text(live)
    text = live_path.read_text() if live_path.exists() else path.read_text()
    vm.disks = parse_disks(text)
    return {"xml": str(path), "disks": len(vm.disks),
            "file_disks": [d.source for d in vm.file_disks()],
            "other_disks": [d.source for d in vm.disks if not d.is_file]}


@hookimpl(trylast=True)
def rehost_vm_power_off(vm: VM, ctx: Campaign) -> dict[str, Any]:
    hv = ctx.hypervisor(vm.source_host or "")
    if not hv.exists(vm.name):
        return {"how": "not defined"}
    how = hv.power_off(vm.name, timeout=ctx.config.campaign.power_off_timeout)
    return {"how": how, "libvirt_state": hv.state(vm.name)}


@hookimpl(trylast=True)
def rehost_vm_undefine(vm: VM, ctx: Campaign) -> dict[str, Any]:
    if not (ctx.state_dir / "vms" / vm.name / "domain.xml").exists():
        raise PreconditionError(f"no XML backup of {vm.name}: will not undefine it")
    hv = ctx.hypervisor(vm.source_host or "")
    if not hv.exists(vm.name):
        return {"undefined": False, "already": True}
    state = hv.state(vm.name)
    if state == "running":
        raise PreconditionError(f"{vm.name} is running on {vm.source_host}: power it off first")
    hv.undefine(vm.name)
    return {"undefined": True, "host": vm.source_host}
