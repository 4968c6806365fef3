"""``loadlevel``: a 1% CPU / 1% RAM load-level rule on each source (CentOS 5) machine.

Nothing fits under 1%, so every deploy goes to the target hosts. Users cannot reconfigure VMs
on the source hosts meanwhile (Abiquo support's "maintenance mode"). The safest default.
"""

from __future__ import annotations

from typing import Any

from rehost.abiquo.site import client, rule_record, source_machines
from rehost.api import (
    VM,
    AllocationStrategy,
    ConfigError,
    Context,
    FenceResult,
    Need,
    StrategyRecord,
    TargetLoad,
    UnfenceResult,
    hookimpl,
)


class LoadLevelFence(AllocationStrategy):
    name = "loadlevel"

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        options = dict(options or {})
        self.cpu = int(options.pop("cpu", 1))
        self.ram = int(options.pop("ram", 1))
        # without a control plane that places VMs: the load-level rule of each target host
        self.target_cpu = int(options.pop("target_cpu", 100))
        self.target_ram = int(options.pop("target_ram", 100))
        if options:
            raise ConfigError(f"unknown key allocation.options.{sorted(options)[0]} for "
                              "strategy 'loadlevel' (known: cpu, ram, target_cpu, target_ram)")

    def choose_target(self, vm: VM, ctx: Context, need: Need,
                      targets: list[TargetLoad]) -> str | None:
        """Without a control plane that places VMs: a load-level rule on each target host
        (``target_cpu``, ``target_ram`` percent of its CPUs and RAM, 100 by default; more is
        oversubscription), and the most loaded target that stays within it is filled first
        (Abiquo's default, PROGRESSIVE), so that whole hosts stay free."""
        fits = [t for t in targets
                if (t.used_cpus + need.cpus) * 100 <= t.cpus * self.target_cpu
                and (t.used_mib + need.memory_mib) * 100 <= t.memory_mib * self.target_ram
                and need.bytes <= t.free_bytes]
        if not fits:
            return None
        return min(fits, key=lambda t: ((t.cpus - t.used_cpus)
                                        + (t.memory_mib - t.used_mib) / 512, t.host)).host

    def fence(self, ctx: Context) -> FenceResult:
        c = client(ctx)
        created = []
        for m in source_machines(ctx):
            rule = c.create_load_level_rule(m, cpu=self.cpu, ram=self.ram)
            created.append(rule_record(ctx, rule) | {"machine": m.name})
        return FenceResult(**{"created": created})

    def unfence(self, ctx: Context, fenced: FenceResult) -> UnfenceResult:
        c = client(ctx)
        existing = {c.absolute(r.url): r for r in c.load_level_rules()}
        deleted = []
        for rec in fenced.record("created", []):
            rule = existing.get(rec["url"])
            if rule is not None:
                c.delete_load_level_rule(rule)
                deleted.append(rec)
        return UnfenceResult(**{"deleted": deleted})


@hookimpl(trylast=True)
def rehost_allocation_strategies() -> list[StrategyRecord]:
    return [StrategyRecord("allocation", "loadlevel",
                           "1% CPU and RAM load-level rule on each source host (maintenance "
                           "mode; the safest)", LoadLevelFence)]
