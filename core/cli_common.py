"""What the command line's modules share: error handling, JSON output, building a campaign
from a site config, running it."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click
from loguru import logger

from rehost.core.errors import RehostError

F = TypeVar("F", bound=Callable[..., Any])


def setup_logging(verbose: int) -> None:
    logger.remove()
    level = "DEBUG" if verbose >= 2 else "INFO" if verbose == 1 else "WARNING"
    logger.add(sys.stderr, level=level, format="<level>{level: <7}</level> {message}")


def handle_errors(fn: F) -> F:
    """Turn rehost's errors into a one-line message and the documented exit code."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RehostError as exc:
            click.echo(f"rehost: error: {exc}", err=True)
            sys.exit(exc.exit_code)

    return wrapper  # type: ignore[return-value]


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


config_option = click.option(
    "-c", "--config", "config_path", required=True, type=click.Path(dir_okay=False),
    help="The site config (TOML). `rehost lab up` writes one for the rehearsal lab.")
vm_option = click.option(
    "--vm", "vms", multiple=True, metavar="NAME",
    help="Only this VM (domain name ABQ_<uuid>, uuid, or Abiquo name); repeatable.")


def build_campaign(config_path: str, *, dry_run: bool = False, parallel: int | None = None,
                   per_host_limit: int | None = None, per_target_limit: int | None = None,
                   delete_backups: bool = False,
                   progress: bool = True, exclusive: str | None = None,
                   accept_downtime: bool = False) -> Any:
    """The campaign of a site config. ``exclusive`` names a command that changes things: it
    holds the campaign's lock (another rehost on the same campaign is refused) until close."""
    from rehost.core.campaign import Campaign
    from rehost.core.config import load_config
    from rehost.core.errors import ConfigError

    cfg = load_config(config_path)
    if parallel is not None:
        if parallel < 1:
            raise ConfigError("--parallel must be 1 or more")
        cfg.campaign.parallel = parallel
    if per_host_limit is not None:
        if per_host_limit < 0:
            raise ConfigError("--per-host-limit must be 0 (no limit) or more")
        cfg.campaign.per_host_limit = per_host_limit
    if per_target_limit is not None:
        if per_target_limit < 0:
            raise ConfigError("--per-target-limit must be 0 (no limit) or more")
        cfg.campaign.per_target_limit = per_target_limit
    if delete_backups:
        cfg.campaign.delete_backups = True
    if accept_downtime:
        cfg.campaign.downtime_accepted = True
    extra: list[tuple[object, str]] = []
    if progress:
        from rehost.core.progress import ProgressDisplay

        extra.append((ProgressDisplay(), "progress"))
    return Campaign(cfg, dry_run=dry_run, extra_plugins=extra,
                    exclusive=None if dry_run else exclusive)


def print_findings(findings: list[Any]) -> None:
    for f in findings:
        colour = {"critical": "red", "warning": "yellow"}.get(f.severity, "")
        where = f" ({f.vm or f.host})" if (f.vm or f.host) else ""
        click.secho(f"  {f.severity:<8} [{f.code}] {f.message}{where}", fg=colour or None)


def run_and_report(ctx: Any, vms: tuple[str, ...]) -> None:
    from rehost.core.pipeline import PreflightFailed, run_campaign

    try:
        outcome = run_campaign(ctx, list(vms) or None)
    except PreflightFailed as exc:
        click.secho("preflight found critical problems; nothing was changed:", fg="red",
                    err=True)
        print_findings(exc.findings)
        sys.exit(exc.exit_code)
    finally:
        paths = ctx.journal.get("report_paths") or []
        ctx.close()
    if ctx.dry_run:
        click.echo("dry run: these VMs would move (nothing was changed):")
        for name in outcome:
            click.echo(f"  {name}")
        return
    failed = [n for n, o in outcome.items() if o == "failed"]
    back = [n for n, o in outcome.items() if o == "rolled_back"]
    waiting = [n for n, o in outcome.items() if o not in ("done", "failed", "rolled_back")]
    moved = sum(1 for o in outcome.values() if o == "done")
    click.echo(f"{moved} of {len(outcome)} VM(s) moved"
               + (f"; FAILED: {', '.join(failed)}" if failed else "")
               + (f"; ROLLED BACK: {', '.join(back)}" if back else "")
               + (f"; not finished: {', '.join(waiting)}" if waiting else ""))
    if ctx.fault is not None:
        click.secho(f"held the VMs not yet powered off: {ctx.fault}", fg="red", err=True)
    if ctx.unfence_error is not None:
        click.secho(f"the fence is still up (the unfence failed: {ctx.unfence_error}): "
                    "`rehost resume` puts the rules back", fg="red", err=True)
    for p in paths:
        click.echo(f"report: {p}")
    if ctx.stopped_by is not None:
        click.echo(f"stopped by {ctx.stopped_by.name}: the rules are put back and the report "
                   "is written; `rehost resume` goes on where it stopped", err=True)
        sys.exit(128 + ctx.stopped_by.value)  # the shell's way of saying "killed by it"
    if failed or back or waiting or ctx.unfence_error is not None:
        sys.exit(1)


