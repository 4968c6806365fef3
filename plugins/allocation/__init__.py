"""Allocation: fence and unfence through the configured allocation strategy."""

from __future__ import annotations

from rehost.api import Context, FenceResult, UnfenceResult, hookimpl


@hookimpl(trylast=True)
def rehost_fence(ctx: Context) -> FenceResult:
    if not ctx.control.places_vms:
        return FenceResult(strategy=ctx.config.allocation.strategy,
                           skipped=f"the control plane {ctx.config.control.strategy!r} does not "
                                   "place VMs: rehost places each one on a target host")
    result: FenceResult = ctx.allocation.fence(ctx)
    result.strategy = result.strategy or ctx.config.allocation.strategy
    return result


@hookimpl(trylast=True)
def rehost_unfence(ctx: Context, fenced: FenceResult) -> UnfenceResult:
    if fenced.skipped:
        return UnfenceResult(strategy=fenced.strategy, skipped="nothing was fenced")
    result: UnfenceResult = ctx.allocation.unfence(ctx, fenced)
    result.strategy = result.strategy or ctx.config.allocation.strategy
    return result
