"""The preflight checks that need no control plane: the downtime accepted, hosts reachable
over ssh and libvirt, datastore space on the targets, and whether the datastore is shared.
The control plane and the strategies add their own (``preflight`` of each)."""

from __future__ import annotations

from rehost.api import (
    Context,
    Finding,
    HostFacts,
    RehostError,
    TransferResult,
    hookimpl,
    same_datastore,
)


@hookimpl
def rehost_preflight(ctx: Context) -> list[Finding]:
    findings: list[Finding] = []
    if ctx.vms and not (ctx.config.campaign.downtime_accepted
                        or ctx.journal.get("downtime_accepted")):
        findings.append(Finding(
            "critical", "downtime",
            "every VM is powered off while it moves: once its users agreed to the downtime, "
            "set campaign.downtime_accepted = true or run with --accept-downtime"))
    facts: dict[str, HostFacts] = {}
    for host in ctx.config.hosts.values():
        try:
            ctx.shell(host.name).run(["true"], timeout=30)
        except RehostError as exc:
            findings.append(Finding("critical", "ssh", f"not reachable over ssh: {exc}",
                                    host=host.name))
            continue
        try:
            facts[host.name] = ctx.facts(host.name, refresh=True)
        except RehostError as exc:
            findings.append(Finding("critical", "libvirt", f"not reachable with libvirt: {exc}",
                                    host=host.name))
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
    findings.extend(_space(ctx, [h.name for h in good_targets], facts))
    findings.extend(_shared(ctx, [h.name for h in sources], [h.name for h in good_targets]))
    return findings


def _space(ctx: Context, targets: list[str], facts: dict[str, HostFacts]) -> list[Finding]:
    if not targets:
        return []
    needed = 0
    biggest = 0
    out: list[Finding] = []
    for vm in ctx.vms:
        if vm.fact(TransferResult) is not None:
            continue  # resumed: its disks are on the target already (counted in its free space)
        if not vm.disks and vm.source_host:
            try:
                vm.disks = ctx.hypervisor(vm.source_host).disks(vm.name)
            except RehostError as exc:
                out.append(Finding("critical", "disks", f"cannot list disks: {exc}",
                                   vm=vm.label or vm.name))
                continue
        out.extend(ctx.storage.check_vm(vm, ctx))
        size = 0
        for d in vm.file_disks():
            try:
                size += ctx.storage.space_needed(ctx, vm, d)
            except RehostError as exc:
                out.append(Finding("critical", "disk", f"{d.source}: {exc}",
                                   vm=vm.label or vm.name))
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


def _shared(ctx: Context, sources: list[str], targets: list[str]) -> list[Finding]:
    """Does each target see the first source's datastore (a marker written there)?"""
    if not sources or not targets:
        return []
    src = ctx.host(sources[0])
    probe = f"{src.datastore}/.rehost-shared"
    try:
        seen = [t for t in targets if same_datastore(ctx.shell(src.name), ctx.shell(t), probe)]
    except RehostError as exc:
        return [Finding("warning", "shared-probe", f"cannot write to {src.datastore}: {exc}",
                        host=src.name)]
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
