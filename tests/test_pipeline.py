"""The engine in-process: the exact order of hook events for a VM through every stage (the
golden test), a failing stage, a stage nobody performs, resume after a crash, and a critical
preflight. No lab: inline plugins perform the stages."""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from rehost.core.campaign import Campaign
from rehost.core.config import parse_config
from rehost.core.journal import Journal
from rehost.core.model import VM, VM_STAGES, Finding, StrategyRecord
from rehost.core.pipeline import PreflightFailed, run_campaign
from rehost.core.plugins import PluginManager, build_plugin_manager
from rehost.core.strategies import KINDS
from rehost.core.types import FenceResult
from rehost.hooks import hookimpl

SITE = """
[campaign]
name = "golden"
state_dir = "state"
report_dir = "reports"

[hosts.old]
address = "198.18.250.10"
role = "source"

[hosts.new]
address = "198.18.250.11"
role = "target"

[control]
strategy = "test-control"

[storage]
strategy = "test-storage"

[allocation]
strategy = "test-fence"

[report]
formats = []
"""


#: A valid result of each stage, as the typed contract wants it (rehost.core.types).
RESULTS: dict[str, dict[str, Any]] = {
    "locate": {"host": "old"}, "backup_xml": {"xml": "domain.xml", "disks": 0},
    "backup_disks": {"strategy": "test"}, "precopy": {"strategy": "test"},
    "power_off": {"how": "graceful"}, "undefine": {"undefined": True},
    "await_undeployed": {}, "preserve_disks": {"disks": []}, "deploy": {"host": "new"},
    "power_off_new": {}, "transfer": {"disks": []}, "remove_new_disks": {},
    "swap_disks": {"disks": []}, "start": {"host": "new"},
    "verify": {"ok": True, "host": "new", "method": "test", "disks": []},
    "cleanup": {"host": "old"},
}


def unused(kind: str) -> type:
    """A strategy of ``kind`` that is never asked anything (the test performs the stages)."""
    base = KINDS[kind]
    return type(f"Unused{kind.title()}", (base,),
                {m: lambda self, *a, **k: None for m in base.__abstractmethods__})


class Crash(BaseException):
    """Stands for the process dying in the middle of a stage (not an ordinary error)."""


