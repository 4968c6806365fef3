"""``performance``: no CPU oversubscription on the source machines, fit policy PERFORMANCE.

The source machines' own load-level rules are replaced by a 100% CPU rule (RAM as it was), and
the global fit policy becomes PERFORMANCE (least loaded first): new deploys go to the emptier
target hosts while users can still reconfigure and undeploy on the source hosts. Unfence
deletes what fence created and creates again what it deleted.
"""

from __future__ import annotations

from typing import Any

from rehost.abiquo.site import client, made_by, rule_record, rules_on, source_machines
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


class PerformanceFence(AllocationStrategy):
    name = "performance"

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        options = dict(options or {})
        self.cpu = int(options.pop("cpu", 100))
        self.target_cpu = int(options.pop("target_cpu", 400))
        if options:
            raise ConfigError(f"unknown key allocation.options.{sorted(options)[0]} for "
                              "strategy 'performance' (known: cpu, target_cpu)")

    def choose_target(self, vm: VM, ctx: Context, need: Need,
                      targets: list[TargetLoad]) -> str | None:
        """Without a control plane that places VMs: the target with the most free CPU and
        RAM (as Abiquo's PERFORMANCE policy ranks, a core against 512 MB) on which the VM fits:
        its virtual CPUs within ``target_cpu`` percent of the host's (400 by default: KVM
        hosts commonly run four virtual CPUs a core), its RAM, and its disks."""
        fits = [t for t in targets
                if (t.used_cpus + need.cpus) * 100 <= t.cpus * self.target_cpu
                and t.used_mib + need.memory_mib <= t.memory_mib and need.bytes <= t.free_bytes]
        if not fits:
            return None
        best = max(fits, key=lambda t: ((t.cpus - t.used_cpus)
                                        + (t.memory_mib - t.used_mib) / 512, t.free_bytes))
        return best.host

    def fence(self, ctx: Context) -> FenceResult:
        c = client(ctx)
        machines = source_machines(ctx)
        old_rules = rules_on(ctx, machines)
        deleted = [rule_record(ctx, r) for r in old_rules]
        ram_of = {rec["target"]: rec["ram"] for rec in deleted}
        created: list[dict[str, Any]] = []
        policy: dict[str, Any] = {}
        old_policies: list[dict[str, Any]] = []

        def note(*pending: dict[str, Any]) -> None:
            # journaled before each change: a kill mid-fence leaves nothing unrecorded (a
            # pending rule's url is None: the unfence finds it by machine and values)
            ctx.note_fence(FenceResult(**{"deleted_rules": deleted,
                                          "created_rules": [*created, *pending],
                                          "deleted_policies": old_policies,
                                          "created_policy": policy or None}))

        try:
            note()
            # one rule per machine: the old one goes before the new one comes
            for r in old_rules:
                c.delete_load_level_rule(r)
            for m in machines:
                ram = ram_of.get(c.absolute(m.url)) or 100
                rec = {"url": None, "cpu": self.cpu, "ram": ram, "rel": "machine",
                       "target": c.absolute(m.url), "machine": m.name}
                note(rec)
                rule = c.create_load_level_rule(m, cpu=self.cpu, ram=ram)
                created.append(rule_record(ctx, rule) | {"machine": m.name})
        except Exception:
            # a fence that fails puts back what it changed (the campaign stops before any
            # VM moves)
            self._put_back(ctx, created, deleted)
            deleted, created = [], []
            note()
            raise
        policies = [r for r in c.fit_policy_rules() if r.datacenter is None]
        old_policies = [{"url": c.absolute(p.url), "fitPolicy": p.fitPolicy}
                        for p in policies]
        policy = {"url": None, "fitPolicy": "PERFORMANCE"}
        note()
        # Abiquo refuses to delete the last load-balance rule: create the new one first
        new = c.create_fit_policy_rule("PERFORMANCE")
        policy = {"url": c.absolute(new.url), "fitPolicy": "PERFORMANCE"}
        note()
        for p in policies:
            c.delete_fit_policy_rule(p)
        return FenceResult(**{"deleted_rules": deleted, "created_rules": created,
                "deleted_policies": old_policies, "created_policy": policy})

    @staticmethod
    def _put_back(ctx: Context, created: list[dict[str, Any]],
                  deleted: list[dict[str, Any]]) -> None:
        c = client(ctx)
        for rule in c.load_level_rules():
            if c.absolute(rule.url) in {rec["url"] for rec in created}:
                c.delete_load_level_rule(rule)
        machines = {c.absolute(m.url): m for m in c.machines()}
        have = {rec["target"] for rec in (rule_record(ctx, r) for r in c.load_level_rules())}
        for rec in deleted:
            m = machines.get(rec["target"] or "")
            if m is not None and rec["target"] not in have:
                c.create_load_level_rule(m, cpu=rec["cpu"], ram=rec["ram"])

    def unfence(self, ctx: Context, fenced: FenceResult) -> UnfenceResult:
        """Undo what the record says the fence did, as far as it exists: safe to run again,
        and on the record of a fence killed half-way."""
        c = client(ctx)
        removed = []
        for rec in fenced.record("created_rules", []):
            for rule in c.load_level_rules():
                if made_by(ctx, rule, rec):
                    c.delete_load_level_rule(rule)
                    removed.append(rec)
        machines = {c.absolute(m.url): m for m in c.machines()}
        # one rule per machine: a machine that has one again (an earlier, interrupted unfence,
        # or a fence killed before it deleted it) keeps it
        have = {rule_record(ctx, r)["target"] for r in c.load_level_rules()}
        recreated = []
        for rec in fenced.record("deleted_rules", []):
            m = machines.get(rec["target"] or "")
            if m is not None and rec["target"] not in have:
                rule = c.create_load_level_rule(m, cpu=rec["cpu"], ram=rec["ram"])
                recreated.append(rule_record(ctx, rule))
        policies = {c.absolute(p.url): p for p in c.fit_policy_rules()
                    if p.datacenter is None}
        old = fenced.record("deleted_policies", [])
        restored = []
        for p in old:
            if p["url"] not in policies:  # deleted by the fence: created again
                c.create_fit_policy_rule(p["fitPolicy"])
                restored.append(p["fitPolicy"])
        created = fenced.record("created_policy") or {}
        if created:
            policies = {c.absolute(p.url): p for p in c.fit_policy_rules()
                        if p.datacenter is None}
            keep = {p["url"] for p in old}
            for url, p in policies.items():
                # the fence's own policy; one journaled before its url was known is any
                # PERFORMANCE policy the site did not have before; the last one stays
                mine = (url == created.get("url") if created.get("url")
                        else p.fitPolicy == created.get("fitPolicy") and url not in keep)
                if mine and len(policies) > 1:
                    c.delete_fit_policy_rule(p)
                    del policies[url]
                    break
        return UnfenceResult(**{"deleted_rules": removed, "recreated_rules": recreated,
                "restored_policies": restored})


@hookimpl(trylast=True)
def rehost_allocation_strategies() -> list[StrategyRecord]:
    return [StrategyRecord("allocation", "performance",
                           "no CPU oversubscription on source hosts, fit policy PERFORMANCE",
                           PerformanceFence)]
