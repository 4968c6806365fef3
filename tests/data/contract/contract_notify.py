"""``contract-notify``: a site notifier with settings of its own, written against
``rehost.api`` only. Each event is a line ``<event> <vm name>`` appended to the file
``[plugins.contract-notify] log`` names.

The tests copy this file to ``contract-notify.py``: the plugin is named after the file, and
its settings table after the plugin.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from rehost.api import VM, Context, PluginSettings, hookimpl


class NotifySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    log: str


@hookimpl
def rehost_plugin_settings() -> list[PluginSettings]:
    return [PluginSettings("contract-notify", NotifySettings,
                           help="log: the file each notification is appended to")]


@hookimpl
def rehost_notify(vm: VM, ctx: Context, event: str) -> None:
    settings: NotifySettings = ctx.settings("contract-notify")
    with open(settings.log, "a") as f:
        f.write(f"{event} {vm.name}\n")
