"""One load-level rule per machine (Abiquo may refuse a second one, and 2.x has no PUT for a
rule): a machine's own rule is changed for the campaign and put back with its values, by the
``loadlevel`` fence, by ``performance``, and by rollback's pinning; a fence that fails half-way
puts back what it changed. Against an in-memory Abiquo that refuses a second rule."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from loguru import logger

from rehost.abiquo import site
from rehost.abiquo.errors import AbiquoError
from rehost.abiquo.types import Link, LoadLevelRule, Machine
from rehost.api import FenceResult
from rehost.plugins.allocation.loadlevel import LoadLevelFence
from rehost.plugins.allocation.performance import PerformanceFence


class Rules:
    """The part of AbiquoClient the rule helpers use, over a dict of rules."""

    def __init__(self, machines: list[str], fail_on: str | None = None,
                 kill_on: str | None = None) -> None:
        self._machines = [Machine(links=[Link("edit", f"/m/{n}")], name=n, state="MANAGED")
                          for n in machines]
        self.rules: dict[int, tuple[str, int, int]] = {}
        self.ids = itertools.count(1)
        self.fail_on = fail_on
        self.kill_on = kill_on  # rehost "dies" (SystemExit) just after this change
        self.policies: list[Any] = []
        self.vms: list[Any] = []

    def machine_vms(self, m: Machine) -> list[Any]:
        return list(self.vms)

    def absolute(self, href: str) -> str:
        return href

    def machines(self) -> list[Machine]:
        return list(self._machines)

    def load_level_rules(self) -> list[LoadLevelRule]:
        return [LoadLevelRule(links=[Link("edit", f"/r/{i}"), Link("machine", target)], id=i,
                              cpuLoadPercentage=cpu, ramLoadPercentage=ram)
                for i, (target, cpu, ram) in self.rules.items()]

    def create_load_level_rule(self, m: Machine, *, cpu: int, ram: int) -> LoadLevelRule:
        if m.name == self.fail_on and (cpu, ram) != (90, 80):
            raise AbiquoError(500, "GEN-7", "injected")
        if any(t == m.url for t, _, _ in self.rules.values()):
            raise AbiquoError(409, "RULE-7", "a second rule on one machine")
        i = next(self.ids)
        self.rules[i] = (m.url, cpu, ram)
        if self.kill_on == f"rule {m.name}":
            raise SystemExit(137)
        return next(r for r in self.load_level_rules() if r.id == i)

    def delete_load_level_rule(self, rule: LoadLevelRule) -> None:
        del self.rules[int(rule.url.rsplit("/", 1)[1])]

    def fit_policy_rules(self) -> list[Any]:
        return list(self.policies)

    def create_fit_policy_rule(self, policy: str) -> Any:
        from rehost.abiquo.types import FitPolicyRule

        rule = FitPolicyRule(links=[Link("edit", f"/f/{policy}/{next(self.ids)}")],
                             fitPolicy=policy)
        self.policies.append(rule)
        if self.kill_on == f"policy {policy}":
            raise SystemExit(137)
        return rule

    def delete_fit_policy_rule(self, rule: Any) -> None:
        self.policies.remove(rule)

    def values(self) -> list[tuple[str, int, int]]:
        return sorted(self.rules.values())


class Host:
    def __init__(self, name: str) -> None:
        self.name = name


class Config:
    def sources(self) -> list[Host]:
        return [Host("c5-a"), Host("c5-b")]


class Ctx:
    log = logger
    config = Config()

    def __init__(self) -> None:
        self.journaled: dict[str, Any] | None = None  # the last fence record noted

    def note_fence(self, record: FenceResult) -> None:
        self.journaled = record.model_dump(mode="json")

    def host_by_address(self, key: str) -> Host | None:
        return Host(key) if key.startswith("c") else None


def campaign(fake: Rules) -> Ctx:
    ctx = Ctx()
    site._clients[ctx] = fake  # type: ignore[assignment]  # the campaign's client
    return ctx


def test_loadlevel_changes_a_machines_own_rule_and_puts_it_back() -> None:
    fake = Rules(["c5-a", "c5-b", "c6-a"])
    ctx = campaign(fake)
    fake.create_load_level_rule(fake.machines()[0], cpu=90, ram=80)  # the site's own
    before = fake.values()
    fenced = LoadLevelFence().fence(ctx)  # type: ignore[arg-type]
    assert fake.values() == [("/m/c5-a", 1, 1), ("/m/c5-b", 1, 1)]
    result = LoadLevelFence().unfence(ctx, FenceResult(**fenced.model_dump()))  # type: ignore[arg-type]
    assert fake.values() == before
    assert [(r["cpu"], r["ram"]) for r in result.restored] == [(90, 80)]
    # an unfence run again (resume after a kill) changes nothing more
    LoadLevelFence().unfence(ctx, FenceResult(**fenced.model_dump()))  # type: ignore[arg-type]
    assert fake.values() == before


def test_a_fence_that_fails_half_way_puts_back_what_it_changed() -> None:
    fake = Rules(["c5-a", "c5-b"], fail_on="c5-b")
    ctx = campaign(fake)
    fake.create_load_level_rule(fake.machines()[0], cpu=90, ram=80)
    before = fake.values()
    with pytest.raises(AbiquoError):
        LoadLevelFence().fence(ctx)  # type: ignore[arg-type]
    assert fake.values() == before
    with pytest.raises(AbiquoError):
        PerformanceFence().fence(ctx)  # type: ignore[arg-type]
    assert fake.values() == before


def test_performance_replaces_the_rules_and_puts_them_back() -> None:
    fake = Rules(["c5-a", "c5-b", "c6-a"])
    ctx = campaign(fake)
    fake.create_fit_policy_rule("PROGRESSIVE")
    fake.create_load_level_rule(fake.machines()[1], cpu=90, ram=80)
    before = fake.values()
    fenced = PerformanceFence().fence(ctx)  # type: ignore[arg-type]
    assert fake.values() == [("/m/c5-a", 100, 100), ("/m/c5-b", 100, 80)]
    PerformanceFence().unfence(ctx, FenceResult(**fenced.model_dump()))  # type: ignore[arg-type]
    assert fake.values() == before
    assert [p.fitPolicy for p in fake.policies] == ["PROGRESSIVE"]


def test_pinning_for_a_rollback_never_doubles_a_rule() -> None:
    fake = Rules(["c5-a", "c6-a"])
    ctx = campaign(fake)
    c6 = fake.machines()[1]
    fake.create_load_level_rule(c6, cpu=150, ram=100)
    rec = site.set_machine_rule(ctx, c6, cpu=1, ram=1)  # type: ignore[arg-type]
    assert fake.values() == [("/m/c6-a", 1, 1)]
    assert site.undo_machine_rule(ctx, rec)[0] is True  # type: ignore[arg-type]
    assert fake.values() == [("/m/c6-a", 150, 100)]


@pytest.mark.parametrize("kill_on", ["rule c5-a", "rule c5-b"])
def test_a_loadlevel_fence_killed_half_way_is_undone_from_the_journal(kill_on: str) -> None:
    fake = Rules(["c5-a", "c5-b", "c6-a"])
    ctx = campaign(fake)
    fake.create_load_level_rule(fake.machines()[1], cpu=90, ram=80)  # the site's own, c5-b
    fake.kill_on = kill_on
    before = fake.values()
    with pytest.raises(SystemExit):
        LoadLevelFence().fence(ctx)  # type: ignore[arg-type]
    assert fake.values() != before  # a 1% rule was made and rehost died before returning
    assert ctx.journaled is not None
    fake.kill_on = None  # the resume's unfence
    LoadLevelFence().unfence(ctx, FenceResult(**ctx.journaled))  # type: ignore[arg-type]
    assert fake.values() == before


@pytest.mark.parametrize("kill_on", ["rule c5-b", "policy PERFORMANCE"])
def test_a_performance_fence_killed_half_way_is_undone_from_the_journal(kill_on: str) -> None:
    fake = Rules(["c5-a", "c5-b", "c6-a"])
    ctx = campaign(fake)
    fake.create_fit_policy_rule("PROGRESSIVE")
    fake.create_load_level_rule(fake.machines()[0], cpu=90, ram=80)
    fake.kill_on = kill_on
    before = fake.values()
    with pytest.raises(SystemExit):
        PerformanceFence().fence(ctx)  # type: ignore[arg-type]
    assert ctx.journaled is not None
    fake.kill_on = None  # the resume's unfence
    PerformanceFence().unfence(ctx, FenceResult(**ctx.journaled))  # type: ignore[arg-type]
    assert fake.values() == before
    assert [p.fitPolicy for p in fake.policies] == ["PROGRESSIVE"]


def test_a_rule_that_would_still_admit_a_vm_is_refused_before_any_change() -> None:
    from rehost.abiquo.types import VirtualMachine
    from rehost.api import PreconditionError

    fake = Rules(["c5-a", "c5-b"])
    for m in fake._machines:
        m.cpu, m.ram = 256, 262144  # 1% is 2.56 CPUs and 2621 MB
    fake.vms = [VirtualMachine(links=[Link("edit", "/vm/7")], name="ABQ_7", nodeName="web",
                               cpu=2, ram=2048)]
    ctx = campaign(fake)
    with pytest.raises(PreconditionError, match=r"cannot fence c5-a: 2.56 of its 256 CPUs .* "
                                                r"still admit web \(2 CPU, 2048 MB\)"):
        LoadLevelFence().fence(ctx)  # type: ignore[arg-type]
    assert fake.values() == []
    fake.vms[0].cpu = 4  # more than 1% of the CPUs: fenced
    LoadLevelFence().fence(ctx)  # type: ignore[arg-type]
    assert fake.values() == [("/m/c5-a", 1, 1), ("/m/c5-b", 1, 1)]
