"""The command line of the rehearsal lab: `rehost lab up|down|status` and `rehost demo`."""

from __future__ import annotations

from pathlib import Path

import click

from rehost.core.cli_common import build_campaign, emit_json, handle_errors, run_and_report

# -- lab ---------------------------------------------------------------------------------------


@click.group("lab")
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


@click.command("demo")
@click.option("--keep-lab", is_flag=True, help="Leave the lab up afterwards.")
@click.option("-d", "--description", type=click.Path(dir_okay=False),
              help="Lab description (default: two CentOS 5 hosts, one CentOS 6 host).")
@click.option("--storage", help="Storage strategy to use (default: from the lab).")
@click.option("--allocation", help="Allocation strategy to use (default: loadlevel).")
@handle_errors
def demo_cmd(keep_lab: bool, description: str | None, storage: str | None,
             allocation: str | None) -> None:
    """Run a whole campaign in the built-in rehearsal lab and write its report.

    Brings the lab up (real libvirtd + sshd hosts in namespaces, an Abiquo-compatible API),
    moves every VM off its CentOS 5 hosts, prints where the report is, and takes the lab down
    (unless --keep-lab)."""
    from rehost.lab import lab
    from rehost.lab.siteconfig import write_site_config

    # the report outlives the lab: it goes to the current folder
    report_dir = Path.cwd() / "rehost-demo-report"
    click.echo("bringing the rehearsal lab up ...")
    st = lab.up(description)
    ok = False
    try:
        kwargs = {k: v for k, v in (("storage", storage), ("allocation", allocation)) if v}
        write_site_config(st, report_dir=str(report_dir), **kwargs)
        click.echo(f"lab up in {st.data.get('up_seconds')} s: "
                   + ", ".join(f"{h['name']} ({h['release']})" for h in st.data["hosts"]))
        click.echo(f"site config: {st.site_config}")
        ctx = build_campaign(str(st.site_config), exclusive="rehost demo")
        try:
            run_and_report(ctx, ())
            ok = True
        except SystemExit as exc:
            ok = exc.code in (0, None)
            raise
    finally:
        if keep_lab:
            click.echo(f"the lab stays up (`rehost lab status`, `rehost lab down`); "
                       f"site config {st.site_config}")
        else:
            lab.down(quiet=True)
            click.echo("the lab is down")
        click.echo(f"demo report: {report_dir}")
        if not ok:
            click.echo("demo: a VM failed (see the report)", err=True)