class Performer:
    """Selects the VMs, performs every stage, fences and unfences; fails where told to."""

    def __init__(self, vms: list[str], *, fail: dict[tuple[str, str], BaseException] | None = None,
                 silent: set[str] | None = None, findings: list[Finding] | None = None,
                 kill_at: tuple[str, str] | None = None) -> None:
        self.vm_names = vms
        self.fail = fail or {}
        self.silent = silent or set()
        self.findings = findings or []
        self.kill_at = kill_at
        self.fence_calls = 0
        self.unfenced: list[dict[str, Any]] = []
        self.outcome: dict[str, str] | None = None

    def _do(self, stage: str, vm: VM) -> dict[str, Any] | None:
        if (vm.name, stage) == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        error = self.fail.get((vm.name, stage))
        if error is not None:
            raise error
        if stage in self.silent:
            return None
        return {**RESULTS[stage], "stage_done": stage, "vm": vm.name}

    # registries: Campaign checks the configured strategy names against them
    @hookimpl
    def rehost_control_planes(self) -> list[StrategyRecord]:
        return [StrategyRecord("control", "test-control", "performed by the test",
                               unused("control"))]

    @hookimpl
    def rehost_storage_strategies(self) -> list[StrategyRecord]:
        return [StrategyRecord("storage", "test-storage", "performed by the test",
                               unused("storage"))]

    @hookimpl
    def rehost_allocation_strategies(self) -> list[StrategyRecord]:
        return [StrategyRecord("allocation", "test-fence", "performed by the test",
                               unused("allocation"))]

    # the campaign
    @hookimpl
    def rehost_select_vms(self, ctx: Campaign) -> list[VM]:
        return [VM(name=f"ABQ_{n}", uuid=n, label=n) for n in self.vm_names]

    @hookimpl
    def rehost_preflight(self, ctx: Campaign) -> list[Finding]:
        return list(self.findings)

    @hookimpl
    def rehost_fence(self, ctx: Campaign) -> dict[str, Any]:
        self.fence_calls += 1
        return {"fenced": ["old"], "run": self.fence_calls}

    @hookimpl
    def rehost_unfence(self, ctx: Campaign, fenced: FenceResult) -> dict[str, Any]:
        self.unfenced.append({k: fenced.record(k) for k in ("fenced", "run")})
        return {"restored": fenced.record("fenced")}

    @hookimpl
    def rehost_campaign_finish(self, ctx: Campaign, outcome: dict[str, str]) -> None:
        self.outcome = dict(outcome)

    # every stage of a VM but notify (the notify built-in performs it)
    @hookimpl
    def rehost_vm_locate(self, vm: VM, ctx: Campaign) -> dict[str, Any] | None:
        vm.source_host = "old"
        return self._do("locate", vm)

    @hookimpl
    def rehost_vm_backup_xml(self, vm: VM, ctx: Campaign) -> dict[str, Any] | None:
        return self._do("backup_xml", vm)

    @hookimpl
    def rehost_vm_backup_disks(self, vm: VM, ctx: Campaign) -> dict[str, Any] | None:
        return self._do("backup_disks", vm)

    @hookimpl
    def rehost_vm_precopy(self, vm: VM, ctx: Campaign) -> dict[str, Any] | None:
        return self._do("precopy", vm)

    @hookimpl
    def rehost_vm_power_off(self, vm: VM, ctx: Campaign) -> dict[str, Any] | None:
        return self._do("power_off", vm)

    @hookimpl
    def rehost_vm_undefine(self, vm: VM, ctx: Campaign) -> dict[str, Any] | None:
        return self._do("undefine", vm)

    @hookimpl
    def rehost_vm_await_undeployed(self, vm: VM, ctx: Campaign) -> dict[str, Any] | None:
        return self._do("await_undeployed", vm)

    @hookimpl
    def rehost_vm_preserve_disks(self, vm: VM, ctx: Campaign) -> dict[str, Any] | None:
        return self._do("preserve_disks", vm)

    @hookimpl
    def rehost_vm_deploy(self, vm: VM, ctx: Campaign) -> dict[str, Any] | None:
        vm.target_host = "new"
        return self._do("deploy", vm)

    @hookimpl
    def rehost_vm_power_off_new(self, vm: VM, ctx: Campaign) -> dict[str, Any] | None:
        return self._do("power_off_new", vm)

    @hookimpl
    def rehost_vm_transfer(self, vm: VM, ctx: Campaign) -> dict[str, Any] | None:
        return self._do("transfer", vm)

    @hookimpl
    def rehost_vm_remove_new_disks(self, vm: VM, ctx: Campaign) -> dict[str, Any] | None:
        return self._do("remove_new_disks", vm)

    @hookimpl
    def rehost_vm_swap_disks(self, vm: VM, ctx: Campaign) -> dict[str, Any] | None:
        return self._do("swap_disks", vm)

    @hookimpl
    def rehost_vm_start(self, vm: VM, ctx: Campaign) -> dict[str, Any] | None:
        return self._do("start", vm)

    @hookimpl
    def rehost_vm_verify(self, vm: VM, ctx: Campaign) -> dict[str, Any] | None:
        return self._do("verify", vm)

    @hookimpl
    def rehost_vm_cleanup(self, vm: VM, ctx: Campaign) -> dict[str, Any] | None:
        return self._do("cleanup", vm)


class Recorder:
    """Every hook call, in order, as ``hook [stage|event] [vm]`` (pluggy's call monitoring:
    it sees each call once, whoever implements it). Stage errors are kept too."""

    def __init__(self, manager: PluginManager) -> None:
        self.calls: list[str] = []
        self.errors: list[tuple[str, str | None, BaseException]] = []
        manager.pm.add_hookcall_monitoring(self._before, lambda *a: None)

    def _before(self, hook_name: str, impls: Any, kwargs: Mapping[str, Any]) -> None:
        words = [hook_name.removeprefix("rehost_")]
        if "stage" in kwargs:
            words.append(kwargs["stage"])
        if "event" in kwargs:
            words.append(kwargs["event"])
        if kwargs.get("vm") is not None:
            words.append(kwargs["vm"].label)
        if hook_name == "rehost_stage_error":
            vm = kwargs["vm"]
            self.errors.append((kwargs["stage"], vm.label if vm else None, kwargs["error"]))
        self.calls.append(" ".join(words))

    def for_vm(self, label: str) -> list[str]:
        return [c for c in self.calls if c.endswith(f" {label}")]


