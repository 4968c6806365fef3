"""Notifications: the ``notify`` stage, and the default notifier, which logs.

The ``notify`` stage tells every notifier (``rehost_notify``) that a VM's downtime starts.
This plugin also tells them when the downtime ends (the ``start`` stage, or a ``rollback``,
finished) and when a VM stopped after a failure. A site plugin adds chat or ticket
notifications by implementing ``rehost_notify`` too (every notifier is called). Mail to each
VM's owners is the built-in ``mail`` plugin's (``rehost.plugins.mail``, ``[plugins.mail]``),
which watches the same moments itself.
"""

from __future__ import annotations

from rehost.api import VM, Context, NotifyResult, hookimpl

MESSAGES = {
    "backup_done": "its disks are backed up: the window starts",
    "downtime_start": "downtime starts: the VM is powered off to move to a new host",
    "downtime_end": "downtime ends: the VM runs again on {target}",
    "failed": "the move failed; the VM is kept safe and an operator will follow up",
}


def _tell(vm: VM, ctx: Context, event: str) -> None:
    try:
        ctx.hooks.notify(vm, ctx, event)
    except Exception as exc:  # a broken notifier must not hide or cause a failure
        ctx.log.error("{}: notify {} failed: {}", vm.label or vm.name, event, exc)


@hookimpl(trylast=True)
def rehost_vm_notify(vm: VM, ctx: Context) -> NotifyResult:
    ctx.hooks.notify(vm, ctx, "downtime_start")
    return NotifyResult(event="downtime_start")


@hookimpl
def rehost_stage_finish(stage: str, vm: VM | None, ctx: Context, result: object) -> None:
    if vm is not None and stage in ("start", "rollback"):
        _tell(vm, ctx, "downtime_end")


@hookimpl
def rehost_stage_error(stage: str, vm: VM | None, ctx: Context, error: BaseException) -> None:
    # an interrupt is not a failure: the VM goes on at resume
    if vm is not None and isinstance(error, Exception) and not getattr(error, "interrupted",
                                                                         False):
        _tell(vm, ctx, "failed")


@hookimpl(trylast=True)
def rehost_notify(vm: VM, ctx: Context, event: str) -> None:
    text = MESSAGES.get(event, event).format(target=vm.target_host or vm.source_host or "?")
    ctx.log.info("notify {} ({}): {}", vm.label or vm.name, vm.uuid, text)
