"""The engine: the campaign stages and the per-VM protocol, in order, as hook events.

The core knows the stages and their order and nothing about any one strategy: each stage is a
hook (``rehost_vm_<stage>``) that a plugin performs. Every stage is journaled before and after
it runs; a stage the journal shows finished is skipped on resume, and every stage is written to
be safe to run twice. A VM whose stage fails stops there (a safe point: no later, destructive
stage runs) with the reason and what was done recorded; the other VMs go on.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from rehost.core.campaign import Campaign
from rehost.core.errors import PluginError, RehostError
from rehost.core.model import VM, VM_STAGES, Finding


class PreflightFailed(RehostError):
    """Critical preflight findings: nothing was changed (exit code 1)."""

    exit_code = 1

    def __init__(self, findings: list[Finding]) -> None:
        self.findings = findings
        lines = [f"  - [{f.code}] {f.message}" for f in findings if f.severity == "critical"]
        super().__init__("preflight found critical problems; nothing was changed:\n"
                         + "\n".join(lines))


@dataclass
class Plan:
    """What a run would do: the VMs, where they are, and the preflight findings."""

    vms: list[VM]
    findings: list[Finding]
    storage: str
    allocation: str
    targets: list[str] = field(default_factory=list)

    @property
    def critical(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "critical"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "vms": [{"name": v.name, "uuid": v.uuid, "label": v.label,
                     "source_host": v.source_host, "disks": [d.to_dict() for d in v.disks]}
                    for v in self.vms],
            "findings": [f.to_dict() for f in self.findings],
            "storage": self.storage,
            "allocation": self.allocation,
            "targets": self.targets,
            "ok": not self.critical,
        }


#: What is true of a VM's data once a stage has finished: told to the operator when a VM stops.
SAFE_POINTS: dict[str, str] = {
    "locate": "nothing was changed; the VM runs on its source host",
    "backup_xml": "nothing was changed; its domain XML is saved in the state directory",
    "notify": "nothing was changed; its users were told the downtime starts",
    "power_off": "the VM is powered off on its source host, its disks untouched",
    "undefine": "the domain is undefined on the source host (XML saved); disks untouched",
    "await_undeployed": "Abiquo shows the VM undeployed; its disks are untouched on the source",
    "preserve_disks": "the user's disks are kept as X_BACK on the source datastore",
    "deploy": "the VM is deployed on a target host with template disks; the user's disks are "
              "X_BACK on the source datastore",
    "power_off_new": "the new VM is off; the user's disks are X_BACK on the source datastore",
    "transfer": "the user's disks are X_BACK on the source and on the target datastore",
    "remove_new_disks": "template disks removed; the user's disks are X_BACK on the source and "
                        "target datastores",
    "swap_disks": "the user's disks are in place on the target host (X_BACK still on source)",
    "start": "the VM runs on the target host with the user's disks",
    "verify": "verified on the target host; X_BACK kept on the source datastore",
    "cleanup": "done",
}


def safe_point(done: list[str]) -> str:
    last = done[-1] if done else None
    return SAFE_POINTS.get(last, "nothing was changed") if last else "nothing was changed"


# -- the campaign ------------------------------------------------------------------------------


def select_vms(ctx: Campaign) -> list[VM]:
    vms = ctx.hooks.select_vms(ctx)
    if vms is None:
        raise PluginError("no plugin selects the VMs of the campaign (rehost_select_vms)")
    return vms


def make_plan(ctx: Campaign, only: list[str] | None = None) -> Plan:
    """Select the VMs and run the preflight (read-only)."""
    if ctx.config.abiquo is not None and ctx.config.abiquo.discover and not ctx.discovered:
        ctx.discovered = ctx.discover_hosts()
    vms = select_vms(ctx)
    # a VM the operator rolled back stays where it is, unless named again (`run --vm NAME`)
    rolled = {r["name"] for r in ctx.journal.vm_rows() if r["status"] == "rolled_back"}
    named = set(only or [])
    kept: list[Finding] = []
    for v in [v for v in vms if v.name in rolled and not named & {v.name, v.uuid, v.label}]:
        vms.remove(v)
        who = v.label or v.name
        ctx.log.warning("{}: rolled back earlier, left where it is (`rehost run --vm {}` "
                        "moves it again)", who, who)
        kept.append(Finding("info", "rolled-back",
                            f"was rolled back: it stays on {v.source_host or 'its source host'}"
                            f" (`rehost run --vm {who}` moves it again)", vm=who))
    if only:
        wanted = set(only)
        unknown = wanted - {n for v in vms for n in (v.name, v.uuid, v.label)}
        if unknown:
            from rehost.core.errors import ConfigError

            raise ConfigError(f"--vm {sorted(unknown)[0]!r} is not a VM of this campaign "
                              f"(known: {', '.join(v.label or v.name for v in vms)})")
        vms = [v for v in vms if wanted & {v.name, v.uuid, v.label}]
    ctx.vms = vms
    findings = kept + ctx.hooks.preflight(ctx)
    return Plan(vms, findings, ctx.config.storage.strategy, ctx.config.allocation.strategy,
                [h.name for h in ctx.config.targets()])


def _campaign_stage(ctx: Campaign, stage: str, fn: Callable[[], Any]) -> Any:
    ctx.journal.record(None, stage, "start")
    ctx.hooks.stage_start(stage, None, ctx)
    try:
        result = fn()
    except BaseException as exc:
        ctx.journal.record(None, stage, "error", {"error": str(exc)})
        ctx.hooks.stage_error(stage, None, ctx, exc)
        raise
    ctx.journal.record(None, stage, "finish", result.to_dict() if hasattr(result, "to_dict")
                       else result)
    ctx.hooks.stage_finish(stage, None, ctx, result)
    return result


def run_campaign(ctx: Campaign, only: list[str] | None = None) -> dict[str, str]:
    """Preflight, fence, every VM's protocol, unfence, report. Returns each VM's outcome
    (``done``, ``failed``); resumes where the journal says an earlier run stopped."""
    ctx.hooks.configure(ctx)
    try:
        plan = _campaign_stage(ctx, "preflight", lambda: _preflight(ctx, only))
        if ctx.dry_run:
            return {v.name: "planned" for v in plan.vms}
        ctx.journal.set("downtime_accepted", True)  # a resume goes on without asking again
        for i, vm in enumerate(plan.vms):
            ctx.journal.add_vm(vm, i)
        fenced = ctx.journal.get("fenced")
        if fenced is None or ctx.journal.get("unfenced"):
            fenced = _campaign_stage(ctx, "fence", lambda: ctx.hooks.fence(ctx) or {})
            ctx.journal.set("fenced", fenced)
            ctx.journal.set("unfenced", None)
        ctx.fenced = fenced
        outcome: dict[str, str] = {}
        try:
            ctx.hooks.campaign_start(ctx, plan.vms)
            outcome = _run_vms(ctx, plan.vms)
        finally:
            # unfence, finish and report even when a VM or the unfence itself failed; the
            # first error is raised once all three were tried
            _finish_campaign(ctx, fenced, outcome)
        return outcome
    finally:
        ctx.hooks.unconfigure(ctx)


def _finish_campaign(ctx: Campaign, fenced: dict[str, Any], outcome: dict[str, str]) -> None:
    errors: list[BaseException] = []
    try:
        _campaign_stage(ctx, "unfence", lambda: ctx.hooks.unfence(ctx, fenced) or {})
        ctx.journal.set("unfenced", True)
    except Exception as exc:
        ctx.log.error("unfence failed: {}; the rules changed at fence are in the journal "
                      "(`rehost resume` tries again)", exc)
        errors.append(exc)
    for step in (lambda: ctx.hooks.campaign_finish(ctx, outcome), lambda: write_report(ctx)):
        try:
            step()
        except Exception as exc:
            ctx.log.error("{}", exc)
            errors.append(exc)
    if errors:
        raise errors[0]


def _preflight(ctx: Campaign, only: list[str] | None) -> Plan:
    plan = make_plan(ctx, only)
    if plan.critical:
        raise PreflightFailed(plan.findings)
    return plan


def write_report(ctx: Campaign) -> list[str]:
    outdir = ctx.config.report_dir
    outdir.mkdir(parents=True, exist_ok=True)
    paths: list[str] = _campaign_stage(
        ctx, "report",
        lambda: ctx.hooks.report(ctx, str(outdir), list(ctx.config.report.formats)),
    )
    ctx.journal.set("report_paths", paths)
    return paths


def _run_vms(ctx: Campaign, vms: list[VM]) -> dict[str, str]:
    """Every VM's protocol: ``campaign.parallel`` at once, and at most
    ``campaign.per_host_limit`` from one source host (0: no such limit)."""
    outcome: dict[str, str] = {}
    if ctx.config.campaign.parallel <= 1 or len(vms) <= 1:
        for vm in vms:
            outcome[vm.name] = run_vm(ctx, vm)
        return outcome
    limit = ctx.config.campaign.per_host_limit
    slots = {h: threading.BoundedSemaphore(limit) for h in {vm.source_host for vm in vms}
             if h and limit > 0}

    def one(vm: VM) -> str:
        slot = slots.get(vm.source_host or "")
        if slot is None:
            return run_vm(ctx, vm)
        with slot:
            return run_vm(ctx, vm)

    # a VM waiting for its host's slot must not hold a worker another host could use: order
    # the VMs round-robin over their source hosts
    by_host: dict[str, list[VM]] = {}
    for vm in vms:
        by_host.setdefault(vm.source_host or "", []).append(vm)
    queues = list(by_host.values())
    ordered = [q[i] for i in range(max(map(len, queues))) for q in queues if i < len(q)]
    with ThreadPoolExecutor(max_workers=ctx.config.campaign.parallel,
                            thread_name_prefix="vm") as pool:
        futures = {vm.name: pool.submit(one, vm) for vm in ordered}
        for vm in vms:
            outcome[vm.name] = futures[vm.name].result()
    return outcome


# -- one VM ------------------------------------------------------------------------------------


def run_vm(ctx: Campaign, vm: VM) -> str:
    """Run the per-VM protocol; returns ``done`` or ``failed``. Never raises for a stage
    failure: the error is journaled, observers are told, and the VM stops at a safe point."""
    saved = ctx.journal.load_vm(vm.name)
    if saved is not None:
        vm.__dict__.update(saved.__dict__)
    finished = ctx.journal.finished_stages(vm.name)
    done: list[str] = []
    for stage in VM_STAGES:
        if stage in finished:
            done.append(stage)
            continue
        try:
            _run_vm_stage(ctx, vm, stage)
        except (KeyboardInterrupt, SystemExit) as exc:
            # interrupted: journaled as such (the stage did not finish, resume runs it again)
            ctx.journal.record(vm, stage, "error", {
                "error": f"interrupted ({type(exc).__name__})", "interrupted": True,
                "safe_point": safe_point(done), "done": done})
            ctx.journal.set_status(vm.name, "interrupted", f"{stage}: interrupted")
            ctx.hooks.stage_error(stage, vm, ctx, exc)
            raise
        except Exception as exc:
            note = safe_point(done)
            ctx.journal.record(vm, stage, "error", {
                "error": str(exc), "type": type(exc).__name__, "safe_point": note,
                "done": done, "traceback": traceback.format_exc(limit=6),
            })
            ctx.journal.set_status(vm.name, "failed", f"{stage}: {exc}")
            ctx.hooks.stage_error(stage, vm, ctx, exc)
            ctx.log.error("{}: stage {} failed: {} — {}", vm.label or vm.name, stage, exc, note)
            try:
                ctx.hooks.notify(vm, ctx, "failed")
            except Exception as nexc:  # a broken notifier must not hide the real failure
                ctx.log.error("{}: notify failed: {}", vm.name, nexc)
            return "failed"
        done.append(stage)
    ctx.journal.set_status(vm.name, "done")
    return "done"


def _run_vm_stage(ctx: Campaign, vm: VM, stage: str) -> Any:
    ctx.journal.record(vm, stage, "start")
    ctx.hooks.stage_start(stage, vm, ctx)
    if stage == "notify":
        ctx.hooks.notify(vm, ctx, "downtime_start")
        result: Any = {"event": "downtime_start"}
    else:
        result = ctx.hooks.vm_stage(stage, vm, ctx)
        if result is None:
            raise PluginError(f"no plugin performs stage {stage!r} (rehost_vm_{stage}); "
                              "is a built-in plugin blocked?")
    vm.facts[stage] = result
    ctx.journal.record(vm, stage, "finish", result)
    ctx.hooks.stage_finish(stage, vm, ctx, result)
    if stage == "start":
        ctx.hooks.notify(vm, ctx, "downtime_end")
    return result


@contextmanager
def configured(ctx: Campaign) -> Iterator[None]:
    """``rehost_configure`` before a command works on the campaign, ``rehost_unconfigure``
    after it, also when it failed."""
    ctx.hooks.configure(ctx)
    try:
        yield
    finally:
        ctx.hooks.unconfigure(ctx)


def plan(ctx: Campaign, only: list[str] | None = None) -> Plan:
    """``rehost plan``: the VMs and the preflight findings, plugins configured."""
    with configured(ctx):
        return make_plan(ctx, only)


def confirm(ctx: Campaign, only: list[str] | None = None) -> dict[str, Any]:
    """Delete the ``X_BACK`` disks of verified VMs (the ``cleanup`` stage, run again with
    ``delete_backups``). VMs that did not pass ``verify`` keep theirs."""
    with configured(ctx):
        return _confirm(ctx, only)


def _confirm(ctx: Campaign, only: list[str] | None) -> dict[str, Any]:
    ctx.config.campaign.delete_backups = True
    out: dict[str, Any] = {}
    for row in ctx.journal.vm_rows():
        vm = VM.from_dict(row["vm"])
        if only and not set(only) & {vm.name, vm.uuid, vm.label}:
            continue
        if not (vm.facts.get("verify") or {}).get("ok"):
            out[vm.label or vm.name] = "not verified: backups kept"
            continue
        result = _run_vm_stage(ctx, vm, "cleanup")
        ctx.journal.set_status(vm.name, "done")
        out[vm.label or vm.name] = {"deleted": result.get("deleted", [])}
    write_report(ctx)
    return out


def rollback(ctx: Campaign, names: list[str]) -> dict[str, Any]:
    """Put VMs that stopped part-way back on their source hosts (the ``rollback`` stage)."""
    with configured(ctx):
        return _rollback(ctx, names)


def _rollback(ctx: Campaign, names: list[str]) -> dict[str, Any]:
    if ctx.journal.get("fenced") is not None and not ctx.journal.get("unfenced"):
        from rehost.core.errors import PreconditionError

        raise PreconditionError("the campaign is still fenced (a run is going on, or was "
                                "interrupted: `rehost resume` it first)")
    rows = {r["name"]: r for r in ctx.journal.vm_rows()}
    out: dict[str, Any] = {}
    for name in names:
        row = next((r for r in rows.values()
                    if name in (r["name"], r["uuid"], r["vm"].get("label"))), None)
        if row is None:
            from rehost.core.errors import ConfigError

            raise ConfigError(f"--vm {name!r} is not a VM of this campaign's journal")
        vm = VM.from_dict(row["vm"])
        if row["status"] in ("done", "rolled_back", "pending"):
            out[vm.label or vm.name] = f"{row['status']}: nothing to roll back"
            continue
        ctx.journal.record(vm, "rollback", "start")
        ctx.hooks.stage_start("rollback", vm, ctx)
        try:
            result = ctx.hooks.rollback_vm(vm, ctx)
            if result is None:
                raise PluginError("no plugin rolls VMs back (rehost_rollback_vm)")
        except Exception as exc:
            ctx.journal.record(vm, "rollback", "error", {"error": str(exc)})
            ctx.journal.set_status(vm.name, "failed", f"rollback: {exc}")
            ctx.hooks.stage_error("rollback", vm, ctx, exc)
            out[vm.label or vm.name] = f"rollback failed: {exc}"
            continue
        vm.facts["rollback"] = result
        ctx.journal.record(vm, "rollback", "finish", result)
        ctx.journal.set_status(vm.name, "rolled_back")
        ctx.hooks.stage_finish("rollback", vm, ctx, result)
        ctx.hooks.notify(vm, ctx, "downtime_end")
        out[vm.label or vm.name] = result
    write_report(ctx)
    return out