def campaign(tmp_path: Path, performer: Performer) -> tuple[Campaign, Recorder]:
    """A campaign from a parsed site config, with only the notify built-in and the test's
    plugins."""
    cfg_path = tmp_path / "site.toml"
    cfg_path.write_text(SITE)
    cfg = parse_config(cfg_path.read_text(), str(cfg_path))
    manager = build_plugin_manager(builtins=["notify"], entry_points=False,
                                   extra=[(performer, "performer")])
    recorder = Recorder(manager)
    return Campaign(cfg, manager), recorder


def journal(tmp_path: Path) -> Journal:
    return Journal(tmp_path / "state")


# -- the golden order ------------------------------------------------------------------------

GOLDEN = [
    "configure",
    "stage_start preflight", "discover_hosts", "select_vms", "preflight",
    "stage_finish preflight",
    "stage_start fence", "fence", "stage_finish fence",
    "campaign_start",
    "stage_start locate web01", "vm_locate web01", "stage_finish locate web01",
    "stage_start backup_xml web01", "vm_backup_xml web01", "stage_finish backup_xml web01",
    "stage_start backup_disks web01", "vm_backup_disks web01",
    "stage_finish backup_disks web01",
    "stage_start precopy web01", "vm_precopy web01", "stage_finish precopy web01",
    "stage_start notify web01", "vm_notify web01", "notify downtime_start web01",
    "stage_finish notify web01",
    "stage_start power_off web01", "vm_power_off web01", "stage_finish power_off web01",
    "stage_start undefine web01", "vm_undefine web01", "stage_finish undefine web01",
    "stage_start await_undeployed web01", "vm_await_undeployed web01",
    "stage_finish await_undeployed web01",
    "stage_start preserve_disks web01", "vm_preserve_disks web01",
    "stage_finish preserve_disks web01",
    "stage_start deploy web01", "vm_deploy web01", "stage_finish deploy web01",
    "stage_start power_off_new web01", "vm_power_off_new web01",
    "stage_finish power_off_new web01",
    "stage_start transfer web01", "vm_transfer web01", "stage_finish transfer web01",
    "stage_start remove_new_disks web01", "vm_remove_new_disks web01",
    "stage_finish remove_new_disks web01",
    "stage_start swap_disks web01", "vm_swap_disks web01", "stage_finish swap_disks web01",
    "stage_start start web01", "vm_start web01", "stage_finish start web01",
    "notify downtime_end web01",
    "stage_start verify web01", "vm_verify web01", "stage_finish verify web01",
    "stage_start cleanup web01", "vm_cleanup web01", "stage_finish cleanup web01",
    "stage_start unfence", "unfence", "stage_finish unfence",
    "campaign_finish",
    "stage_start report", "report", "stage_finish report",
    "unconfigure",
]


def test_golden_order_of_one_vm_through_every_stage(tmp_path: Path) -> None:
    performer = Performer(["web01"])
    ctx, recorder = campaign(tmp_path, performer)
    try:
        outcome = run_campaign(ctx)
    finally:
        ctx.close()
    assert outcome == {"ABQ_web01": "done"}
    assert recorder.calls == GOLDEN
    assert performer.fence_calls == 1
    assert performer.unfenced == [{"fenced": ["old"], "run": 1}]
    assert performer.outcome == {"ABQ_web01": "done"}

    j = journal(tmp_path)
    try:
        [row] = j.vm_rows()
        assert (row["status"], row["stage"], row["error"]) == ("done", "cleanup", None)
        assert (row["vm"]["source_host"], row["vm"]["target_host"]) == ("old", "new")
        # every stage's result is journaled, in order, each started before it finished
        events = [(e.stage, e.event) for e in j.events("ABQ_web01")]
        assert events == [(s, ev) for s in VM_STAGES for ev in ("start", "finish")]
        finished = j.finished_stages("ABQ_web01")
        # the checked result: the declared fields, and the plugin's own facts kept
        assert finished["transfer"]["disks"] == []
        assert (finished["transfer"]["stage_done"], finished["transfer"]["vm"]) == (
            "transfer", "ABQ_web01")
        assert finished["notify"]["event"] == "downtime_start"
        assert j.get("unfenced") is True
    finally:
        j.close()


# -- failures --------------------------------------------------------------------------------