def print_evacuation_plan(ctx: Any, as_json: bool) -> None:
    """``rehost plan --evacuate``: the waves, from the hosts as they are now (read-only)."""
    from rehost.core.evacuate import apply_roles, make_evacuation_plan, state
    from rehost.core.pipeline import configured, select_vms

    try:
        with configured(ctx):
            apply_roles(ctx)
            ctx.discovered = ctx.hooks.discover_hosts(ctx)
            done = state(ctx)
            waves = make_evacuation_plan(ctx, select_vms(ctx), first=len(done["waves"]) + 1)
    finally:
        ctx.close()
    if as_json:
        emit_json({"waves": [w.to_dict() for w in waves],
                   "done": done["waves"], "emptied": done["emptied"],
                   "rejoined": done["joined"]})
        return
    sources = [h.name for h in ctx.config.sources()]
    targets = [h.name for h in ctx.config.targets()]
    click.echo(f"evacuation of {len(sources)} source host(s) ({', '.join(sources) or '-'}) "
               f"into {', '.join(targets) or '(no target)'}: {len(waves)} wave(s)")
    total = 0.0
    for w in waves:
        total += w.estimate_s
        rack = f" (rack {w.rack})" if w.rack else ""
        click.echo(f"wave {w.number}: empty {w.host}{rack}: {len(w.moves)} VM(s), about "
                   f"{w.estimate_s:.0f} s of downtime")
        for m in w.moves:
            click.echo(f"  {m.label:<20} {m.need['cpus']} CPU {m.need['memory_mib']} MiB "
                       f"{m.need['bytes'] >> 20} MiB disk  -> {m.target}")
        click.echo(f"  then: {w.host} is empty; reinstall it as CentOS 6 (a site plugin on "
                   f"rehost_host_emptied, or by hand and `rehost host rejoin {w.host}`); it "
                   "is a target for the next waves")
    click.echo(f"total downtime, one VM at a time: about {total:.0f} s")


def evacuate_and_report(ctx: Any) -> None:
    """``rehost run --evacuate`` and its resume: wave after wave, then the outcome."""
    from rehost.core.evacuate import evacuate, state

    try:
        outcome, stopped = evacuate(ctx)
        done = state(ctx)
        paths = ctx.journal.get("report_paths") or []
    finally:
        ctx.close()
    moved = sum(1 for o in outcome.values() if o == "done")
    click.echo(f"evacuation: {len(done['waves'])} wave(s) done, hosts emptied: "
               f"{', '.join(done['emptied']) or '-'}, rejoined as CentOS 6: "
               f"{', '.join(done['joined']) or '-'}; {moved} VM(s) moved in this run")
    if ctx.fault is not None:
        click.secho(f"held the VMs not yet powered off: {ctx.fault}", fg="red", err=True)
    for p in paths:
        click.echo(f"report: {p}")
    if ctx.stopped_by is not None:
        click.echo(f"stopped by {ctx.stopped_by.name}: `rehost resume` goes on where it "
                   "stopped", err=True)
        sys.exit(128 + ctx.stopped_by.value)
    if stopped is None:
        click.echo("every source host is empty: the evacuation is complete")
        return
    click.secho(stopped, fg="yellow", err=True)
    waiting = [h for h in done["emptied"] if h not in done["joined"]]
    failed = any(o != "done" for o in outcome.values()) or ctx.fault is not None
    sys.exit(1 if failed or not waiting else 3)
