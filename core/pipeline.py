"""The engine: the campaign stages and the per-VM protocol, in order, as hook events.

The core knows the stages and their order and nothing about any one strategy: each stage is a
hook (``rehost_vm_<stage>``) that a plugin performs. Every stage is journaled before and after
it runs; a stage the journal shows finished is skipped on resume, and every stage is written to
be safe to run twice. A VM whose stage fails stops there (a safe point: no later, destructive
stage runs) with the reason and what was done recorded; the other VMs go on.
"""

from __future__ import annotations

import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from types import FrameType
from typing import Any

from rehost.core.campaign import Campaign
from rehost.core.errors import (
    ConfigError,
    ControlPlaneError,
    DatastoreFull,
    HypervisorError,
    PluginError,
    RehostError,
    RemoteError,
)
from rehost.core.model import VM, VM_STAGES, Finding
from rehost.core.types import FenceResult, Result, VerifyResult


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
    control: str = ""

    @property
    def critical(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "critical"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "vms": [{"name": v.name, "uuid": v.uuid, "label": v.label,
                     "source_host": v.source_host, "disks": [d.to_dict() for d in v.disks]}
                    for v in self.vms],
            "findings": [f.to_dict() for f in self.findings],
            "control": self.control,
            "storage": self.storage,
            "allocation": self.allocation,
            "targets": self.targets,
            "ok": not self.critical,
        }


#: What is true of a VM's data once a stage has finished: told to the operator when a VM stops.
SAFE_POINTS: dict[str, str] = {
    "locate": "nothing was changed; the VM runs on its source host",
    "backup_xml": "nothing was changed; its domain XML is saved in the state directory",
    "backup_disks": "nothing was changed; its disks are backed up (or no backup is configured)",
    "precopy": "nothing was changed; its disks may be staged on the target host",
    "notify": "nothing was changed; its users were told the downtime starts",
    "power_off": "the VM is powered off on its source host, its disks untouched",
    "undefine": "the domain is undefined on the source host (XML saved); disks untouched",
    "await_undeployed": "the control plane shows the VM undeployed; its disks are untouched "
                        "on the source host",
    "preserve_disks": "the user's disks are kept under their backup names on the source host",
    "deploy": "the VM is defined on a target host with new disks; the user's disks are kept "
              "under their backup names on the source host",
    "power_off_new": "the new VM is off; the user's disks are kept under their backup names on "
                     "the source host",
    "transfer": "the user's disks are kept under their backup names on the source and the "
                "target host",
    "remove_new_disks": "the new disks are removed; the user's disks are kept under their "
                        "backup names on the source and the target host",
    "swap_disks": "the user's disks are in place on the target host (their backups are still "
                  "on the source host)",
    "start": "the VM runs on the target host with the user's disks",
    "verify": "verified on the target host; the backups are kept on the source host",
    "cleanup": "done",
}


def safe_point(done: list[str]) -> str:
    return SAFE_POINTS.get(done[-1], "nothing was changed") if done else "nothing was changed"


class StageFailed(RehostError):
    """A stage failed; it is journaled, the VM's status says so, observers were told."""

    def __init__(self, stage: str, error: BaseException) -> None:
        self.stage = stage
        self.error = error
        super().__init__(f"{stage}: {error}")


# -- the one journaled-stage runner ------------------------------------------------------------


def run_stage(ctx: Campaign, vm: VM | None, stage: str, perform: Callable[[], Any],
              done: list[str] | None = None) -> Any:
    """Run one stage of a VM (or of the campaign, ``vm=None``) and journal it: ``start``,
    then ``finish`` with the checked result, or ``error`` with the reason and the safe point.

    A failure is journaled as an error of its stage; a VM's status becomes ``failed`` (or
    ``interrupted``, when the campaign is stopping or the process is being interrupted:
    ``resume`` runs the stage again), observers are told (``rehost_stage_error``), and
    :class:`StageFailed` is raised (for a VM) or the error itself (for the campaign).
    """
    done = done or []
    ctx.journal.record(vm, stage, "start")
    ctx.hooks.stage_start(stage, vm, ctx)
    try:
        result = perform()
    except BaseException as exc:
        _journal_failure(ctx, vm, stage, exc, done)
        if vm is None or not isinstance(exc, Exception):
            raise
        raise StageFailed(stage, exc) from exc
    if vm is not None and isinstance(result, Result):
        vm.facts[stage] = result
    # a stage that did not apply is journaled (and reported) as skipped, never as work done
    skipped = isinstance(result, Result) and result.skipped
    ctx.journal.record(vm, stage, "skip" if skipped else "finish", _journal_form(result))
    ctx.hooks.stage_finish(stage, vm, ctx, result)
    return result


