"""Allocation: fence and unfence through the configured allocation strategy."""

from __future__ import annotations

from rehost.api import Context, FenceResult, UnfenceResult, hookimpl


@hookimpl(trylast=True)
def rehost_fence(ctx: Context) -> FenceResult:
    result: FenceResult = ctx.allocation.fence(ctx)
    result.strategy = result.strategy or ctx.config.allocation.strategy
    return result


@hookimpl(trylast=True)
def rehost_unfence(ctx: Context, fenced: FenceResult) -> UnfenceResult:
    result: UnfenceResult = ctx.allocation.unfence(ctx, fenced)
    result.strategy = result.strategy or ctx.config.allocation.strategy
    return result
