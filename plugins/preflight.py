"""The preflight checks that need no control plane: the downtime accepted, hosts reachable
over ssh and libvirt, datastore space on the targets, and whether the datastore is shared.
The control plane and the strategies add their own (``preflight`` of each).

The hosts are checked at once, one thread each, and each host is asked once: its facts are one
ssh command while its libvirt connection opens (``ctx.facts``), the sizes of the disks on a
source host one more command (``Shell.probe_paths``); the storage strategy's checks of the VMs
of each source host run in a thread of their own, answered from that command. The
shared-datastore probe runs alongside the hosts' facts. Only when a host's facts cannot be read
is it asked again, to tell an ssh failure from a libvirt one. ``-v`` says how long each part
took, ``-vv`` each host too. (docs/design.md, section 2, "How the preflight spends its time".)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from rehost.api import (
    VM,
    Context,
    Disk,
    Finding,
    HostFacts,
    RehostError,
    Shell,
    TransferResult,
    backup_path,
    hookimpl,
    same_datastore,
)

T = TypeVar("T")
R = TypeVar("R")


def _at_once(items: Sequence[T], work: Callable[[T], R], name: str) -> list[R]:
    """``work`` of every item, each in its own thread; the answers in the items' order. The
    threads have ended when this returns (their libvirt connections go to the next thread
    that needs one: ``ctx.hypervisor``)."""
    if len(items) <= 1:
        return [work(i) for i in items]
    with ThreadPoolExecutor(max_workers=len(items), thread_name_prefix=name) as pool:
        return list(pool.map(work, items))


@hookimpl
def rehost_preflight(ctx: Context) -> list[Finding]:
    started = time.monotonic()
    findings: list[Finding] = []
    if ctx.vms and not (ctx.config.campaign.downtime_accepted
                        or ctx.journal.get("downtime_accepted")):
        findings.append(Finding(
            "critical", "downtime",
            "every VM is powered off while it moves: once its users agreed to the downtime, "
            "set campaign.downtime_accepted = true or run with --accept-downtime"))
    hosts = [h.name for h in ctx.config.hosts.values()]
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="preflight-shared") as aside:
        # whether the datastore is shared, asked at once of the hosts the config names (the
        # answer is kept when they turn out to be the ones to ask)
        config_sources = [h.name for h in ctx.config.sources()]
        config_targets = [h.name for h in ctx.config.targets()]
        early = aside.submit(_timed, lambda: _probe_shared(ctx, config_sources[:1],
                                                           config_targets))
        found = _at_once(hosts, lambda h: _check_host(ctx, h), "preflight-host")
        early_answers, early_seconds = early.result()
    facts: dict[str, HostFacts] = {}
    for host, checked in zip(hosts, found, strict=True):
        ctx.log.debug("preflight: {}: {}", host, checked.summary())
        if checked.facts is not None:
            facts[host] = checked.facts
        if checked.finding is not None:
            findings.append(checked.finding)
    timings = {"hosts at once (facts, disks, disk sizes)": time.monotonic() - started}
    slowest = max(zip(hosts, found, strict=True), key=lambda hc: hc[1].seconds, default=None)

    sources = [h for h in ctx.config.sources() if h.name in facts]
    targets = [h for h in ctx.config.targets() if h.name in facts]
    if not ctx.config.sources():
        findings.append(Finding("critical", "no-source", "no source host in the site config"))
    if not ctx.config.targets():
        findings.append(Finding("critical", "no-target", "no target host in the site config"))
    good_targets = []
    for h in targets:
        try:
            ctx.control.guard_target(ctx, h.name)
        except RehostError:
            continue  # the control plane's own preflight says why
        good_targets.append(h)
    probed = {h: checked for h, checked in zip(hosts, found, strict=True)}
    step = time.monotonic()
    findings.extend(_space(ctx, [h.name for h in good_targets], facts, probed))
    timings["space"] = time.monotonic() - step
    step = time.monotonic()
    src = [h.name for h in sources][:1]
    answers = early_answers if src == config_sources[:1] else None
    findings.extend(_shared(ctx, src, [h.name for h in good_targets], answers))
    timings["shared-datastore probe"] = time.monotonic() - step
    if answers is not None:
        timings["shared-datastore probe, alongside the hosts"] = early_seconds
    total = time.monotonic() - started
    ctx.log.info("preflight checks in {:.2f} s: {}{}", total,
                 ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()),
                 f"; slowest host {slowest[0]}: {slowest[1].summary()}" if slowest else "")
    return findings


def _timed(work: Callable[[], T]) -> tuple[T, float]:
    started = time.monotonic()
    value = work()
    return value, time.monotonic() - started


@dataclass
class _Checked:
    """What one host's thread found: its facts (or the finding why not), the disks of the
    VMs on it and whether each disk is there with its size (one command)."""

    facts: HostFacts | None = None
    finding: Finding | None = None
    disks: dict[str, list[Disk] | RehostError] = field(default_factory=dict)
    known: dict[str, Any] | None = None
    seconds: float = 0.0
    parts: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        parts = ", ".join(f"{k} {v:.2f} s" for k, v in self.parts.items())
        return f"{self.seconds:.2f} s ({parts})" if parts else f"{self.seconds:.2f} s"


def _check_host(ctx: Context, host: str) -> _Checked:
    """The host's facts (ssh and libvirt at once). When they cannot be read, ``true`` over
    ssh tells whether ssh or libvirt failed. Then the disks of the VMs that are on it, and
    their sizes in one command (the space is counted from these later)."""
    out = _Checked()
    started = time.monotonic()
    try:
        out.facts = ctx.facts(host, refresh=True)
    except RehostError as exc:
        failed = exc
        try:
            ctx.shell(host).run(["true"], timeout=30)
        except RehostError as exc:
            out.finding = Finding("critical", "ssh", f"not reachable over ssh: {exc}",
                                  host=host)
        else:
            out.finding = Finding("critical", "libvirt", f"not reachable with libvirt: {failed}",
                                  host=host)
    out.parts["facts"] = time.monotonic() - started
    if out.facts is not None:
        step = time.monotonic()
        vms = [vm for vm in ctx.vms
               if vm.source_host == host and vm.fact(TransferResult) is None]
        paths: list[str] = []
        for vm in vms:
            disks = vm.disks
            if not disks:
                try:
                    disks = ctx.hypervisor(host).disks(vm.name)
                except RehostError as exc:
                    out.disks[vm.name] = exc
                    continue
                out.disks[vm.name] = disks
            for d in disks:
                if d.is_file:
                    paths += [d.source or "", backup_path(d)]
        out.parts["disks listed"] = time.monotonic() - step
        if paths:
            step = time.monotonic()
            try:
                out.known = dict(ctx.shell(host).probe_paths(paths))
            except RehostError as exc:
                ctx.log.debug("preflight: {}: disk sizes in one command failed ({}); asking "
                              "disk by disk", host, exc)
            out.parts["disk sizes"] = time.monotonic() - step
    out.seconds = time.monotonic() - started
    return out


class _Primed:
    """A host's shell whose ``exists`` and ``stat`` answer from one ``probe_paths`` command
    (for the paths it asked about); everything else goes to the host."""

    def __init__(self, shell: Shell, known: dict[str, Any]) -> None:
        self._shell = shell
        self._known = known

    def exists(self, path: str) -> bool:
        if path in self._known:
            return self._known[path] is not None
        return self._shell.exists(path)

    def stat(self, path: str) -> Any:
        found = self._known.get(path)
        return found if found is not None else self._shell.stat(path)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._shell, name)


class _PrimedContext:
    """The campaign as the storage strategy's ``check_vm`` and ``space_needed`` see it in the
    preflight: the same, but the source hosts' shells answer ``exists`` and ``stat`` of the
    disks from the one command that read them all."""

    def __init__(self, ctx: Context, primed: dict[str, _Primed]) -> None:
        self._ctx = ctx
        self._primed = primed

    def shell(self, host: str) -> Shell:
        primed = self._primed.get(host)
        return cast(Shell, primed) if primed is not None else self._ctx.shell(host)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)


def _space(ctx: Context, targets: list[str], facts: dict[str, HostFacts],
           probed: dict[str, _Checked]) -> list[Finding]:
    """The storage strategy's ``check_vm`` and ``space_needed`` of every VM, the VMs of each
    source host in a thread of their own (their exists and stat answered from the one command
    per host); the findings in the VMs' order."""
    if not targets:
        return []
    listed = {name: disks for c in probed.values() for name, disks in c.disks.items()}
    view = cast(Context, _PrimedContext(ctx, {
        h: _Primed(ctx.shell(h), c.known) for h, c in probed.items() if c.known is not None}))
    # resumed VMs are left out: their disks are on the target already (in its free space)
    todo = [vm for vm in ctx.vms if vm.fact(TransferResult) is None]
    by_host: dict[str, list[VM]] = {}
    for vm in todo:
        by_host.setdefault(vm.source_host or "", []).append(vm)
    hosts = list(by_host)
    answers = _at_once(hosts, lambda h: [_vm_space(ctx, view, vm, listed)
                                         for vm in by_host[h]], "preflight-space")
    per_vm = {vm.name: answer for h, host_answers in zip(hosts, answers, strict=True)
              for vm, answer in zip(by_host[h], host_answers, strict=True)}
    needed = 0
    biggest = 0
    out: list[Finding] = []
    for vm in todo:
        found, size = per_vm[vm.name]
        out.extend(found)
        needed += size
        biggest = max(biggest, size)
    free = {t: facts[t].datastore_free_bytes or 0 for t in targets}
    if needed > sum(free.values()):
        out.append(Finding("critical", "space",
                           f"the disks need {needed >> 20} MiB on the target datastores, "
                           f"{sum(free.values()) >> 20} MiB are free"))
    elif biggest > max(free.values()):
        out.append(Finding("warning", "space",
                           f"the largest VM needs {biggest >> 20} MiB; no single target has "
                           "that much free"))
    else:
        out.append(Finding("info", "space",
                           f"{needed >> 20} MiB needed on the targets, "
                           f"{sum(free.values()) >> 20} MiB free"))
    return out