def _journal_form(result: Any) -> Any:
    if isinstance(result, Result):
        return result.model_dump(mode="json")
    return result.to_dict() if hasattr(result, "to_dict") else result


def _journal_failure(ctx: Campaign, vm: VM | None, stage: str, exc: BaseException,
                     done: list[str]) -> None:
    # a KeyboardInterrupt, or a command that died of the campaign's own Ctrl-C/SIGTERM
    interrupted = not isinstance(exc, Exception) or ctx.stopping.is_set()
    note = safe_point(done)
    if interrupted:
        data: dict[str, Any] = {"error": f"interrupted ({type(exc).__name__})",
                                "interrupted": True, "safe_point": note, "done": done}
        if isinstance(exc, Exception):
            exc.interrupted = True  # type: ignore[attr-defined]
    else:
        data = {"error": str(exc), "type": type(exc).__name__, "safe_point": note,
                "done": done, "traceback": traceback.format_exc(limit=6)}
    ctx.journal.record(vm, stage, "error", data)
    if vm is not None:
        if interrupted:
            ctx.journal.set_status(vm.name, "interrupted", f"{stage}: interrupted")
        else:
            ctx.journal.set_status(vm.name, "failed", f"{stage}: {exc}")
            ctx.log.error("{}: stage {} failed: {} — {}", vm.label or vm.name, stage, exc, note)
    ctx.hooks.stage_error(stage, vm, ctx, exc)


# -- the campaign ------------------------------------------------------------------------------


def select_vms(ctx: Campaign) -> list[VM]:
    vms = ctx.hooks.select_vms(ctx)
    if vms is None:
        raise PluginError("no plugin selects the VMs of the campaign (rehost_select_vms)")
    return vms


def make_plan(ctx: Campaign, only: list[str] | None = None) -> Plan:
    """Select the VMs and run the preflight (read-only)."""
    if ctx.discovered is None:
        ctx.discovered = ctx.hooks.discover_hosts(ctx)
    if not ctx.config.hosts:
        raise ConfigError("no hosts: add [hosts.NAME] tables to the site config, or let the "
                          "control plane discover them (abiquo: discover = true)")
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
            raise ConfigError(f"--vm {sorted(unknown)[0]!r} is not a VM of this campaign "
                              f"(known: {', '.join(v.label or v.name for v in vms)})")
        vms = [v for v in vms if wanted & {v.name, v.uuid, v.label}]
    ctx.vms = vms
    findings = kept + ctx.hooks.preflight(ctx)
    return Plan(vms, findings, ctx.config.storage.strategy, ctx.config.allocation.strategy,
                [h.name for h in ctx.config.targets()], ctx.config.control.strategy)


def run_campaign(ctx: Campaign, only: list[str] | None = None) -> dict[str, str]:
    """Preflight, fence, every VM's protocol, unfence, report. Returns each VM's outcome
    (``done``, ``failed``, ``interrupted``); resumes where the journal says an earlier run
    stopped.

    Ctrl-C or SIGTERM stop the campaign in order: no new stage starts, the stages running
    reach their end (or journal themselves interrupted), then the campaign unfences and writes
    its report. A second Ctrl-C is said to be noted; the workers are still waited for, so
    that nothing deploys after the unfence (SIGKILL is the way out, and ``resume`` then
    finishes the job)."""
    with configured(ctx), _stop_on_signals(ctx):
        plan = run_stage(ctx, None, "preflight", lambda: _preflight(ctx, only))
        if ctx.dry_run:
            return {v.name: "planned" for v in plan.vms}
        ctx.journal.set("downtime_accepted", True)  # a resume goes on without asking again
        for i, vm in enumerate(plan.vms):
            ctx.journal.add_vm(vm, i)
        saved = ctx.journal.get("fenced")
        if saved is not None and not ctx.journal.get("unfenced"):
            # an interrupted run left its fence up, or part of it (a kill mid-fence), or the
            # control plane lost it meanwhile: never deploy on trust. What the journal says
            # was changed is put back, then the fence goes up again and is checked
            ctx.log.info("the campaign was interrupted while fenced: the fence is taken down "
                         "and put up again before any VM moves")
            run_stage(ctx, None, "unfence",
                      partial(ctx.hooks.unfence, ctx, FenceResult.model_validate(saved)))
            ctx.journal.set("unfenced", True)
        fenced = run_stage(ctx, None, "fence", lambda: ctx.hooks.fence(ctx))
        ctx.note_fence(fenced)
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


