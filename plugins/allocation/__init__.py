"""Allocation: fence and unfence through the configured allocation strategy."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rehost.hooks import hookimpl

if TYPE_CHECKING:
    from rehost.core.campaign import Campaign


@hookimpl(trylast=True)
def rehost_fence(ctx: Campaign) -> dict[str, Any]:
    result: dict[str, Any] = ctx.allocation.fence(ctx)
    result.setdefault("strategy", ctx.config.allocation.strategy)
    return result


@hookimpl(trylast=True)
def rehost_unfence(ctx: Campaign, fenced: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = ctx.allocation.unfence(ctx, fenced)
    result.setdefault("strategy", ctx.config.allocation.strategy)
    return result
