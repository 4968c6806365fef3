"""The progress display: each VM's stage, as a plugin that observes stage events."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from rehost.core.model import VM_STAGES
from rehost.hooks import hookimpl

if TYPE_CHECKING:
    from rehost.core.campaign import Campaign
    from rehost.core.model import VM


class ProgressDisplay:
    """Bars on a terminal; one line per stage event elsewhere (logs, CI)."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.live = self.console.is_terminal
        self.progress = Progress(
            TextColumn("{task.fields[label]:<20}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.description}"), TimeElapsedColumn(), console=self.console,
            transient=False,
        )
        self.tasks: dict[str, Any] = {}
        self._last_tenth: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def _task(self, vm: VM) -> Any:
        with self._lock:
            if vm.name not in self.tasks:
                # the clock of a VM starts with its first stage, not while it waits its turn
                self.tasks[vm.name] = self.progress.add_task(
                    "waiting", total=len(VM_STAGES), label=vm.label or vm.name, start=False)
            return self.tasks[vm.name]

    @hookimpl
    def rehost_campaign_start(self, ctx: Campaign, vms: list[VM]) -> None:
        if self.live:
            self.progress.start()
        for vm in vms:
            self._task(vm)

    @hookimpl
    def rehost_campaign_finish(self, ctx: Campaign, outcome: dict[str, str]) -> None:
        if self.live:
            self.progress.stop()

    @hookimpl
    def rehost_stage_start(self, stage: str, vm: VM | None, ctx: Campaign) -> None:
        if vm is None:
            if not self.live:
                self.console.print(f"[bold]{stage}[/bold] ...")
            return
        task = self._task(vm)
        self.progress.start_task(task)  # no-op once started
        self.progress.update(task, description=stage)
        if not self.live:
            self.console.print(f"  {vm.label or vm.name}: {stage} ...")

    @hookimpl
    def rehost_stage_finish(self, stage: str, vm: VM | None, ctx: Campaign, result: Any) -> None:
        if vm is None:
            return
        done = VM_STAGES.index(stage) + 1 if stage in VM_STAGES else 0
        self.progress.update(self._task(vm), completed=done,
                             description="done" if stage == VM_STAGES[-1] else stage)

    @hookimpl
    def rehost_transfer_progress(self, vm: VM, ctx: Campaign, path: str, done: int, total: int,
                                 seconds: float) -> None:
        rate = done / seconds / 2**20 if seconds > 0 else 0.0
        eta = (total - done) / (rate * 2**20) if rate > 0 else None
        text = (f"transfer {done / 2**20:.0f}/{total / 2**20:.0f} MiB, {rate:.0f} MiB/s"
                + (f", {eta:.0f} s left" if eta is not None and done < total else ""))
        self.progress.update(self._task(vm), description=text)
        if not self.live:
            # a line per tenth, not one every few seconds, in logs
            tenth = 10 * done // max(total, 1)
            key = (vm.name, path)
            if self._last_tenth.get(key) != tenth:
                self._last_tenth[key] = tenth
                self.console.print(f"  {vm.label or vm.name}: {text}")

    @hookimpl
    def rehost_stage_error(self, stage: str, vm: VM | None, ctx: Campaign,
                           error: BaseException) -> None:
        label = vm.label or vm.name if vm else "campaign"
        if vm is not None:
            self.progress.update(self._task(vm), description=f"[red]FAILED in {stage}[/red]")
        self.console.print(f"[red]{label}: {stage} failed:[/red] {error}")