def _vm_space(ctx: Context, view: Context, vm: VM,
              listed: dict[str, list[Disk] | RehostError]) -> tuple[list[Finding], int]:
    """One VM's findings (its disks, the storage strategy's checks) and the bytes it needs."""
    out: list[Finding] = []
    if not vm.disks and vm.source_host:
        try:
            found = listed.get(vm.name)
            if found is None:  # its host did not answer: ask (and say why not)
                found = ctx.hypervisor(vm.source_host).disks(vm.name)
            if isinstance(found, RehostError):
                raise found
            vm.disks = found
        except RehostError as exc:
            return [Finding("critical", "disks", f"cannot list disks: {exc}",
                            vm=vm.label or vm.name)], 0
    out.extend(ctx.storage.check_vm(vm, view))
    size = 0
    for d in vm.file_disks():
        try:
            size += ctx.storage.space_needed(view, vm, d)
        except RehostError as exc:
            out.append(Finding("critical", "disk", f"{d.source}: {exc}",
                               vm=vm.label or vm.name))
    return out, size


def _probe_shared(ctx: Context, sources: list[str],
                  targets: list[str]) -> dict[str, bool | RehostError]:
    """Whether each target sees a marker written on the first source's datastore; the
    targets look at once, each for its own marker."""
    if not sources or not targets:
        return {}
    src = ctx.host(sources[0])
    probe = f"{src.datastore}/.rehost-shared"

    def sees(target: str) -> bool | RehostError:
        try:
            return same_datastore(ctx.shell(src.name), ctx.shell(target), probe)
        except RehostError as exc:
            return exc

    return dict(zip(targets, _at_once(targets, sees, "preflight-shared"), strict=True))


