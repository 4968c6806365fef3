"""The whole datacenter: evacuation host by host (``rehost plan --evacuate``, ``rehost run
--evacuate``).

The manual procedure says: move VMs to the CentOS 6 hosts, "repeat until all your
infrastructure is running on CentOS 6 servers. If any of your CentOS 5 servers empties, you can
reinstall it as a CentOS 6 to give you more resources for the migration." An evacuation does
that in **waves**: each wave empties one CentOS 5 host into the capacity the targets have then;
the emptied host is reinstalled (a site plugin on ``rehost_host_emptied``, or the operator),
comes back as CentOS 6, is checked (``rehost host rejoin``) and is a target for the next waves.
So the site needs as few spare hosts as possible: one, where the VMs fit.

The plan is greedy and said in full before anything moves: among the source hosts whose VMs
all fit into the targets of their rack now (CPU, RAM and datastore space as the control plane
counts them: ``rehost_host_capacity``), the one with the smallest load goes first (it frees a
whole host for the least work); each VM is placed on the target with the most room, largest VM
first. VMs stay in their rack where the rack has room (a VM's networks are its rack's:
Abiquo's VLANs), and go to another rack of the datacenter only when none of its own can take
them; a host whose VMs all stay in their rack goes before one whose VMs would not. The control
plane still chooses where each VM lands (Abiquo's allocator); the plan
proves that room exists and estimates each wave's downtime.

State lives in the journal (``evacuation``): the waves run, the hosts emptied and rejoined.
A campaign killed between waves or inside one resumes where it stopped (``rehost resume``).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from rehost.core.errors import PreconditionError, RehostError
from rehost.core.types import Need, TargetLoad

if TYPE_CHECKING:
    from rehost.core.campaign import Campaign
    from rehost.core.model import VM

#: seconds of each VM's downtime that are not the copy (power off, deploy, start): the
#: estimate's fixed part
OVERHEAD_S = 30.0
#: how often an evacuation waiting for a host to rejoin asks it again
REJOIN_POLL_S = 5.0


@dataclass
class Move:
    vm: str  # the VM's name (its domain)
    label: str
    need: dict[str, int]
    target: str  # where the plan fits it (the control plane may choose another with room)


@dataclass
class Wave:
    number: int
    host: str  # the source host it empties
    rack: str
    moves: list[Move] = field(default_factory=list)
    estimate_s: float = 0.0

    @property
    def vms(self) -> list[str]:
        return [m.vm for m in self.moves]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Wave:
        moves = [Move(**m) for m in data.get("moves", [])]
        return cls(int(data["number"]), data["host"], data.get("rack", ""), moves,
                   float(data.get("estimate_s", 0.0)))


@dataclass
class SourceHost:
    name: str
    rack: str
    vms: list[tuple[str, str, Need]]  # (name, label, need)
    #: what the host can hold once reinstalled (its capacity, nothing on it)
    capacity: TargetLoad


class EvacuationImpossible(PreconditionError):
    """No source host's VMs fit into the targets: the site needs more spare capacity."""


def _fits(t: TargetLoad, need: Need) -> bool:
    return (t.used_cpus + need.cpus <= t.cpus and t.used_mib + need.memory_mib <= t.memory_mib
            and need.bytes <= t.free_bytes)


def _same_rack(a: str, b: str) -> bool:
    return not a or not b or a == b


def _place(host: SourceHost, targets: dict[str, TargetLoad], racks: dict[str, str]
           ) -> tuple[list[Move], dict[str, TargetLoad], int] | None:
    """The host's VMs placed on copies of the targets (largest first, each on the target
    with the most room, in its own rack first); None when one does not fit anywhere. The
    third value counts the VMs that leave their rack."""
    loads = {n: t.model_copy() for n, t in targets.items()}
    moves = []
    crossing = 0
    for name, label, need in sorted(host.vms, key=lambda v: (-v[2].cpus, -v[2].memory_mib,
                                                              -v[2].bytes, v[0])):
        room = [t for t in loads.values() if _fits(t, need)]
        mine = [t for t in room if _same_rack(host.rack, racks.get(t.host, ""))]
        if not room:
            return None
        crossing += not mine
        best = max(mine or room, key=lambda t: (t.cpus - t.used_cpus, t.memory_mib - t.used_mib,
                                                t.free_bytes, t.host))
        best.used_cpus += need.cpus
        best.used_mib += need.memory_mib
        best.free_bytes -= need.bytes
        moves.append(Move(name, label, need.model_dump(), best.host))
    return moves, loads, crossing


