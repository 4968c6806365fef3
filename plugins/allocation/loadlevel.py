"""``loadlevel``: a 1% CPU / 1% RAM load-level rule on each source (CentOS 5) machine.

Nothing fits under 1%, so every deploy goes to the target hosts. Users cannot reconfigure VMs
on the source hosts meanwhile (Abiquo support's "maintenance mode"). The safest default.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rehost.core.errors import ConfigError
from rehost.core.model import StrategyRecord
from rehost.hooks import hookimpl
from rehost.plugins.allocation.common import rule_record, source_machines

if TYPE_CHECKING:
    from rehost.core.campaign import Campaign


class LoadLevelFence:
    name = "loadlevel"

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        options = dict(options or {})
        self.cpu = int(options.pop("cpu", 1))
        self.ram = int(options.pop("ram", 1))
        if options:
            raise ConfigError(f"unknown key allocation.options.{sorted(options)[0]} for "
                              "strategy 'loadlevel' (known: cpu, ram)")

    def fence(self, ctx: Campaign) -> dict[str, Any]:
        created = []
        for m in source_machines(ctx):
            rule = ctx.abiquo.create_load_level_rule(m, cpu=self.cpu, ram=self.ram)
            created.append(rule_record(ctx, rule) | {"machine": m.name})
        return {"created": created}

    def unfence(self, ctx: Campaign, fenced: dict[str, Any]) -> dict[str, Any]:
        existing = {ctx.abiquo.absolute(r.url): r for r in ctx.abiquo.load_level_rules()}
        deleted = []
        for rec in fenced.get("created", []):
            rule = existing.get(rec["url"])
            if rule is not None:
                ctx.abiquo.delete_load_level_rule(rule)
                deleted.append(rec)
        return {"deleted": deleted}


@hookimpl(trylast=True)
def rehost_allocation_strategies() -> list[StrategyRecord]:
    return [StrategyRecord("allocation", "loadlevel",
                           "1% CPU and RAM load-level rule on each source host (maintenance "
                           "mode; the safest)", LoadLevelFence)]
