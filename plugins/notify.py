"""The default notifier: it logs. A site plugin adds mail, chat or ticket notifications by
implementing ``rehost_notify`` too (every notifier is called)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rehost.hooks import hookimpl

if TYPE_CHECKING:
    from rehost.core.campaign import Campaign
    from rehost.core.model import VM

MESSAGES = {
    "downtime_start": "downtime starts: the VM is powered off to move to a new host",
    "downtime_end": "downtime ends: the VM runs again on {target}",
    "failed": "the move failed; the VM is kept safe and an operator will follow up",
}


@hookimpl(trylast=True)
def rehost_notify(vm: VM, ctx: Campaign, event: str) -> None:
    text = MESSAGES.get(event, event).format(target=vm.target_host or "?")
    ctx.log.info("notify {} ({}): {}", vm.label or vm.name, vm.uuid, text)