def test_a_failing_stage_stops_that_vm_and_the_others_go_on(tmp_path: Path) -> None:
    boom = RuntimeError("injected: the copy link broke")
    performer = Performer(["bad", "good"], fail={("ABQ_bad", "transfer"): boom})
    ctx, recorder = campaign(tmp_path, performer)
    try:
        outcome = run_campaign(ctx)
    finally:
        ctx.close()
    assert outcome == {"ABQ_bad": "failed", "ABQ_good": "done"}
    assert performer.outcome == outcome

    bad = recorder.for_vm("bad")
    assert bad[-4:] == ["stage_start transfer bad", "vm_transfer bad",
                        "stage_error transfer bad", "notify failed bad"]
    later = VM_STAGES[VM_STAGES.index("transfer") + 1:]
    assert not [c for c in bad if any(f" {s} " in f" {c} " for s in later)]
    assert "notify downtime_end bad" not in bad
    assert recorder.errors == [("transfer", "bad", boom)]

    good = recorder.for_vm("good")
    assert [c for c in good if c.startswith("vm_")] == [f"vm_{s} good" for s in VM_STAGES]
    # unfence still runs, after every VM
    assert recorder.calls.index("unfence") > recorder.calls.index("stage_finish cleanup good")
    assert performer.unfenced == [{"fenced": ["old"], "run": 1}]

    j = journal(tmp_path)
    try:
        rows = {r["vm"]["label"]: r for r in j.vm_rows()}
        assert rows["bad"]["status"] == "failed" and rows["bad"]["stage"] == "transfer"
        assert rows["bad"]["error"] == "transfer: injected: the copy link broke"
        assert rows["good"]["status"] == "done"
        [error] = [e for e in j.events("ABQ_bad") if e.event == "error"]
        assert error.stage == "transfer" and error.data["type"] == "RuntimeError"
        assert "kept under their backup names on the source" in error.data["safe_point"]
        assert error.data["done"] == list(VM_STAGES[:VM_STAGES.index("transfer")])
    finally:
        j.close()


def test_a_stage_nobody_performs_is_a_clear_error(tmp_path: Path) -> None:
    performer = Performer(["web01"], silent={"verify"})
    ctx, recorder = campaign(tmp_path, performer)
    try:
        outcome = run_campaign(ctx)
    finally:
        ctx.close()
    assert outcome == {"ABQ_web01": "failed"}
    [(stage, vm, error)] = recorder.errors
    assert (stage, vm) == ("verify", "web01")
    assert "no plugin performs stage 'verify'" in str(error)
    assert "vm_cleanup web01" not in recorder.calls
    j = journal(tmp_path)
    try:
        [row] = j.vm_rows()
        assert row["status"] == "failed" and row["stage"] == "verify"
        assert "no plugin performs stage 'verify' (rehost_vm_verify)" in row["error"]
    finally:
        j.close()


def test_a_critical_preflight_finding_stops_before_the_fence(tmp_path: Path) -> None:
    finding = Finding("critical", "capacity", "not enough room on the CentOS 6 hosts")
    performer = Performer(["web01"], findings=[Finding("warning", "friday", "it is Friday"),
                                               finding])
    ctx, recorder = campaign(tmp_path, performer)
    try:
        with pytest.raises(PreflightFailed) as err:
            run_campaign(ctx)
    finally:
        ctx.close()
    assert err.value.exit_code == 1
    assert "[capacity] not enough room on the CentOS 6 hosts" in str(err.value)
    assert "friday" not in str(err.value)
    assert performer.fence_calls == 0
    assert recorder.calls == ["configure", "stage_start preflight", "discover_hosts",
                              "select_vms", "preflight", "stage_error preflight", "unconfigure"]
    j = journal(tmp_path)
    try:
        assert j.get("fenced") is None
        assert j.vm_rows() == []
    finally:
        j.close()


# -- resume ----------------------------------------------------------------------------------


