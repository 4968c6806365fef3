"""The command line (DESIGN.md section 3). Exit codes: 0 success, 1 a VM failed, 2 bad usage or
bad configuration. ``--json`` output is stable (see docs/json.md)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click
from loguru import logger

from rehost import __version__
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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rehost")
@click.option("-v", "--verbose", count=True, help="More output (-v info, -vv debug).")
def main(verbose: int) -> None:
    """rehost moves powered-off KVM VMs from old hypervisor hosts to new ones.

    Its first job: every VM of an Abiquo 2.4/2.6 cloud from CentOS 5 KVM hosts to CentOS 6 KVM
    hosts, through the procedure in DESIGN.md (preflight, fence, then for each VM: locate,
    backup_xml, notify, power_off, undefine, await_undeployed, preserve_disks, deploy,
    power_off_new, transfer, remove_new_disks, swap_disks, start, verify, cleanup; unfence,
    report).

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
    from rehost.core.errors import ConfigError

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
    strategies = {kind: manager.strategies(kind) for kind in ("storage", "allocation")}
    if as_json:
        emit_json({
            "plugins": [p.to_dict() for p in manager.listing()],
            "blocked": sorted(manager.blocked),
            "strategies": {
                kind: [{"name": r.name, "description": r.description, "plugin": r.plugin}
                       for r in recs.values()]
                for kind, recs in strategies.items()
            },
        })
        return
    click.echo("plugins:")
    for p in manager.listing():
        click.echo(f"  {p.name:<24} {p.origin:<12} {p.where}")
    if manager.blocked:
        click.echo("blocked: " + ", ".join(sorted(manager.blocked)))
    for kind, recs in strategies.items():
        click.echo(f"{kind} strategies:")
        for r in recs.values():
            click.echo(f"  {r.name:<14} {r.description}  [{r.plugin}]")


# -- lab ---------------------------------------------------------------------------------------


@main.group("lab")
def lab_group() -> None:
    """The rehearsal lab: real libvirtd + sshd hosts in network namespaces on this machine
    (needs root). `up` writes a site config that points rehost at it."""


@lab_group.command("up")
@click.option("-d", "--description", type=click.Path(dir_okay=False),
              help="Lab description (TOML); default: two CentOS 5 hosts, one CentOS 6 host.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def lab_up(description: str | None, as_json: bool) -> None:
    """Bring the lab up (clearing an earlier one first) and print its site config."""
    from rehost.lab import lab

    st = lab.up(description)
    if as_json:
        emit_json(st.data)
        return
    click.echo(f"lab {st.data['name']} is up in {st.data.get('up_seconds', '?')} s "
               f"({len(st.data['hosts'])} hosts, {len(st.data['vms'])} VMs)")
    for h in st.data["hosts"]:
        click.echo(f"  {h['name']:<8} {h['address']:<14} {h['release']}")
    if st.data.get("emulator"):
        click.echo(f"  Abiquo API: {st.data['emulator']['url']}")
    click.echo(f"site config: {st.site_config}")
    click.echo(st.site_config.read_text())


@lab_group.command("down")
@handle_errors
def lab_down() -> None:
    """Remove everything the lab made: processes (by pid), loop devices, namespaces, files."""
    from rehost.lab import lab

    done = lab.down(quiet=True)
    for line in done or ["no lab was up"]:
        click.echo(line)


@lab_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def lab_status(as_json: bool) -> None:
    """Tell whether the lab is up, its hosts, daemons and domains."""
    from rehost.lab import lab

    st = lab.status()
    if as_json:
        emit_json(st)
        return
    if not st["up"]:
        click.echo("lab is down" + (f" (leftover namespaces: {st['namespaces']})"
                                     if st["namespaces"] else ""))
        return
    click.echo(f"lab is up: {st['root']}  site config: {st['site_config']}")
    for h in st["hosts"]:
        daemons = " ".join(f"{k.split('.')[0]}={'up' if v else 'DOWN'}"
                           for k, v in h["daemons"].items())
        click.echo(f"  {h['name']:<8} {h['address']:<14} {h['release']:<30} {daemons}")
        for d in h["domains"]:
            click.echo(f"      {d['name']}  {d['state']}")
    if st.get("emulator"):
        click.echo(f"  Abiquo API: {st['emulator'].get('url')}")


if __name__ == "__main__":
    main()
