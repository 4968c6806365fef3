"""The control plane's stages, performed by the configured control plane
(``[control] strategy``; ``rehost plugins`` lists them).

A site plugin can offer its own control plane (``rehost_control_planes``), or take over a
single stage by implementing ``rehost_vm_<stage>`` itself (its implementation wins over these
``trylast`` defaults).
"""

from __future__ import annotations

from rehost.api import (
    VM,
    AwaitUndeployedResult,
    BackupXmlResult,
    Context,
    DeployResult,
    Finding,
    Host,
    LocateResult,
    PowerOffNewResult,
    PowerOffResult,
    RollbackResult,
    StartResult,
    TargetLoad,
    UndefineResult,
    hookimpl,
)


@hookimpl(trylast=True)
def rehost_discover_hosts(ctx: Context) -> list[Host]:
    found: list[Host] = ctx.control.discover_hosts(ctx)
    return found


@hookimpl(trylast=True)
def rehost_select_vms(ctx: Context) -> list[VM]:
    vms: list[VM] = ctx.control.select_vms(ctx)
    return vms


@hookimpl(trylast=True)
def rehost_host_capacity(ctx: Context, host: str) -> TargetLoad:
    found: TargetLoad = ctx.control.capacity(ctx, host)
    return found


@hookimpl
def rehost_host_rejoined(ctx: Context, host: str) -> None:
    ctx.control.rejoined(ctx, host)


@hookimpl
def rehost_preflight(ctx: Context) -> list[Finding]:
    findings: list[Finding] = ctx.control.preflight(ctx)
    return findings


@hookimpl(trylast=True)
def rehost_vm_locate(vm: VM, ctx: Context) -> LocateResult:
    result: LocateResult = ctx.control.locate(vm, ctx)
    return result


@hookimpl(trylast=True)
def rehost_vm_backup_xml(vm: VM, ctx: Context) -> BackupXmlResult:
    result: BackupXmlResult = ctx.control.backup_xml(vm, ctx)
    return result


@hookimpl(trylast=True)
def rehost_vm_power_off(vm: VM, ctx: Context) -> PowerOffResult:
    result: PowerOffResult = ctx.control.power_off(vm, ctx)
    return result


@hookimpl(trylast=True)
def rehost_vm_undefine(vm: VM, ctx: Context) -> UndefineResult:
    result: UndefineResult = ctx.control.undefine(vm, ctx)
    return result


@hookimpl(trylast=True)
def rehost_vm_await_undeployed(vm: VM, ctx: Context) -> AwaitUndeployedResult:
    result: AwaitUndeployedResult = ctx.control.await_undeployed(vm, ctx)
    return result


@hookimpl(trylast=True)
def rehost_vm_deploy(vm: VM, ctx: Context) -> DeployResult:
    result: DeployResult = ctx.control.deploy(vm, ctx)
    return result


@hookimpl(trylast=True)
def rehost_vm_power_off_new(vm: VM, ctx: Context) -> PowerOffNewResult:
    result: PowerOffNewResult = ctx.control.power_off_new(vm, ctx)
    return result


@hookimpl(trylast=True)
def rehost_vm_start(vm: VM, ctx: Context) -> StartResult:
    result: StartResult = ctx.control.start(vm, ctx)
    return result


@hookimpl(trylast=True)
def rehost_rollback_vm(vm: VM, ctx: Context) -> RollbackResult:
    result: RollbackResult = ctx.control.rollback(vm, ctx)
    return result
