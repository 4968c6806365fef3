"""``performance``: no CPU oversubscription on the source machines, fit policy PERFORMANCE.

The source machines' own load-level rules are replaced by a 100% CPU rule (RAM as it was), and
the global fit policy becomes PERFORMANCE (least loaded first): new deploys go to the emptier
target hosts while users can still reconfigure and undeploy on the source hosts. Unfence
deletes what fence created and creates again what it deleted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rehost.core.errors import ConfigError
from rehost.core.model import StrategyRecord
from rehost.hooks import hookimpl
from rehost.plugins.allocation.common import rule_record, rules_on, source_machines

if TYPE_CHECKING:
    from rehost.core.campaign import Campaign


class PerformanceFence:
    name = "performance"

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        options = dict(options or {})
        self.cpu = int(options.pop("cpu", 100))
        if options:
            raise ConfigError(f"unknown key allocation.options.{sorted(options)[0]} for "
                              "strategy 'performance' (known: cpu)")

    def fence(self, ctx: Campaign) -> dict[str, Any]:
        client = ctx.abiquo
        machines = source_machines(ctx)
        old_rules = rules_on(ctx, machines)
        deleted = [rule_record(ctx, r) for r in old_rules]
        ram_of = {rec["target"]: rec["ram"] for rec in deleted}
        for r in old_rules:
            client.delete_load_level_rule(r)
        created = []
        for m in machines:
            ram = ram_of.get(client.absolute(m.url)) or 100
            rule = client.create_load_level_rule(m, cpu=self.cpu, ram=ram)
            created.append(rule_record(ctx, rule) | {"machine": m.name})
        policies = [r for r in client.fit_policy_rules() if r.datacenter is None]
        old_policies = [{"url": client.absolute(p.url), "fitPolicy": p.fitPolicy}
                        for p in policies]
        # Abiquo refuses to delete the last load-balance rule: create the new one first
        new = client.create_fit_policy_rule("PERFORMANCE")
        for p in policies:
            client.delete_fit_policy_rule(p)
        return {"deleted_rules": deleted, "created_rules": created,
                "deleted_policies": old_policies,
                "created_policy": {"url": client.absolute(new.url), "fitPolicy": "PERFORMANCE"}}

    def unfence(self, ctx: Campaign, fenced: dict[str, Any]) -> dict[str, Any]:
        client = ctx.abiquo
        rules = {client.absolute(r.url): r for r in client.load_level_rules()}
        removed = []
        for rec in fenced.get("created_rules", []):
            if rec["url"] in rules:
                client.delete_load_level_rule(rules[rec["url"]])
                removed.append(rec)
        machines = {client.absolute(m.url): m for m in client.machines()}
        recreated = []
        for rec in fenced.get("deleted_rules", []):
            m = machines.get(rec["target"] or "")
            if m is not None:
                rule = client.create_load_level_rule(m, cpu=rec["cpu"], ram=rec["ram"])
                recreated.append(rule_record(ctx, rule))
        policies = {client.absolute(p.url): p for p in client.fit_policy_rules()}
        restored = []
        for p in fenced.get("deleted_policies", []):
            client.create_fit_policy_rule(p["fitPolicy"])
            restored.append(p["fitPolicy"])
        created = (fenced.get("created_policy") or {}).get("url")
        if created in policies:
            client.delete_fit_policy_rule(policies[created])
        return {"deleted_rules": removed, "recreated_rules": recreated,
                "restored_policies": restored}


@hookimpl(trylast=True)
def rehost_allocation_strategies() -> list[StrategyRecord]:
    return [StrategyRecord("allocation", "performance",
                           "no CPU oversubscription on source hosts, fit policy PERFORMANCE",
                           PerformanceFence)]