def test_resume_after_a_crash_mid_stage_reruns_only_the_unfinished_stage(
        tmp_path: Path) -> None:
    # the first run dies by SIGKILL in the middle of swap_disks: nothing runs after it, not
    # even the unfence (a forked child, so that the test's own process survives)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            ctx, _ = campaign(tmp_path, Performer(["web01"], kill_at=("ABQ_web01",
                                                                      "swap_disks")))
            run_campaign(ctx)
        finally:
            os._exit(3)  # never reached when the kill worked
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL

    j = journal(tmp_path)
    try:
        [row] = j.vm_rows()
        assert (row["status"], row["stage"]) == ("running", "swap_disks")
        assert {k: j.get("fenced")[k] for k in ("fenced", "run")} == {"fenced": ["old"],
                                                                      "run": 1}
        assert j.get("unfenced") is None
    finally:
        j.close()

    performer = Performer(["web01"])
    ctx, recorder = campaign(tmp_path, performer)
    try:
        outcome = run_campaign(ctx)
    finally:
        ctx.close()
    assert outcome == {"ABQ_web01": "done"}
    # still fenced from the first run: that fence is taken down, put up again before any
    # VM stage (the control plane may have lost it meanwhile), and put back at the end
    assert performer.fence_calls == 1
    assert recorder.calls.index("stage_start fence") < recorder.calls.index(
        "stage_start swap_disks web01")
    assert performer.unfenced[0] == {"fenced": ["old"], "run": 1}
    assert len(performer.unfenced) == 2
    rest = VM_STAGES[VM_STAGES.index("swap_disks"):]
    assert [c for c in recorder.for_vm("web01") if c.startswith("stage_start")] == [
        f"stage_start {s} web01" for s in rest]
    # what earlier stages learnt about the VM survives the crash
    j = journal(tmp_path)
    try:
        [row] = j.vm_rows()
        assert (row["status"], row["vm"]["source_host"], row["vm"]["target_host"]) == (
            "done", "old", "new")
        assert [e.stage for e in j.events("ABQ_web01") if e.event == "start"].count(
            "swap_disks") == 2
        assert j.get("unfenced") is True
    finally:
        j.close()


def test_an_interrupted_run_unfences_and_resume_fences_again(tmp_path: Path) -> None:
    performer = Performer(["a", "b"], fail={("ABQ_a", "deploy"): Crash("operator pressed ^C")})
    ctx, recorder = campaign(tmp_path, performer)
    try:
        with pytest.raises(Crash):
            run_campaign(ctx)
    finally:
        ctx.close()
    # not an ordinary stage failure: the run stops, b is not started, the rules are put back
    assert "stage_start locate b" not in recorder.calls
    assert performer.unfenced == [{"fenced": ["old"], "run": 1}]

    performer2 = Performer(["a", "b"])
    ctx, recorder = campaign(tmp_path, performer2)
    try:
        outcome = run_campaign(ctx)
    finally:
        ctx.close()
    assert outcome == {"ABQ_a": "done", "ABQ_b": "done"}
    assert performer2.fence_calls == 1  # unfenced at the end of the first run: fence again
    assert [c for c in recorder.for_vm("a") if c.startswith("vm_")] == [
        f"vm_{s} a" for s in VM_STAGES[VM_STAGES.index("deploy"):]]
    assert len([c for c in recorder.for_vm("b") if c.startswith("vm_")]) == len(VM_STAGES)


def test_resume_of_a_finished_campaign_runs_no_stage_again(tmp_path: Path) -> None:
    ctx, _ = campaign(tmp_path, Performer(["web01"]))
    try:
        run_campaign(ctx)
    finally:
        ctx.close()
    performer = Performer(["web01"])
    ctx, recorder = campaign(tmp_path, performer)
    try:
        assert run_campaign(ctx) == {"ABQ_web01": "done"}
    finally:
        ctx.close()
    assert [c for c in recorder.calls if c.startswith(("vm_", "notify"))] == []


class TwoHosts(Performer):
    """Four VMs, two on each of two source hosts; the transfer stage measures how many VMs of
    one host copy at once, and waits (bounded) for a VM of the other host to copy alongside."""

    def __init__(self) -> None:
        super().__init__(["a1", "a2", "b1", "b2"])
        import threading

        self.lock = threading.Lock()
        self.busy: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.together = threading.Barrier(2, timeout=20)

    @hookimpl
    def rehost_select_vms(self, ctx: Campaign) -> list[VM]:
        return [VM(name=f"ABQ_{n}", uuid=n, label=n, source_host=f"src-{n[0]}")
                for n in self.vm_names]

    @hookimpl
    def rehost_vm_locate(self, vm: VM, ctx: Campaign) -> dict[str, Any] | None:
        return self._do("locate", vm)

    @hookimpl(tryfirst=True)
    def rehost_vm_transfer(self, vm: VM, ctx: Campaign) -> dict[str, Any] | None:
        host = vm.source_host or ""
        with self.lock:
            self.busy[host] = self.busy.get(host, 0) + 1
            self.peak[host] = max(self.peak.get(host, 0), self.busy[host])
        try:
            self.together.wait()  # the other host's VM copies at the same time
        finally:
            with self.lock:
                self.busy[host] -= 1
        return {"disks": []}


