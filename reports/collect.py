"""The report model of a running campaign: its journal, what its hosts hold now, its secrets.

Shared by every reporter, so one ``rehost report`` looks at the hosts once, not once per
format. Looking is read-only: the domains still defined on each source host (a host is
reported emptied only when none is left), nothing else.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from rehost.reports.model import build_report

if TYPE_CHECKING:
    from rehost.api import Context

_cache: weakref.WeakKeyDictionary[Context, tuple[int, dict[str, Any]]] = \
    weakref.WeakKeyDictionary()


def _secrets(ctx: Context) -> list[str]:
    """Strings that must never appear in a report: what the plugins' settings call secret
    (the Abiquo password)."""
    return ctx.secrets()


def _hosts(ctx: Context) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for host in ctx.config.hosts.values():
        info: dict[str, Any] = {"role": host.role, "domains": None}
        if host.role == "source" and not ctx.dry_run:
            try:
                info["domains"] = [d.name for d in ctx.hypervisor(host.name).domains()]
            except Exception as exc:  # unreachable now: say so, do not guess "empty"
                ctx.log.warning("report: cannot list the domains of {}: {}", host.name, exc)
        out[host.name] = info
    return out


def campaign_report(ctx: Context) -> dict[str, Any]:
    """The report model of ``ctx`` now (cached while the journal does not change)."""
    events = ctx.journal.events()
    mark = events[-1].id if events else 0
    cached = _cache.get(ctx)
    if cached is not None and cached[0] == mark:
        return cached[1]
    report = build_report(ctx.journal, campaign=ctx.config.campaign.name,
                          storage=ctx.config.storage.strategy,
                          allocation=ctx.config.allocation.strategy,
                          hosts=_hosts(ctx), secrets=_secrets(ctx))
    _cache[ctx] = (mark, report)
    return report
