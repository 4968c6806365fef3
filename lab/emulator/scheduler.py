"""The emulator's scheduler: which machine a VM is deployed on.

As Abiquo's allocator does: only ``MANAGED`` machines of the right hypervisor type are
candidates; every load-level rule that applies to the machine (its datacenter, its rack, the
machine itself) must admit the VM, i.e. ``used + required <= capacity * percent / 100`` for CPU
and for RAM; with no rule the capacity itself is the limit. Among the machines left, the fit
policy in force picks: ``PROGRESSIVE`` the most loaded one (fill a machine before starting
another), ``PERFORMANCE`` the least loaded one. A machine's load is the mean of its CPU and RAM
use fractions; ties go to the lower machine id.
"""

from __future__ import annotations

from dataclasses import dataclass

from rehost.lab.emulator.inventory import VM, Inventory, Machine


@dataclass
class NoMachine(Exception):  # mirrors Abiquo's NotEnoughResourcesException
    """No machine can take the VM; ``reasons`` says why, machine by machine."""

    reasons: list[str]

    def __str__(self) -> str:
        return "; ".join(self.reasons)


def admits(inv: Inventory, m: Machine, vm: VM) -> str | None:
    """None when ``m`` can take ``vm``, else why not."""
    if m.state != "MANAGED":
        return f"{m.name} is {m.state}"
    cpu_used, ram_used = inv.used(m)
    limits = [(100, 100, "capacity")] + [(r.cpu, r.ram, f"load-level rule {r.id} ({r.rel})")
                                         for r in inv.rules_for(m)]
    for cpu_pct, ram_pct, what in limits:
        if cpu_used + vm.cpu > m.cpu * cpu_pct / 100:
            return (f"{m.name}: CPU {cpu_used}+{vm.cpu} exceeds {cpu_pct}% of {m.cpu} "
                    f"allowed by {what}")
        if ram_used + vm.ram > m.ram * ram_pct / 100:
            return (f"{m.name}: RAM {ram_used}+{vm.ram} MiB exceeds {ram_pct}% of {m.ram} MiB "
                    f"allowed by {what}")
    return None


def load(inv: Inventory, m: Machine) -> float:
    cpu_used, ram_used = inv.used(m)
    return (cpu_used / max(1, m.cpu) + ram_used / max(1, m.ram)) / 2


def choose_machine(inv: Inventory, vm: VM) -> Machine:
    """The machine the VM goes to; raises :class:`NoMachine` when none fits."""
    reasons: list[str] = []
    fit: list[Machine] = []
    for m in sorted(inv.machines.values(), key=lambda x: x.id):
        why = admits(inv, m, vm)
        if why is None:
            fit.append(m)
        else:
            reasons.append(why)
    if not fit:
        raise NoMachine(reasons or ["there are no machines"])
    if inv.fit_policy() == "PERFORMANCE":
        return min(fit, key=lambda m: (load(inv, m), m.id))
    return min(fit, key=lambda m: (-load(inv, m), m.id))