@contextmanager
def _stop_on_signals(ctx: Campaign) -> Iterator[None]:
    """Ctrl-C and SIGTERM set ``ctx.stopping`` instead of raising where they land (only the
    main thread can have signal handlers; elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    count = 0

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal count
        count += 1
        name = signal.Signals(signum).name
        if count == 1:
            ctx.stopped_by = signal.Signals(signum)
            ctx.stopping.set()
            ctx.log.warning("{}: stopping — no new stage starts; the stages running now "
                            "finish, then the campaign unfences and writes its report "
                            "(`rehost resume` goes on later)", name)
        else:
            ctx.log.warning("{} again: still waiting for the running stages to end (each has"
                            " a time limit); the unfence must not run while a VM deploys. "
                            "SIGKILL stops at once, and `rehost resume` repairs that", name)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _finish_campaign(ctx: Campaign, fenced: FenceResult, outcome: dict[str, str]) -> None:
    """Unfence, tell the plugins the campaign finished, write the report. A failed unfence
    does not hide the VMs' outcome: it is noted (``ctx.unfence_error``, said by the command
    with the outcome) and the rules stay in the journal for ``resume`` to put back."""
    errors: list[BaseException] = []
    try:
        run_stage(ctx, None, "unfence", lambda: ctx.hooks.unfence(ctx, fenced))
        ctx.journal.set("unfenced", True)
    except Exception as exc:
        ctx.log.error("unfence failed: {}; the rules changed at fence are in the journal "
                      "(`rehost resume` tries again)", exc)
        ctx.unfence_error = str(exc)
        if not outcome:
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
    started = time.monotonic()
    with _timed_hooks(ctx) as spent:
        plan = make_plan(ctx, only)
    total = time.monotonic() - started
    # what dominated: -v shows it (each plugin's checks; the preflight plugin adds its own)
    ctx.log.info("preflight in {:.2f} s: {}", total,
                 ", ".join(f"{what} {secs:.2f} s" for what, secs in
                           sorted(spent.items(), key=lambda kv: -kv[1])) or "no hooks")
    if plan.critical:
        raise PreflightFailed(plan.findings)
    return plan


#: the hooks of the preflight whose time ``-v`` shows; the checks plugin by plugin
_PREFLIGHT_HOOKS = ("rehost_discover_hosts", "rehost_select_vms")


@contextmanager
def _timed_hooks(ctx: Campaign) -> Iterator[dict[str, float]]:
    """Seconds spent in discovering hosts, selecting the VMs, and in each plugin's
    ``rehost_preflight``, while the block runs."""
    spent: dict[str, float] = {}
    pm = ctx.manager.pm
    starts: dict[str, float] = {}

    def before(name: str, impls: Any, kwargs: Any) -> None:
        if name in _PREFLIGHT_HOOKS:
            starts[name] = time.monotonic()

    def after(outcome: Any, name: str, impls: Any, kwargs: Any) -> None:
        if name in starts:
            what = name.removeprefix("rehost_").replace("_", " ")
            spent[what] = spent.get(what, 0.0) + time.monotonic() - starts.pop(name)

    def timed(plugin: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            began = time.monotonic()
            try:
                return function(*args)
            finally:
                key = f"checks of {plugin}"
                spent[key] = spent.get(key, 0.0) + time.monotonic() - began
        return call

    undo = pm.add_hookcall_monitoring(before, after)
    impls = pm.hook.rehost_preflight.get_hookimpls()
    originals = [impl.function for impl in impls]
    for impl in impls:
        setattr(impl, "function", timed(impl.plugin_name, impl.function))  # noqa: B010
    try:
        yield spent
    finally:
        for impl, original in zip(impls, originals, strict=True):
            setattr(impl, "function", original)  # noqa: B010
        undo()


def write_report(ctx: Campaign) -> list[str]:
    outdir = ctx.config.report_dir
    outdir.mkdir(parents=True, exist_ok=True)
    paths: list[str] = run_stage(
        ctx, None, "report",
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
    # leaving the pool waits for every worker: a queued VM sees ctx.stopping at its first
    # stage and returns at once, a running one at its next stage
    with ThreadPoolExecutor(max_workers=ctx.config.campaign.parallel,
                            thread_name_prefix="vm") as pool:
        futures = {vm.name: pool.submit(one, vm) for vm in ordered}
        for vm in vms:
            outcome[vm.name] = futures[vm.name].result()
    return outcome


# -- one VM ------------------------------------------------------------------------------------


def run_vm(ctx: Campaign, vm: VM) -> str:
    """Run the per-VM protocol; returns ``done``, ``failed`` or ``interrupted``. Never raises
    for a stage failure: the error is journaled, observers are told, and the VM stops at a
    safe point."""
    saved = ctx.journal.load_vm(vm.name)
    if saved is not None:
        vm.__dict__.update(saved.__dict__)
    finished = ctx.journal.finished_stages(vm.name)
    done: list[str] = []
    for stage in VM_STAGES:
        if stage in finished:
            done.append(stage)
            continue
        if ctx.stopping.is_set():
            if done:  # part-way: say where it waits (no stage started, nothing to journal)
                ctx.journal.set_status(vm.name, "interrupted",
                                       f"{stage}: not started, the campaign was stopped")
            return "interrupted"
        if ctx.fault is not None and stage in BEFORE_POWER_OFF:
            # a host or the control plane failed another VM: this one stays up, untouched
            # (not even looked at: the fault may make its checks fail too)
            ctx.journal.set_status(vm.name, "held", f"held before {stage}: {ctx.fault}")
            ctx.log.warning("{}: not taken down: {}", vm.label or vm.name, ctx.fault)
            return "held"
        try:
            run_stage(ctx, vm, stage, partial(_perform, ctx, vm, stage), done)
        except StageFailed as failed:
            if getattr(failed.error, "interrupted", False):
                return "interrupted"
            _note_fault(ctx, vm, stage, failed.error)
            if stage in AUTO_ROLLBACK_STAGES and ctx.config.campaign.auto_rollback:
                return _auto_rollback(ctx, vm, [*done, stage])
            return "failed"
        done.append(stage)
    ctx.journal.set_status(vm.name, "done")
    return "done"


#: a VM that fails here runs on the target no more: with ``campaign.auto_rollback`` it goes
#: back to its source host at once
AUTO_ROLLBACK_STAGES = ("start", "verify")
#: the stages of a VM that change nothing yet: a VM that has not gone past them can be held
BEFORE_POWER_OFF = tuple(VM_STAGES[:VM_STAGES.index("power_off")])


def _auto_rollback(ctx: Campaign, vm: VM, done: list[str]) -> str:
    ctx.log.warning("{}: rolling back to {} (campaign.auto_rollback)", vm.label or vm.name,
                    vm.source_host)
    try:
        run_stage(ctx, vm, "rollback", partial(ctx.hooks.rollback_vm, vm, ctx), done)
    except StageFailed:
        return "failed"
    ctx.journal.set_status(vm.name, "rolled_back", f"{done[-1]} failed: rolled back "
                                                   "automatically")
    return "rolled_back"


def _note_fault(ctx: Campaign, vm: VM, stage: str, error: BaseException) -> None:
    """A failure that is a host's or the control plane's, not this VM's own, holds every VM
    not yet taken down (``campaign.hold_on_fault``): one outage, not one per VM."""
    if not ctx.config.campaign.hold_on_fault or ctx.fault is not None:
        return
    status = getattr(error, "status", None)
    if isinstance(error, DatastoreFull):
        what = f"the datastore of {error.host} is full"
    elif isinstance(error, RemoteError):
        what = f"a command on {error.host} failed"
    elif isinstance(error, ControlPlaneError) and (status is None or status >= 500):
        what = "the control plane failed"
    elif isinstance(error, HypervisorError) and stage not in AUTO_ROLLBACK_STAGES:
        what = "libvirt failed"
    elif stage == "deploy":
        what = "the deploy went wrong"
    else:
        return  # this VM's own trouble (it does not start, a check refused it)
    ctx.fault = f"{what} while moving {vm.label or vm.name} ({stage}): fix it, then " \
                "`rehost resume`"
    ctx.log.error("holding the VMs not yet powered off: {}", ctx.fault)


def _perform(ctx: Campaign, vm: VM, stage: str, **extra: Any) -> Result:
    if stage == "cleanup" and "delete" not in extra:
        extra["delete"] = ctx.config.campaign.delete_backups
    try:
        if stage == "transfer" and ctx.config.campaign.per_target_limit > 0:
            with _target_slot(ctx, vm.target_host or ""):
                return ctx.hooks.vm_stage(stage, vm, ctx, **extra)
        return ctx.hooks.vm_stage(stage, vm, ctx, **extra)
    except RemoteError as exc:
        if stage != "transfer" or isinstance(exc, DatastoreFull):
            raise
        full = _datastore_full(ctx, vm, exc)
        if full is None:
            raise
        raise full from exc


_target_slots: dict[tuple[int, str], threading.BoundedSemaphore] = {}
_target_slots_lock = threading.Lock()


@contextmanager
def _target_slot(ctx: Campaign, host: str) -> Iterator[None]:
    """One of ``campaign.per_target_limit`` copies into ``host`` at once; a VM waits for its
    slot before its copy starts (its downtime goes on meanwhile, so the wait is logged)."""
    with _target_slots_lock:
        slot = _target_slots.setdefault(
            (id(ctx), host), threading.BoundedSemaphore(ctx.config.campaign.per_target_limit))
    if not slot.acquire(blocking=False):
        ctx.log.info("{}: waiting for a copy slot on {} (campaign.per_target_limit = {})",
                     host, host, ctx.config.campaign.per_target_limit)
        slot.acquire()
    try:
        yield
    finally:
        slot.release()


def _datastore_full(ctx: Campaign, vm: VM, cause: RemoteError) -> DatastoreFull | None:
    """A failed copy, explained when the target's datastore has no room for the VM's disks
    (each copy tool words it its own way, some not at all: scp's SFTP says "Failure")."""
    target = vm.target_host
    if not target:
        return None
    try:
        facts = ctx.facts(target, refresh=True)
        needed = sum(ctx.storage.space_needed(ctx, vm, d) for d in vm.file_disks())
    except Exception as exc:  # the diagnosis must not hide the copy's own error
        ctx.log.debug("{}: could not look at the datastore of {}: {}", vm.name, target, exc)
        return None
    free = facts.datastore_free_bytes
    if free is None or free >= needed:
        return None
    return DatastoreFull(target, facts.datastore or ctx.host(target).datastore, free, needed,
                         cause)


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


def _journal_vm(ctx: Campaign, name: str) -> tuple[VM, dict[str, Any]]:
    row = next((r for r in ctx.journal.vm_rows()
                if name in (r["name"], r["uuid"], r["vm"].get("label"))), None)
    if row is None:
        raise ConfigError(f"--vm {name!r} is not a VM of this campaign's journal")
    return VM.from_dict(row["vm"]), row


def confirm(ctx: Campaign, only: list[str] | None = None) -> dict[str, Any]:
    """Delete the backups of verified VMs (the ``cleanup`` stage, run again with
    ``delete``). VMs that did not pass ``verify`` keep theirs. A cleanup that fails is
    journaled as the VM's error; the other VMs go on, and the report is written."""
    with configured(ctx):
        out: dict[str, Any] = {}
        try:
            for row in ctx.journal.vm_rows():
                vm = VM.from_dict(row["vm"])
                if only and not set(only) & {vm.name, vm.uuid, vm.label}:
                    continue
                verified = vm.fact(VerifyResult)
                if not (verified and verified.ok):
                    out[vm.label or vm.name] = "not verified: backups kept"
                    continue
                try:
                    result = run_stage(ctx, vm, "cleanup",
                                       partial(_perform, ctx, vm, "cleanup", delete=True),
                                       [s for s in VM_STAGES if s != "cleanup"])
                except StageFailed as failed:
                    out[vm.label or vm.name] = f"cleanup failed: {failed.error}"
                    continue
                ctx.journal.set_status(vm.name, "done")
                out[vm.label or vm.name] = {"deleted": result.deleted}
        finally:
            write_report(ctx)
        return out


def rollback(ctx: Campaign, names: list[str]) -> dict[str, Any]:
    """Put VMs that stopped part-way back on their source hosts (the ``rollback`` stage)."""
    with configured(ctx):
        todo = [_journal_vm(ctx, name) for name in names]
        saved = ctx.journal.get("fenced")
        if saved is not None and not ctx.journal.get("unfenced"):
            # an interrupted run left the fence up (no run is going on: this command holds
            # the campaign's lock). The VM goes back where the fence would keep it out, so
            # the fence comes down first; `rehost resume` puts it up again.
            ctx.log.warning("the campaign was interrupted while fenced: unfencing before the "
                            "rollback (`rehost resume` fences again)")
            run_stage(ctx, None, "unfence",
                      partial(ctx.hooks.unfence, ctx, FenceResult.model_validate(saved)))
            ctx.journal.set("unfenced", True)
        out: dict[str, Any] = {}
        try:
            for vm, row in todo:
                if row["status"] in ("done", "rolled_back", "pending"):
                    out[vm.label or vm.name] = f"{row['status']}: nothing to roll back"
                    continue
                done = [s for s in VM_STAGES if s in vm.facts]
                try:
                    result = run_stage(ctx, vm, "rollback",
                                       partial(ctx.hooks.rollback_vm, vm, ctx), done)
                except StageFailed as failed:
                    out[vm.label or vm.name] = f"rollback failed: {failed.error}"
                    continue
                ctx.journal.set_status(vm.name, "rolled_back")
                out[vm.label or vm.name] = result.model_dump(mode="json")
        finally:
            write_report(ctx)
        return out