def plan_waves(sources: list[SourceHost], targets: list[TargetLoad], racks: dict[str, str],
               *, copy_rate_mib: float = 50.0, first: int = 1) -> list[Wave]:
    """The waves that empty every source host (see the module's doc). Raises
    :class:`EvacuationImpossible` naming what is missing when no host can be emptied."""
    loads = {t.host: t.model_copy() for t in targets}
    left = sorted(sources, key=lambda s: s.name)
    waves: list[Wave] = []
    while left:
        choices = []
        for s in left:
            placed = _place(s, loads, racks)
            if placed is not None:
                # within its rack first, then the smallest load
                weight = (placed[2], sum(n.cpus for _, _, n in s.vms),
                          sum(n.memory_mib for _, _, n in s.vms),
                          sum(n.bytes for _, _, n in s.vms), s.name)
                choices.append((weight, s, placed))
        if not choices:
            raise EvacuationImpossible(_shortfall(left, loads))
        _, host, (moves, placed_loads, _) = min(choices, key=lambda c: c[0])
        loads.update(placed_loads)
        total = sum(m.need.get("bytes", 0) for m in moves)
        # one VM at a time: the wave's downtime is the sum of its VMs'
        estimate = len(moves) * OVERHEAD_S + total / (copy_rate_mib * (1 << 20))
        waves.append(Wave(first + len(waves), host.name, host.rack, moves, round(estimate, 1)))
        # reinstalled as CentOS 6, the emptied host is a target for the next waves
        loads[host.name] = host.capacity.model_copy()
        racks = {**racks, host.name: host.rack}
        left.remove(host)
    return waves


def _shortfall(left: list[SourceHost], loads: dict[str, TargetLoad]) -> str:
    """What the smallest remaining host lacks."""
    s = min(left, key=lambda h: (sum(n.cpus for _, _, n in h.vms), h.name))
    cpus = sum(n.cpus for _, _, n in s.vms)
    mib = sum(n.memory_mib for _, _, n in s.vms)
    size = sum(n.bytes for _, _, n in s.vms)
    free_cpu = sum(t.cpus - t.used_cpus for t in loads.values())
    free_mib = sum(t.memory_mib - t.used_mib for t in loads.values())
    free_bytes = sum(t.free_bytes for t in loads.values())
    where = f"rack {s.rack}" if s.rack else "the site"
    return (f"no source host can be emptied into the targets: the smallest, {s.name}, has "
            f"{len(s.vms)} VM(s) needing {cpus} CPU, {mib} MiB RAM and {size >> 20} MiB of "
            f"disk; the targets have {free_cpu} CPU, {free_mib} MiB and {free_bytes >> 20} MiB "
            f"free (and each VM must fit on one host): add a spare CentOS 6 host to {where}, "
            "or move some VMs by hand first")


# -- the campaign's view ----------------------------------------------------------------------


def _capacity(ctx: Campaign, host: str) -> TargetLoad:
    found = ctx.hooks.host_capacity(ctx, host)
    if found is None:
        raise PreconditionError(f"no plugin says what {host} can hold (rehost_host_capacity)")
    return found


def _need(ctx: Campaign, vm: VM) -> Need:
    cpus, mib = ctx.hypervisor(vm.source_host or "").resources(vm.name)
    size = 0
    for d in vm.file_disks():
        size += ctx.storage.space_needed(ctx, vm, d)
    return Need(cpus=cpus, memory_mib=mib, bytes=size)


def make_evacuation_plan(ctx: Campaign, vms: list[VM], *, first: int = 1) -> list[Wave]:
    """The waves for the VMs still on source hosts, from the hosts as they are now."""
    from rehost.core.disks import parse_disks

    by_host: dict[str, list[VM]] = {h.name: [] for h in ctx.config.sources()}
    for vm in vms:
        if vm.source_host in by_host:
            by_host[vm.source_host].append(vm)
    sources = []
    for name, on in by_host.items():
        entries = []
        for vm in on:
            if not vm.disks:
                vm.disks = parse_disks(ctx.hypervisor(name).dumpxml(vm.name, inactive=False))
            entries.append((vm.name, vm.label or vm.name, _need(ctx, vm)))
        cap = _capacity(ctx, name)
        moved = sum(n.bytes for _, _, n in entries)
        empty = cap.model_copy(update={"used_cpus": 0, "used_mib": 0,
                                       "free_bytes": cap.free_bytes + moved})
        sources.append(SourceHost(name, ctx.config.hosts[name].rack, entries, empty))
    targets = [_capacity(ctx, h.name) for h in ctx.config.targets()]
    racks = {h.name: h.rack for h in ctx.config.hosts.values()}
    return plan_waves(sources, targets, racks, copy_rate_mib=ctx.config.campaign.copy_rate_mib,
                      first=first)


# -- running it -------------------------------------------------------------------------------


def state(ctx: Campaign) -> dict[str, Any]:
    saved = ctx.journal.get("evacuation")
    return dict(saved) if saved else {"waves": [], "current": None, "emptied": [],
                                      "announced": [], "joined": []}


def _save(ctx: Campaign, st: dict[str, Any]) -> None:
    ctx.journal.set("evacuation", st)


def apply_roles(ctx: Campaign) -> None:
    """The hosts an evacuation rejoined are targets (the site config still says source)."""
    for name in state(ctx)["joined"]:
        if name in ctx.config.hosts:
            ctx.config.hosts[name].role = "target"