def test_per_host_limit_keeps_one_copy_per_source_host_while_hosts_run_in_parallel(
        tmp_path: Path) -> None:
    performer = TwoHosts()
    ctx, _ = campaign(tmp_path, performer)
    ctx.config.campaign.parallel = 4
    ctx.config.campaign.per_host_limit = 1
    try:
        outcome = run_campaign(ctx)
    finally:
        ctx.close()
    assert outcome == {f"ABQ_{n}": "done" for n in ("a1", "a2", "b1", "b2")}
    assert performer.peak == {"src-a": 1, "src-b": 1}
    # one host's two VMs never overlap (the journal's times say so; which goes first is up to
    # the workers), while the two hosts' VMs copied together (the barrier let them through)
    j = Journal(tmp_path / "state")
    try:
        def when(vm: str, stage: str, event: str) -> float:
            return next(e.ts for e in j.events(f"ABQ_{vm}")
                        if e.stage == stage and e.event == event)

        for one, other in (("a1", "a2"), ("b1", "b2")):
            first, second = sorted((one, other), key=lambda n: when(n, "locate", "start"))
            assert when(second, "locate", "start") >= when(first, "cleanup", "finish")
    finally:
        j.close()


class OneTarget(Performer):
    """Three VMs from three source hosts, all deployed to the target "new": the transfer
    stage counts the copies into "new" at once."""

    def __init__(self) -> None:
        super().__init__(["a", "b", "c"])
        import threading

        self.lock = threading.Lock()
        self.busy = 0
        self.peak = 0
        self.started = threading.Event()

    @hookimpl
    def rehost_select_vms(self, ctx: Campaign) -> list[VM]:
        return [VM(name=f"ABQ_{n}", uuid=n, label=n, source_host=f"src-{n}")
                for n in self.vm_names]

    @hookimpl(tryfirst=True)
    def rehost_vm_transfer(self, vm: VM, ctx: Campaign) -> dict[str, Any] | None:
        assert vm.target_host == "new"
        with self.lock:
            self.busy += 1
            self.peak = max(self.peak, self.busy)
        try:
            # the first copy lasts until another VM is at its transfer, or 2 s: long enough
            # for a second copy to overlap it if nothing keeps them apart
            self.started.wait(2) if self.busy == 1 else self.started.set()
        finally:
            with self.lock:
                self.busy -= 1
        return {"disks": []}


@pytest.mark.parametrize(("limit", "peak"), [(1, 1), (0, 2)])
def test_per_target_limit_keeps_the_copies_into_one_target_apart(
        tmp_path: Path, limit: int, peak: int) -> None:
    performer = OneTarget()
    ctx, _ = campaign(tmp_path, performer)
    ctx.config.campaign.parallel = 3
    ctx.config.campaign.per_target_limit = limit
    try:
        outcome = run_campaign(ctx)
    finally:
        ctx.close()
    assert outcome == {f"ABQ_{n}": "done" for n in "abc"}
    assert performer.peak >= peak if limit == 0 else performer.peak == peak


def test_plan_and_confirm_configure_the_plugins_first_and_unconfigure_them_after(
        tmp_path: Path) -> None:
    """A plugin set up in rehost_configure (a notifier's connection, say) is ready for every
    command that works on the campaign, not only run."""
    from rehost.core.pipeline import confirm, plan

    performer = Performer(["web01"])
    ctx, recorder = campaign(tmp_path, performer)
    try:
        found = plan(ctx)
        assert [v.label for v in found.vms] == ["web01"]
        assert recorder.calls == ["configure", "discover_hosts", "select_vms", "preflight",
                                  "unconfigure"]
        recorder.calls.clear()
        assert confirm(ctx) == {}
        assert recorder.calls[0] == "configure" and recorder.calls[-1] == "unconfigure"
        assert "report" in recorder.calls
    finally:
        ctx.close()


# -- confirm, and Ctrl-C ---------------------------------------------------------------------


