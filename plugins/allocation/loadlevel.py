"""``loadlevel``: a 1% CPU / 1% RAM load-level rule on each source (CentOS 5) machine.

Nothing fits under 1%, so every deploy goes to the target hosts. Users cannot reconfigure VMs
on the source hosts meanwhile (Abiquo support's "maintenance mode"). The safest default.

A source machine that already has a load-level rule keeps one rule: that rule is changed to
1%/1% for the campaign and put back, values unchanged, by the unfence (Abiquo may refuse a
second rule on a machine).
"""

from __future__ import annotations

from typing import Any

from rehost.abiquo.site import client, set_machine_rule, source_machines, undo_machine_rule
from rehost.abiquo.types import Machine
from rehost.api import (
    VM,
    AllocationStrategy,
    ConfigError,
    Context,
    FenceResult,
    Need,
    PreconditionError,
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
        machines = source_machines(ctx)
        for m in machines:
            self._check_excludes(ctx, m)
        created: list[dict[str, Any]] = []

        def note(intent: dict[str, Any]) -> None:
            # journaled before each rule changes: a kill mid-fence leaves no rule unrecorded
            ctx.note_fence(FenceResult(**{"created": [*created, intent]}))

        try:
            for m in machines:
                created.append(set_machine_rule(ctx, m, cpu=self.cpu, ram=self.ram,
                                                note=note))
        except Exception:
            # a fence that fails puts back what it changed so far (the campaign stops
            # before any VM moves)
            for rec in reversed(created):
                undo_machine_rule(ctx, rec)
            ctx.note_fence(FenceResult(**{"created": []}))
            raise
        return FenceResult(**{"created": created})

    def _check_excludes(self, ctx: Context, m: Machine) -> None:
        """Refuse, before any rule changes, a rule that would still admit one of the
        machine's VMs once the machine empties: on a large machine 1% of its CPUs and RAM
        can be a whole VM, and the deploy would then land on the source again."""
        cpus, ram = (m.cpu or 0) * self.cpu / 100, (m.ram or 0) * self.ram / 100
        if cpus < 1:
            return  # every VM has a CPU at least
        for v in client(ctx).machine_vms(m):
            if (v.cpu or 0) <= cpus and (v.ram or 0) <= ram and v.url:
                raise PreconditionError(
                    f"a {self.cpu}% CPU / {self.ram}% RAM load-level rule cannot fence "
                    f"{m.name}: {cpus:g} of its {m.cpu} CPUs and {ram:g} of its {m.ram} MB "
                    f"still admit {v.nodeName or v.name} ({v.cpu} CPU, {v.ram} MB), so a "
                    "deploy could land on this source host again; lower "
                    "allocation.options.cpu / ram in the site config (nothing was changed)")

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
