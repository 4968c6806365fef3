"""The evacuation plan (core/evacuate.py): waves that empty the CentOS 5 hosts one by one into
the capacity the CentOS 6 hosts have then, each emptied host joining the targets; VMs stay in
their rack; what is missing is said when nothing fits."""

from __future__ import annotations

import pytest

from rehost.core.evacuate import EvacuationImpossible, SourceHost, Wave, plan_waves
from rehost.core.types import Need, TargetLoad

GIB = 1 << 30


def host(name: str, rack: str, vms: int, cpus: int = 2, mib: int = 512,
         capacity: int = 8) -> SourceHost:
    return SourceHost(name, rack,
                      [(f"{name}-vm{i}", f"{name}-vm{i}", Need(cpus=cpus, memory_mib=mib,
                                                               bytes=GIB))
                       for i in range(vms)],
                      TargetLoad(host=name, cpus=capacity, memory_mib=16384,
                                 free_bytes=100 * GIB))


def target(name: str, cpus: int = 8) -> TargetLoad:
    return TargetLoad(host=name, cpus=cpus, memory_mib=16384, free_bytes=100 * GIB)


def test_one_spare_host_evacuates_four_whose_vms_fit_one_at_a_time() -> None:
    # each CentOS 5 host runs 3 VMs of 2 CPU (6); the one CentOS 6 host holds 8: one host's
    # VMs fit, not two hosts' — each emptied host then adds its own 8
    sources = [host(f"c5-{c}", "r1" if c in "ab" else "r2", 3) for c in "abcd"]
    waves = plan_waves(sources, [target("c6-a")], {"c6-a": "r1"})
    assert [w.host for w in waves] == ["c5-a", "c5-b", "c5-c", "c5-d"]
    assert [len(w.moves) for w in waves] == [3, 3, 3, 3]
    # wave 1 can only go to c6-a; the hosts of rack r1 go first (their VMs stay in r1), then
    # rack r2's go where there is room
    assert {m.target for m in waves[0].moves} == {"c6-a"}
    assert {m.target for m in waves[1].moves} <= {"c5-a", "c6-a"}
    assert all(w.estimate_s > 0 for w in waves)
    # a wave survives the journal
    assert Wave.from_dict(waves[1].to_dict()) == waves[1]


def test_vms_stay_in_their_rack_first_then_the_datacenter() -> None:
    # a target in each rack: c5-a (rack r2) goes to r2's, though r1's has more room
    waves = plan_waves([host("c5-a", "r2", 1)], [target("c6-a", cpus=16), target("c6-b")],
                       {"c6-a": "r1", "c6-b": "r2"})
    assert [m.target for m in waves[0].moves] == ["c6-b"]
    # no room in its rack: the datacenter's
    waves = plan_waves([host("c5-a", "r2", 1)], [target("c6-a")], {"c6-a": "r1"})
    assert [m.target for m in waves[0].moves] == ["c6-a"]
    # a host whose VMs stay in their rack goes first
    waves = plan_waves([host("c5-a", "r2", 1), host("c5-b", "r1", 2)], [target("c6-a", 16)],
                       {"c6-a": "r1"})
    assert [w.host for w in waves] == ["c5-b", "c5-a"]


def test_the_smallest_host_that_fits_goes_first_and_nothing_overfills() -> None:
    sources = [host("c5-big", "", 4), host("c5-small", "", 1)]
    waves = plan_waves(sources, [target("c6-a", cpus=4)], {})
    assert [w.host for w in waves] == ["c5-small", "c5-big"]
    # c5-big's 8 CPU go to c6-a (2 left there) and the emptied c5-small (8)
    placed: dict[str, int] = {}
    for m in waves[1].moves:
        placed[m.target] = placed.get(m.target, 0) + m.need["cpus"]
    assert placed["c5-small"] <= 8 and placed.get("c6-a", 0) <= 2
    assert sum(placed.values()) == 8


def test_no_room_anywhere_says_what_is_missing() -> None:
    with pytest.raises(EvacuationImpossible, match=r"the smallest, c5-a, has 5 VM\(s\) needing "
                                                   r"10 CPU.* the targets have 4 CPU.* add a "
                                                   "spare CentOS 6 host to the site"):
        plan_waves([host("c5-a", "", 5)], [target("c6-a", cpus=4)], {})