def test_a_cleanup_failing_in_confirm_is_journaled_and_the_others_go_on(tmp_path: Path) -> None:
    from rehost.core.pipeline import confirm

    ctx, _ = campaign(tmp_path, Performer(["a", "b"]))
    try:
        assert run_campaign(ctx) == {"ABQ_a": "done", "ABQ_b": "done"}
    finally:
        ctx.close()

    boom = RuntimeError("rm: cannot remove 'disk_BACK': Read-only file system")
    ctx, recorder = campaign(tmp_path, Performer(["a", "b"], fail={("ABQ_a", "cleanup"): boom}))
    try:
        out = confirm(ctx)
    finally:
        ctx.close()
    assert out["a"] == f"cleanup failed: {boom}"
    assert out["b"] == {"deleted": []}
    # a's failure is an error event of its stage; b was still cleaned up; the report written
    assert recorder.errors == [("cleanup", "a", boom)]
    assert "vm_cleanup b" in recorder.calls
    assert recorder.calls.index("stage_start report") > recorder.calls.index("vm_cleanup b")
    j = journal(tmp_path)
    try:
        rows = {r["vm"]["label"]: r for r in j.vm_rows()}
        assert (rows["a"]["status"], rows["a"]["error"]) == ("failed", f"cleanup: {boom}")
        assert rows["b"]["status"] == "done"
        [error] = [e for e in j.events("ABQ_a") if e.event == "error"]
        assert error.stage == "cleanup" and error.data["error"] == str(boom)
        assert [e.event for e in j.events(None) if e.stage == "report"][-2:] == [
            "start", "finish"]
    finally:
        j.close()


class StopsMidCopy(Performer):
    """Six VMs; the first three copy together; while they copy, the operator presses Ctrl-C
    twice. The copies then end as they would."""

    def __init__(self) -> None:
        super().__init__([f"vm{i}" for i in range(6)])
        import threading

        self.together = threading.Barrier(3, timeout=30)

    @hookimpl(tryfirst=True)
    def rehost_vm_transfer(self, vm: VM, ctx: Campaign) -> dict[str, Any] | None:
        if self.together.wait() == 0:  # one of the three presses Ctrl-C, twice
            os.kill(os.getpid(), signal.SIGINT)
            assert ctx.stopping.wait(30), "the first Ctrl-C did not stop the campaign"
            os.kill(os.getpid(), signal.SIGINT)
        assert ctx.stopping.wait(30)
        return {"disks": [], "vm": vm.name}


def test_ctrl_c_in_a_parallel_campaign_stops_in_order(tmp_path: Path) -> None:
    performer = StopsMidCopy()
    ctx, recorder = campaign(tmp_path, performer)
    ctx.config.campaign.parallel = 3
    try:
        outcome = run_campaign(ctx)  # no KeyboardInterrupt comes out of it
        assert ctx.stopped_by == signal.SIGINT
    finally:
        ctx.close()
    assert outcome == {f"ABQ_vm{i}": "interrupted" for i in range(6)}
    assert performer.unfenced == [{"fenced": ["old"], "run": 1}]
    assert recorder.errors == []  # nothing failed: the running stages ended

    j = journal(tmp_path)
    try:
        rows = {r["vm"]["label"]: r for r in j.vm_rows()}
        started = {n for n, r in rows.items() if r["status"] != "pending"}
        assert len(started) == 3
        for name in started:
            assert rows[name]["status"] == "interrupted"
            assert rows[name]["error"] == ("remove_new_disks: not started, the campaign was "
                                           "stopped")
            assert "transfer" in j.finished_stages(f"ABQ_{name}")
        for name in set(rows) - started:
            assert rows[name]["status"] == "pending" and j.events(f"ABQ_{name}") == []
        # the unfence and the report came after the last stage of every VM
        last_vm_event = max(e.ts for r in rows for e in j.events(f"ABQ_{r}"))
        unfence = next(e for e in j.events(None) if e.stage == "unfence" and e.event == "start")
        assert unfence.ts >= last_vm_event
        assert j.get("unfenced") is True
        assert [e.event for e in j.events(None) if e.stage == "report"] == ["start", "finish"]
    finally:
        j.close()

    # resume moves every VM, the stopped ones from where they stopped
    performer2 = Performer([f"vm{i}" for i in range(6)])
    ctx, recorder = campaign(tmp_path, performer2)
    try:
        assert run_campaign(ctx) == {f"ABQ_vm{i}": "done" for i in range(6)}
    finally:
        ctx.close()
    for name in started:
        assert next(c for c in recorder.for_vm(name) if c.startswith("vm_")) == \
            f"vm_remove_new_disks {name}"


class BadVerify(Performer):
    """A storage strategy's verify that returns the wrong shape: ``ok`` is not a yes/no."""

    @hookimpl(tryfirst=True)
    def rehost_vm_verify(self, vm: VM, ctx: Campaign) -> dict[str, Any] | None:
        return {"ok": "probably", "host": "new", "method": "eyeballed", "disks": []}


