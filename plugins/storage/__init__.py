"""Storage: the per-VM disk stages, performed by the configured storage strategy.

A site plugin can offer its own strategy (``rehost_storage_strategies``) and choose it in the
site config, or take over a single stage by implementing ``rehost_vm_<stage>`` itself (its
implementation wins over these ``trylast`` defaults).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rehost.hooks import hookimpl

if TYPE_CHECKING:
    from rehost.core.campaign import Campaign
    from rehost.core.model import VM, Finding


@hookimpl(trylast=True)
def rehost_vm_preserve_disks(vm: VM, ctx: Campaign) -> dict[str, Any]:
    result: dict[str, Any] = ctx.storage.preserve_disks(vm, ctx)
    return result


@hookimpl(trylast=True)
def rehost_vm_transfer(vm: VM, ctx: Campaign) -> dict[str, Any]:
    result: dict[str, Any] = ctx.storage.transfer(vm, ctx)
    return result


@hookimpl(trylast=True)
def rehost_vm_remove_new_disks(vm: VM, ctx: Campaign) -> dict[str, Any]:
    result: dict[str, Any] = ctx.storage.remove_new_disks(vm, ctx)
    return result


@hookimpl(trylast=True)
def rehost_vm_swap_disks(vm: VM, ctx: Campaign) -> dict[str, Any]:
    result: dict[str, Any] = ctx.storage.swap_disks(vm, ctx)
    return result


@hookimpl(trylast=True)
def rehost_vm_verify(vm: VM, ctx: Campaign) -> dict[str, Any]:
    result: dict[str, Any] = ctx.storage.verify(vm, ctx)
    return result


@hookimpl(trylast=True)
def rehost_vm_cleanup(vm: VM, ctx: Campaign) -> dict[str, Any]:
    result: dict[str, Any] = ctx.storage.cleanup(vm, ctx)
    return result


@hookimpl
def rehost_preflight(ctx: Campaign) -> list[Finding]:
    findings: list[Finding] = ctx.storage.preflight(ctx)
    return findings