def rejoin(ctx: Campaign, host: str) -> str:
    """Check that an emptied host came back as CentOS 6 and make it a target; returns what
    it says about itself. Raises :class:`PreconditionError` saying what is not right yet."""
    if host not in ctx.config.hosts:
        raise PreconditionError(f"{host} is not a host of the site config")
    st = state(ctx)
    if host in st["joined"]:
        return f"{host} is a target already"
    if host not in st["emptied"]:
        raise PreconditionError(f"{host} was not emptied by this campaign's evacuation: "
                                "nothing to rejoin")
    ctx.reconnect(host)  # a reinstalled host: new host keys aside, the old connections are gone
    facts = ctx.facts(host, refresh=True)
    if facts.centos_major != 6:
        raise PreconditionError(f"{host} says {facts.os_release!r}: not CentOS 6 yet "
                                "(reinstall it, then `rehost host rejoin` it)")
    domains = [d.name for d in ctx.hypervisor(host).domains()]
    if domains:
        raise PreconditionError(f"{host} has domains defined ({', '.join(domains[:5])}): a "
                                "reinstalled host starts empty")
    ctx.hooks.host_rejoined(ctx=ctx, host=host)  # the control plane checks it too
    ctx.config.hosts[host].role = "target"
    st["joined"].append(host)
    _save(ctx, st)
    ctx.log.info("{} rejoined as a target: {}, libvirt {}", host, facts.os_release,
                 facts.libvirt_version)
    return f"{host}: {facts.os_release}, libvirt {facts.libvirt_version}: a target now"


def _await_rejoin(ctx: Campaign, host: str) -> bool:
    timeout = ctx.config.campaign.rejoin_timeout
    deadline = time.monotonic() + timeout
    while True:
        try:
            rejoin(ctx, host)
            return True
        except RehostError as exc:
            if time.monotonic() >= deadline or ctx.stopping.is_set():
                ctx.log.warning("{} is empty and waits to be reinstalled as CentOS 6 ({}); "
                                "then `rehost host rejoin {}` and `rehost resume`", host, exc,
                                host)
                return False
        ctx.stopping.wait(REJOIN_POLL_S)


def evacuate(ctx: Campaign) -> tuple[dict[str, str], str | None]:
    """Run the evacuation, wave after wave, from where the journal says it is. Returns every
    VM's outcome and, when it stopped before the end, why."""
    from rehost.core.pipeline import configured, run_campaign, select_vms

    outcome: dict[str, str] = {}
    st = state(ctx)
    _save(ctx, st)  # from here on, `resume` goes on with the evacuation
    apply_roles(ctx)
    while True:
        for host in [h for h in st["emptied"] if h not in st["joined"]]:
            if host not in st.setdefault("announced", []):
                # at least once: a campaign killed before the hook returned calls it again
                ctx.hooks.host_emptied(ctx=ctx, host=host,
                                       wave=next((int(w["number"]) for w in st["waves"]
                                                  if w["host"] == host), 0))
                st["announced"].append(host)
                _save(ctx, st)
            if not _await_rejoin(ctx, host):
                return outcome, (f"{host} is empty: reinstall it as CentOS 6, then `rehost host "
                                 f"rejoin {host}` and `rehost resume`")
            st = state(ctx)
        wave: Wave | None = Wave.from_dict(st["current"]) if st["current"] else None
        if wave is None:
            with configured(ctx):
                ctx.discovered = ctx.discovered or ctx.hooks.discover_hosts(ctx)
                vms = select_vms(ctx)
                waves = make_evacuation_plan(ctx, vms, first=len(st["waves"]) + 1)
            if not waves:
                _report(ctx)  # every host emptied and rejoined: the report says so
                return outcome, None
            wave = waves[0]
            st["current"] = wave.to_dict()
            _save(ctx, st)
            ctx.log.info("wave {}: empties {} ({} VM(s), about {:.0f} s of downtime)",
                         wave.number, wave.host, len(wave.moves), wave.estimate_s)
        if wave.vms:
            got = run_campaign(ctx, wave.vms)
            outcome.update(got)
            if ctx.stopped_by is not None:
                return outcome, "stopped"
            if any(o != "done" for o in got.values()):
                return outcome, (f"wave {wave.number} (emptying {wave.host}) did not finish: "
                                 "fix what failed, then `rehost resume`")
        left = [d.name for d in ctx.hypervisor(wave.host).domains()]
        if left:
            return outcome, (f"{wave.host} still has domains after wave {wave.number}: "
                             f"{', '.join(left[:5])}; move them, then `rehost resume`")
        st = state(ctx)
        st["waves"].append(wave.to_dict())
        st["current"] = None
        if wave.host not in st["emptied"]:
            st["emptied"].append(wave.host)
        _save(ctx, st)
        ctx.log.info("wave {} done: {} is empty", wave.number, wave.host)
        _report(ctx)  # the report shows the wave done (its run wrote it while it ran)


def _report(ctx: Campaign) -> None:
    from rehost.core.pipeline import configured, write_report

    try:
        with configured(ctx):
            write_report(ctx)
    except Exception as exc:  # the report is news, not a step of the evacuation
        ctx.log.error("the report could not be written: {}", exc)