def test_a_result_of_the_wrong_shape_names_the_plugin_the_stage_and_the_field(
        tmp_path: Path) -> None:
    ctx, recorder = campaign(tmp_path, BadVerify(["web01"]))
    try:
        outcome = run_campaign(ctx)
    finally:
        ctx.close()
    assert outcome == {"ABQ_web01": "failed"}
    [(stage, _, error)] = recorder.errors
    assert stage == "verify"
    assert str(error).startswith("plugin 'performer' returned a bad VerifyResult for stage "
                                 "'verify': field 'ok': Input should be a valid boolean")
    # nothing after it ran: cleanup never deletes the backups of a VM not verified
    assert "vm_cleanup web01" not in recorder.calls
    j = journal(tmp_path)
    try:
        assert "verify" not in j.finished_stages("ABQ_web01")
    finally:
        j.close()


# -- a fault of a host holds the others; auto rollback ---------------------------------------


def test_a_target_fault_holds_the_vms_not_yet_taken_down(tmp_path: Path) -> None:
    from rehost.core.errors import RemoteError

    full = RemoteError("c5-a", ["scp", "-p", "/var/lib/virt/a_BACK", "root@new:/var/lib/virt"],
                       "exited with 1", 1, "", "scp: /var/lib/virt/a_BACK: No space left on "
                       "device")
    performer = Performer(["a", "b", "c"], fail={("ABQ_a", "transfer"): full})
    ctx, recorder = campaign(tmp_path, performer)
    try:
        outcome = run_campaign(ctx)
        assert ctx.fault is not None and "a command on c5-a failed" in ctx.fault
    finally:
        ctx.close()
    # one outage, not three: b and c were never powered off
    assert outcome == {"ABQ_a": "failed", "ABQ_b": "held", "ABQ_c": "held"}
    for held in ("b", "c"):
        assert f"vm_power_off {held}" not in recorder.calls
        assert f"notify downtime_start {held}" not in recorder.calls
    assert performer.unfenced == [{"fenced": ["old"], "run": 1}]
    j = journal(tmp_path)
    try:
        rows = {r["vm"]["label"]: r for r in j.vm_rows()}
        assert rows["b"]["status"] == "held"
        assert rows["b"]["error"].startswith("held before locate: a command on c5-a failed "
                                             "while moving a (transfer)")
    finally:
        j.close()

    # once the operator fixed it, resume moves the held ones
    ctx, _ = campaign(tmp_path, Performer(["a", "b", "c"]))
    try:
        assert run_campaign(ctx) == {"ABQ_a": "done", "ABQ_b": "done", "ABQ_c": "done"}
    finally:
        ctx.close()


def test_a_vm_that_will_not_start_holds_no_one(tmp_path: Path) -> None:
    from rehost.core.errors import PreconditionError

    stuck = PreconditionError("ABQ_a is shut off on new after start")
    performer = Performer(["a", "b"], fail={("ABQ_a", "start"): stuck})
    ctx, _ = campaign(tmp_path, performer)
    try:
        assert run_campaign(ctx) == {"ABQ_a": "failed", "ABQ_b": "done"}
        assert ctx.fault is None
    finally:
        ctx.close()


class RollsBack(Performer):
    @hookimpl
    def rehost_rollback_vm(self, vm: VM, ctx: Campaign) -> dict[str, Any]:
        vm.target_host = None
        return {"host": "old", "steps": ["put back by the test"]}


def test_auto_rollback_puts_a_vm_that_fails_start_back(tmp_path: Path) -> None:
    from rehost.core.errors import PreconditionError

    stuck = PreconditionError("ABQ_a is shut off on new after start")
    performer = RollsBack(["a", "b"], fail={("ABQ_a", "start"): stuck})
    ctx, recorder = campaign(tmp_path, performer)
    ctx.config.campaign.auto_rollback = True
    try:
        assert run_campaign(ctx) == {"ABQ_a": "rolled_back", "ABQ_b": "done"}
    finally:
        ctx.close()
    a = recorder.for_vm("a")
    assert a[a.index("stage_error start a"):] == [
        "stage_error start a", "notify failed a", "stage_start rollback a", "rollback_vm a",
        "stage_finish rollback a", "notify downtime_end a"]
    j = journal(tmp_path)
    try:
        rows = {r["vm"]["label"]: r for r in j.vm_rows()}
        assert (rows["a"]["status"], rows["a"]["error"]) == (
            "rolled_back", "start failed: rolled back automatically")
        assert rows["a"]["vm"]["target_host"] is None
    finally:
        j.close()
