"""The ``backup_disks`` stage: before the window, while the VM still runs, each file disk is
copied to a backup location and verified (the issue-12 "back up VM disks" step of the manual
procedure). With no backup configured the stage is skipped and says so."""

from __future__ import annotations

from rehost.api import VM, BackupDisksResult, Context, hookimpl


@hookimpl(trylast=True)
def rehost_vm_backup_disks(vm: VM, ctx: Context) -> BackupDisksResult:
    return BackupDisksResult(skipped="no backup before the window is configured")
