"""Storage: the per-VM disk stages, performed by the configured storage strategy.

A site plugin can offer its own strategy (``rehost_storage_strategies``) and choose it in the
site config, or take over a single stage by implementing ``rehost_vm_<stage>`` itself (its
implementation wins over these ``trylast`` defaults).
"""

from __future__ import annotations

from rehost.api import (
    VM,
    CleanupResult,
    Context,
    Finding,
    PrecopyResult,
    PreserveResult,
    RemoveNewDisksResult,
    SwapResult,
    TransferResult,
    VerifyResult,
    hookimpl,
)


@hookimpl(trylast=True)
def rehost_vm_precopy(vm: VM, ctx: Context) -> PrecopyResult:
    result: PrecopyResult = ctx.storage.precopy(vm, ctx)
    return result


@hookimpl(trylast=True)
def rehost_vm_preserve_disks(vm: VM, ctx: Context) -> PreserveResult:
    result: PreserveResult = ctx.storage.preserve_disks(vm, ctx)
    return result


@hookimpl(trylast=True)
def rehost_vm_transfer(vm: VM, ctx: Context) -> TransferResult:
    result: TransferResult = ctx.storage.transfer(vm, ctx)
    return result


@hookimpl(trylast=True)
def rehost_vm_remove_new_disks(vm: VM, ctx: Context) -> RemoveNewDisksResult:
    if not ctx.control.deploys_new_disks:
        return RemoveNewDisksResult(skipped=f"the control plane {ctx.config.control.strategy!r}"
                                            " creates no new disks")
    result: RemoveNewDisksResult = ctx.storage.remove_new_disks(vm, ctx)
    return result


@hookimpl(trylast=True)
def rehost_vm_swap_disks(vm: VM, ctx: Context) -> SwapResult:
    result: SwapResult = ctx.storage.swap_disks(vm, ctx)
    return result


@hookimpl(trylast=True)
def rehost_vm_verify(vm: VM, ctx: Context) -> VerifyResult:
    result: VerifyResult = ctx.storage.verify(vm, ctx)
    return result


@hookimpl(trylast=True)
def rehost_vm_cleanup(vm: VM, ctx: Context, delete: bool) -> CleanupResult:
    result: CleanupResult = ctx.storage.cleanup(vm, ctx, delete)
    return result


@hookimpl
def rehost_preflight(ctx: Context) -> list[Finding]:
    findings: list[Finding] = ctx.storage.preflight(ctx)
    return findings
