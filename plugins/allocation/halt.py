"""``halt``: the source machines are disabled (HALTED) during the downtime.

A disabled machine receives no deploy, undeploy or reconfigure: use it only inside a
downtime window. Unfence puts each machine back in the state it had.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rehost.core.errors import ConfigError
from rehost.core.model import StrategyRecord
from rehost.hooks import hookimpl
from rehost.plugins.allocation.common import source_machines

if TYPE_CHECKING:
    from rehost.core.campaign import Campaign


class HaltFence:
    name = "halt"

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        if options:
            raise ConfigError(f"unknown key allocation.options.{sorted(options)[0]} for "
                              "strategy 'halt' (it takes no options)")

    def fence(self, ctx: Campaign) -> dict[str, Any]:
        halted = []
        for m in source_machines(ctx):
            if m.state == "HALTED":
                continue
            ctx.abiquo.set_machine_state(m, "HALTED")
            halted.append({"url": ctx.abiquo.absolute(m.url), "machine": m.name,
                           "state": m.state})
        return {"halted": halted}

    def unfence(self, ctx: Campaign, fenced: dict[str, Any]) -> dict[str, Any]:
        machines = {ctx.abiquo.absolute(m.url): m for m in ctx.abiquo.machines()}
        restored = []
        for rec in fenced.get("halted", []):
            m = machines.get(rec["url"])
            if m is not None and m.state != rec["state"]:
                ctx.abiquo.set_machine_state(m, rec["state"])
                restored.append(rec)
        return {"restored": restored}


@hookimpl(trylast=True)
def rehost_allocation_strategies() -> list[StrategyRecord]:
    return [StrategyRecord("allocation", "halt",
                           "source machines HALTED during the downtime (blocks deploy, "
                           "undeploy and reconfigure)", HaltFence)]
