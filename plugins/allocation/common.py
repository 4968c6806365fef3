"""Helpers the allocation strategies share: the Abiquo machines of the source hosts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rehost.core.errors import PreconditionError

if TYPE_CHECKING:
    from rehost.core.abiquo import LoadLevelRule, Machine
    from rehost.core.campaign import Campaign


def source_machines(ctx: Campaign) -> list[Machine]:
    from rehost.plugins.abiquo import machine_host

    sources = {h.name for h in ctx.config.sources()}
    found = [m for m in ctx.abiquo.machines() if machine_host(ctx, m) in sources]
    if not found:
        raise PreconditionError("no Abiquo machine matches a source host of the site config")
    return found


def rule_record(ctx: Campaign, rule: LoadLevelRule) -> dict[str, Any]:
    """A load-level rule as plain data: enough to create it again."""
    target = rule.target
    return {"url": ctx.abiquo.absolute(rule.url), "cpu": rule.cpuLoadPercentage,
            "ram": rule.ramLoadPercentage, "rel": target.rel if target else None,
            "target": ctx.abiquo.absolute(target.href) if target else None}


def rules_on(ctx: Campaign, machines: list[Machine]) -> list[LoadLevelRule]:
    urls = {ctx.abiquo.absolute(m.url) for m in machines}
    return [r for r in ctx.abiquo.load_level_rules()
            if r.target is not None and r.target.rel == "machine"
            and ctx.abiquo.absolute(r.target.href) in urls]
