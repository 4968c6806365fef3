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
                   per_host_limit: int | None = None, delete_backups: bool = False,
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
    for p in paths:
        click.echo(f"report: {p}")
    if ctx.stopped_by is not None:
        click.echo(f"stopped by {ctx.stopped_by.name}: the rules are put back and the report "
                   "is written; `rehost resume` goes on where it stopped", err=True)
        sys.exit(128 + ctx.stopped_by.value)  # the shell's way of saying "killed by it"
    if failed or back or waiting:
        sys.exit(1)
