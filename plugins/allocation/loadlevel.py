"""``loadlevel``: a 1% CPU / 1% RAM load-level rule on each source (CentOS 5) machine.

Nothing fits under 1%, so every deploy goes to the target hosts. Users cannot reconfigure VMs
on the source hosts meanwhile (Abiquo support's "maintenance mode"). The safest default.

A source machine that already has a load-level rule keeps one rule: that rule is changed to
1%/1% for the campaign and put back, values unchanged, by the unfence (Abiquo may refuse a
second rule on a machine).
"""

from __future__ import annotations

from typing import Any

from rehost.abiquo.site import set_machine_rule, source_machines, undo_machine_rule
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
        self.target_cpu = int(options.pop("target_cpu", 400))
        self.target_ram = int(options.pop("target_ram", 100))
        if options:
            raise ConfigError(f"unknown key allocation.options.{sorted(options)[0]} for "
                              "strategy 'loadlevel' (known: cpu, ram, target_cpu, target_ram)")

    def choose_target(self, vm: VM, ctx: Context, need: Need,
                      targets: list[TargetLoad]) -> str | None:
        """Without a control plane that places VMs: a load-level rule on each target host
        (``target_cpu``, ``target_ram`` percent of its CPUs and RAM: 400 and 100 by default;
        above 100 is oversubscription), and the most loaded target that stays within it is
        filled first
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
        created: list[dict[str, Any]] = []
        try:
            for m in source_machines(ctx):
                created.append(set_machine_rule(ctx, m, cpu=self.cpu, ram=self.ram))
        except Exception:
            # the fence record is journaled only once the fence returns: put back what was
            # changed so far rather than leave it unrecorded
            for rec in reversed(created):
                undo_machine_rule(ctx, rec)
            raise
        return FenceResult(**{"created": created})

    def unfence(self, ctx: Context, fenced: FenceResult) -> UnfenceResult:
        deleted, restored = [], []
        for rec in fenced.record("created", []):
            was_there, again = undo_machine_rule(ctx, rec)
            if was_there:
                deleted.append(rec)
            restored += again
        return UnfenceResult(**{"deleted": deleted, "restored": restored})


@hookimpl(trylast=True)
def rehost_allocation_strategies() -> list[StrategyRecord]:
    return [StrategyRecord("allocation", "loadlevel",
                           "1% CPU and RAM load-level rule on each source host (maintenance "
                           "mode; the safest)", LoadLevelFence)]