def _shared(ctx: Context, sources: list[str], targets: list[str],
            asked: dict[str, bool | RehostError] | None = None) -> list[Finding]:
    """Does each target see the first source's datastore (a marker written there)? ``asked``:
    the answers of the hosts the config names, asked alongside the hosts' facts; used when
    ``sources[0]`` is the source they were asked of and every target was asked."""
    if not sources or not targets:
        return []
    src = ctx.host(sources[0])
    if asked is None or not all(t in asked for t in targets):
        asked = _probe_shared(ctx, sources, targets)
    failed = next((a for t in targets if isinstance(a := asked[t], RehostError)), None)
    if failed is not None:
        return [Finding("warning", "shared-probe", f"cannot write to {src.datastore}: {failed}",
                        host=src.name)]
    seen = [t for t in targets if asked[t] is True]
    shared = len(seen) == len(targets)
    strategy = ctx.config.storage.strategy
    if strategy == "shared" and not shared:
        return [Finding("critical", "not-shared",
                        f"storage strategy is shared, but {', '.join(set(targets) - set(seen))} "
                        f"do not see {src.name}'s datastore")]
    if shared and strategy != "shared":
        return [Finding("info", "shared",
                        "the datastore is shared by source and target hosts: the `shared` "
                        "strategy would move disks without copying")]
    return [Finding("info", "shared" if shared else "not-shared",
                    "datastore is shared" if shared else "datastores are separate")]
