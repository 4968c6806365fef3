"""The command line (docs/design.md). Exit codes: 0 success, 1 a VM failed, 2 bad usage or
bad configuration. ``--json`` outputs are stable and documented in docs/cli-json.md."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from rehost import __version__
from rehost.core.cli_common import (
    build_campaign,
    config_option,
    emit_json,
    evacuate_and_report,
    handle_errors,
    print_evacuation_plan,
    print_findings,
    run_and_report,
    setup_logging,
    vm_option,
)
from rehost.core.errors import ConfigError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rehost")
@click.option("-v", "--verbose", count=True, help="More output (-v info, -vv debug).")
def main(verbose: int) -> None:
    """rehost moves powered-off KVM VMs from old hypervisor hosts to new ones.

    Its first job: every VM of an Abiquo 2.4/2.6 cloud from CentOS 5 KVM hosts to CentOS 6 KVM
    hosts; it also moves VMs between plain libvirt hosts ([control] strategy = "libvirt").
    The procedure (docs/design.md): preflight, fence, then for each VM: locate, backup_xml,
    notify, power_off, undefine, await_undeployed, preserve_disks, deploy, power_off_new,
    transfer, remove_new_disks, swap_disks, start, verify, cleanup; unfence, report.

    Start with `rehost demo` (a whole campaign in the built-in rehearsal lab), or
    `rehost plan -c SITE.toml` on your own site.
    """
    setup_logging(verbose)


# -- disks -------------------------------------------------------------------------------------


@main.command("disks")
@click.argument("xml_file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def disks_cmd(xml_file: str, as_json: bool) -> None:
    """List the disks a domain XML uses: what `virsh domblklist --details` shows, and more
    (format, bus, readonly/shareable, network protocol and hosts, backing chain).

    XML_FILE is a file written by `virsh dumpxml`, or - for standard input."""
    from rehost.core.disks import format_disks_table, parse_disks

    if xml_file == "-":
        text = sys.stdin.read()
    else:
        path = Path(xml_file)
        if not path.is_file():
            raise ConfigError(f"{xml_file}: no such file")
        text = path.read_text()
    found = parse_disks(text)
    if as_json:
        emit_json([d.to_dict() for d in found])
    else:
        click.echo(format_disks_table(found))


# -- plugins -----------------------------------------------------------------------------------


@main.command("plugins")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False),
              help="Site config: its plugin files and blocked plugins count too.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def plugins_cmd(config_path: str | None, as_json: bool) -> None:
    """List every plugin and strategy found, and where each came from."""
    from rehost.core.plugins import build_plugin_manager

    block: list[str] = []
    files: list[str] = []
    if config_path:
        from rehost.core.config import load_config

        cfg = load_config(config_path)
        block, files = list(cfg.plugins.block), list(cfg.plugins.files)
    manager = build_plugin_manager(block=block, plugin_files=files)
    strategies = {kind: manager.strategies(kind)
                  for kind in ("control", "storage", "allocation", "backup")}
    settings = {s.plugin: {"section": s.where, "help": s.help,
                           "keys": sorted(s.model.model_fields)}
                for s in manager.settings_specs()}
    if as_json:
        emit_json({
            "plugins": [p.to_dict() for p in manager.listing()],
            "blocked": sorted(manager.blocked),
            "strategies": {
                kind: [{"name": r.name, "description": r.description, "plugin": r.plugin}
                       for r in recs.values()]
                for kind, recs in strategies.items()
            },
            "settings": settings,
            "report_formats": manager.hooks.report_formats(),
        })
        return
    click.echo("plugins:")
    for p in manager.listing():
        click.echo(f"  {p.name:<24} {p.origin:<12} {p.where}")
    if manager.blocked:
        click.echo("blocked: " + ", ".join(sorted(manager.blocked)))
    for kind, recs in strategies.items():
        click.echo("control planes:" if kind == "control" else f"{kind} strategies:")
        for r in recs.values():
            click.echo(f"  {r.name:<14} {r.description}  [{r.plugin}]")
    if settings:
        click.echo("plugin settings:")
        for name, s in settings.items():
            click.echo(f"  [{s['section']}]  {', '.join(s['keys'])}  ({name}: {s['help']})")
    click.echo("report formats: " + ", ".join(manager.hooks.report_formats()))


# -- campaign ----------------------------------------------------------------------------------

@main.command("plan")
@config_option
@vm_option
@click.option("--evacuate", is_flag=True,
              help="Plan the whole datacenter's evacuation: waves that empty the source hosts "
                   "one by one, each emptied host reinstalled as CentOS 6 and used as a target "
                   "by the next waves.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def plan_cmd(config_path: str, vms: tuple[str, ...], evacuate: bool, as_json: bool) -> None:
    """What would move where, and the preflight findings. Changes nothing on the hosts or in
    the control plane (the preflight is journaled in the state directory)."""
    from rehost.core import pipeline

    if evacuate:
        if vms:
            raise ConfigError("--evacuate plans every VM of the source hosts: no --vm")
        print_evacuation_plan(build_campaign(config_path, dry_run=True, progress=False),
                              as_json)
        return
    ctx = build_campaign(config_path, dry_run=True, progress=False)
    try:
        plan = pipeline.plan(ctx, list(vms) or None)
    finally:
        ctx.close()
    if as_json:
        emit_json(plan.to_dict())
    else:
        click.echo(f"control plane: {plan.control}   storage strategy: {plan.storage}   "
                   f"allocation strategy: {plan.allocation}")
        click.echo(f"targets: {', '.join(plan.targets) or '(none)'}")
        click.echo(f"{len(plan.vms)} VM(s) to move:")
        for v in plan.vms:
            files = [d for d in v.disks if d.is_file]
            click.echo(f"  {v.label or v.name:<16} {v.name}  on {v.source_host or '?'}  "
                       f"({len(files)} file disk(s), {len(v.disks) - len(files)} other)")
        click.echo("preflight:" if plan.findings else "preflight: no findings")
        print_findings(plan.findings)
    if plan.critical:
        sys.exit(1)


@main.command("run")
@config_option
@vm_option
@click.option("--parallel", type=int, help="VMs moved at once (default: campaign.parallel).")
@click.option("--per-host-limit", type=int,
              help="VMs moved at once from one source host (default: campaign.per_host_limit; "
                   "0: no limit).")
@click.option("--per-target-limit", type=int,
              help="Copies at once into one target host (default: campaign.per_target_limit;"
                   " 0: no limit).")
@click.option("--dry-run", is_flag=True, help="Preflight and plan only; change nothing.")
@click.option("--accept-downtime", is_flag=True,
              help="The VMs' users agreed to the downtime (as campaign.downtime_accepted); "
                   "without it, run refuses to start.")
@click.option("--delete-backups", is_flag=True,
              help="Delete X_BACK on the source datastore once a VM is verified.")
@click.option("--evacuate", is_flag=True,
              help="Evacuate the whole datacenter in waves (see `rehost plan --evacuate`): "
                   "after each wave the emptied host is announced (rehost_host_emptied), "
                   "and once it is back as CentOS 6 it is a target for the next waves.")
@handle_errors
def run_cmd(config_path: str, vms: tuple[str, ...], parallel: int | None,
            per_host_limit: int | None, per_target_limit: int | None, dry_run: bool,
            accept_downtime: bool, delete_backups: bool, evacuate: bool) -> None:
    """Run the campaign: preflight, fence, every VM's protocol, unfence, report.

    Exit code 0 when every VM moved, 1 when a VM failed (it stops at a safe point; the report
    says what was done to keep it safe), 2 for bad usage or configuration, 3 when an
    evacuation waits for an emptied host to be reinstalled (`rehost host rejoin`, then
    `rehost resume`)."""
    ctx = build_campaign(config_path, dry_run=dry_run, parallel=parallel,
                         per_host_limit=per_host_limit, per_target_limit=per_target_limit,
                         delete_backups=delete_backups, exclusive="rehost run",
                         accept_downtime=accept_downtime)
    if evacuate:
        if vms or dry_run:
            ctx.close()
            raise ConfigError("--evacuate moves every VM of the source hosts: no --vm, and "
                              "`rehost plan --evacuate` is its dry run")
        evacuate_and_report(ctx)
        return
    run_and_report(ctx, vms)


@main.command("resume")
@config_option
@handle_errors
def resume_cmd(config_path: str) -> None:
    """Continue an interrupted campaign where its journal says it stopped (finished stages
    are skipped; a stage that started and did not finish runs again: each is safe twice)."""
    ctx = build_campaign(config_path, exclusive="rehost resume")
    evacuation = ctx.journal.get("evacuation")
    if evacuation is not None:
        evacuate_and_report(ctx)  # an evacuation goes on wave after wave
        return
    rows = ctx.journal.vm_rows()
    if not rows:
        started = bool(ctx.journal.events(None))
        ctx.close()
        if started:  # the journal is there: the run stopped in its preflight
            raise ConfigError("nothing to resume: the campaign stopped in its preflight, before "
                              "any VM was touched; start it again with `rehost run`")
        raise ConfigError(f"nothing to resume: no campaign journal in {ctx.state_dir}")
    names = tuple(r["name"] for r in rows if r["status"] != "rolled_back")
    if not names:
        ctx.close()
        click.echo("nothing to resume: every VM of the campaign was rolled back "
                   "(`rehost run --vm NAME` moves one again)")
        return
    run_and_report(ctx, names)


@main.group("host")
def host_group() -> None:
    """The hosts of an evacuation."""


@host_group.command("rejoin")
@config_option
@click.argument("name")
@handle_errors
def host_rejoin_cmd(config_path: str, name: str) -> None:
    """An emptied host is back as CentOS 6: check it (its release, libvirt, no domains; the
    control plane's view of it) and make it a target for the next waves. Then `rehost
    resume` goes on with the evacuation."""
    from rehost.core.evacuate import rejoin
    from rehost.core.pipeline import configured

    ctx = build_campaign(config_path, exclusive="rehost host rejoin", progress=False)
    try:
        with configured(ctx):
            said = rejoin(ctx, name)
    finally:
        ctx.close()
    click.echo(said)


@main.command("status")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def status_cmd(config_path: str, as_json: bool) -> None:
    """Each VM's stage and state, from the campaign journal, and whether a rehost is working
    on the campaign right now."""
    from rehost.core.config import load_config
    from rehost.core.journal import Journal
    from rehost.core.lock import holder

    cfg = load_config(config_path)
    active = holder(cfg.state_dir)
    if not (cfg.state_dir / "journal.sqlite").exists():
        if as_json:
            emit_json({"campaign": cfg.campaign.name, "active": active, "vms": []})
        else:
            click.echo(f"no campaign has run yet (state directory {cfg.state_dir})")
        return
    journal = Journal(cfg.state_dir)
    try:
        rows = journal.vm_rows()
        backups = {r["name"]: _backups(journal, r["name"]) for r in rows}
    finally:
        journal.close()
    data = [{"name": r["name"], "uuid": r["uuid"], "label": r["vm"].get("label"),
             "status": r["status"], "stage": r["stage"], "error": r["error"],
             "source_host": r["vm"].get("source_host"),
             "target_host": r["vm"].get("target_host"),
             "backups": backups[r["name"]]} for r in rows]
    if as_json:
        emit_json({"campaign": cfg.campaign.name, "active": active, "vms": data})
        return
    if active is not None:
        click.echo(f"in progress: `{active.get('command', 'rehost')}`, pid {active.get('pid', '?')}"
                   f" on {active.get('host', '?')}, since {active.get('started', '?')}")
    elif any(d["status"] in ("running", "interrupted", "held") for d in data):
        click.echo("interrupted: no rehost is working on this campaign now; `rehost resume` "
                   "goes on where it stopped")
    for d in data:
        click.echo(f"{d['label'] or d['name']:<16} {d['status']:<8} {d['stage'] or '-':<17} "
                   f"{d['source_host'] or '?'} -> {d['target_host'] or '?'}"
                   + (f"  {d['error']}" if d["error"] else ""))
        for b in d["backups"] or []:
            click.echo(f"    backup of {b['path']}: {b['host']}:{b['location']} ({b['state']})")


def _backups(journal: Any, vm: str) -> list[dict[str, Any]] | None:
    """The backups ``backup_disks`` made of a VM (None: none made), each with its state:
    ``kept``, ``deleted`` (with X_BACK, ``backup.options.keep = false``) or ``deleted at
    rehost confirm`` (not yet)."""
    made = journal.finished_stages(vm).get("backup_disks") or {}
    if made.get("skipped") or not made.get("backups"):
        return None
    deleted = journal.get(f"backup-deleted:{vm}")
    state = ("kept" if made.get("kept", True) else "deleted" if deleted
             else "deleted at rehost confirm")
    return [{"path": b["path"], "host": b["host"], "location": b["location"],
             "checksum": b.get("checksum"), "algorithm": b.get("algorithm"), "state": state}
            for b in made["backups"]]


@main.command("confirm")
@config_option
@vm_option
@handle_errors
def confirm_cmd(config_path: str, vms: tuple[str, ...]) -> None:
    """Delete the X_BACK disks of verified VMs on the source datastores (only VMs whose
    verify stage passed; the others keep their backups)."""
    from rehost.core.pipeline import confirm

    ctx = build_campaign(config_path, progress=False, exclusive="rehost confirm")
    try:
        done = confirm(ctx, list(vms) or None)
    finally:
        ctx.close()
    if not done:
        click.echo("no VM of the campaign journal matches: nothing to confirm")
    for name, what in done.items():
        if isinstance(what, dict):
            click.echo(f"{name}: deleted {len(what['deleted'])} backup(s)")
            for p in what["deleted"]:
                click.echo(f"    {p}")
        else:
            click.echo(f"{name}: {what}")


@main.command("rollback")
@config_option
@click.option("--vm", "vms", multiple=True, required=True, metavar="NAME",
              help="The VM to put back (domain name, uuid or Abiquo name); repeatable.")
@handle_errors
def rollback_cmd(config_path: str, vms: tuple[str, ...]) -> None:
    """Put VMs that stopped part-way back on their source (CentOS 5) host, running on the
    user's own disks, checked against the checksums taken when they were preserved.

    Exit code 1 when a VM could not be put back (it is left at a safe point, and the report
    says where its disks are)."""
    from rehost.core.pipeline import rollback

    ctx = build_campaign(config_path, progress=False, exclusive="rehost rollback")
    try:
        done = rollback(ctx, list(vms))
    finally:
        ctx.close()
    failed = False
    for name, what in done.items():
        if isinstance(what, dict):
            click.echo(f"{name}: back on {what['host']}")
            for step in what.get("steps", []):
                click.echo(f"    {step}")
        else:
            failed = failed or what.startswith("rollback failed")
            click.echo(f"{name}: {what}")
    if failed:
        sys.exit(1)


@main.command("report")
@config_option
@click.option("--format", "formats", multiple=True, metavar="FORMAT",
              help="Report format: html, md, json, or one a site reporter adds (repeatable; "
                   "default: the site config's formats).")
@click.option("-o", "--output", type=click.Path(file_okay=False),
              help="Directory to write into (default: campaign.report_dir).")
@handle_errors
def report_cmd(config_path: str, formats: tuple[str, ...], output: str | None) -> None:
    """Write the campaign's report from its journal."""
    ctx = build_campaign(config_path, progress=False)
    try:
        known = ctx.hooks.report_formats()
        for f in formats:
            if f not in known:
                raise ConfigError(f"--format {f!r}: choose {', '.join(known)}")
        outdir = Path(output) if output else ctx.config.report_dir
        outdir.mkdir(parents=True, exist_ok=True)
        paths = ctx.hooks.report(ctx, str(outdir), list(formats or ctx.config.report.formats))
    finally:
        ctx.close()
    for p in paths:
        click.echo(p)


from rehost.core.cli_lab import demo_cmd, lab_group  # noqa: E402 - after main exists

main.add_command(lab_group)
main.add_command(demo_cmd)

if __name__ == "__main__":
    main()
