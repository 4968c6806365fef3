"""A site plugin for the evacuation lab test: each host the evacuation empties is reinstalled
as CentOS 6.4 through the lab (as a site would through its own provisioning)."""

from __future__ import annotations

from rehost.api import Context, hookimpl


@hookimpl
def rehost_host_emptied(ctx: Context, host: str, wave: int) -> None:
    from rehost.lab.reinstall import reinstall

    ctx.log.info("test site: reinstalling {} (emptied by wave {})", host, wave)
    reinstall(host, "centos-6.4")
