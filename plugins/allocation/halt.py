"""``halt``: the source machines are disabled (HALTED) during the downtime.

A disabled machine receives no deploy, undeploy or reconfigure: use it only inside a
downtime window. Unfence puts each machine back in the state it had.
"""

from __future__ import annotations

from typing import Any

from rehost.abiquo.site import client, source_machines
from rehost.api import (
    AllocationStrategy,
    ConfigError,
    Context,
    FenceResult,
    StrategyRecord,
    UnfenceResult,
    hookimpl,
)


class HaltFence(AllocationStrategy):
    name = "halt"

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        if options:
            raise ConfigError(f"unknown key allocation.options.{sorted(options)[0]} for "
                              "strategy 'halt' (it takes no options)")

    def fence(self, ctx: Context) -> FenceResult:
        c = client(ctx)
        halted = []
        for m in source_machines(ctx):
            if m.state == "HALTED":
                continue
            c.set_machine_state(m, "HALTED")
            halted.append({"url": c.absolute(m.url), "machine": m.name,
                           "state": m.state})
        return FenceResult(**{"halted": halted})

    def unfence(self, ctx: Context, fenced: FenceResult) -> UnfenceResult:
        c = client(ctx)
        machines = {c.absolute(m.url): m for m in c.machines()}
        restored, not_restored = [], []
        for rec in fenced.record("halted", []):
            m = machines.get(rec["url"])
            if m is None or m.state == rec["state"]:
                continue
            # leaving HALTED, Abiquo checks the hypervisor first: it may land elsewhere
            now = c.set_machine_state(m, rec["state"]).state
            if now == rec["state"]:
                restored.append(rec)
            else:
                ctx.log.warning("{}: asked Abiquo to put it back to {}, it is {} (Abiquo's "
                                "check of the hypervisor); see to it by hand", rec["machine"],
                                rec["state"], now)
                not_restored.append({**rec, "now": now})
        return UnfenceResult(**{"restored": restored, "not_restored": not_restored})


@hookimpl(trylast=True)
def rehost_allocation_strategies() -> list[StrategyRecord]:
    return [StrategyRecord("allocation", "halt",
                           "source machines HALTED during the downtime (blocks deploy, "
                           "undeploy and reconfigure)", HaltFence)]
