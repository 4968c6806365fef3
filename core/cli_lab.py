"""The command line of the rehearsal lab: `rehost lab up|down|status` and `rehost demo`."""

from __future__ import annotations

from pathlib import Path

import click

from rehost.core.cli_common import (
    build_campaign,
    config_option,
    emit_json,
    handle_errors,
    run_and_report,
)

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


@lab_group.command("reinstall")
@click.argument("host")
@click.option("--os", "os_name", default="centos-6.4", show_default=True,
              help="The release it comes back with (a lab personality).")
@handle_errors
def lab_reinstall(host: str, os_name: str) -> None:
    """Reinstall a lab host as an operator reinstalls an emptied CentOS 5 server: its domains,
    libvirt state and own datastore are wiped, it comes back with the new release at the
    same address (ssh host key kept). Then `rehost host rejoin HOST` makes it a target."""
    from rehost.lab.reinstall import reinstall

    record = reinstall(host, os_name)
    click.echo(f"{host} reinstalled: {record['release']} at {record['address']}")


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


@lab_group.command("mirror")
@config_option
@click.option("-o", "--output", required=True,
              type=click.Path(dir_okay=False, writable=True, allow_dash=True),
              help="Where to write the lab description (TOML); '-' prints it.")
@click.option("--scale", default="1/64", show_default=True, metavar="FRACTION",
              help="Disk sizes in the lab: the site's times this (virtual size at least "
                   "16 MiB, data, from the disk's allocation, at least 1 MiB).")
@click.option("--memory-scale", default="1", show_default=True, metavar="FRACTION",
              help="Memory of the lab's VMs and hosts: the site's times this (at least "
                   "16 MiB). Lower it when the VMs' memory does not fit this machine.")
@click.option("--json", "as_json", is_flag=True,
              help="Print a machine-readable summary instead (with the notes).")
@handle_errors
def lab_mirror(config_path: str, output: str, scale: str, memory_scale: str,
               as_json: bool) -> None:
    """Write a lab description shaped like a real site, to rehearse its campaign here.

    Reads the site of SITE.toml (-c) without changing anything: the hosts' facts, the VMs
    the control plane selects for the campaign, their domain XML and the size of their
    disks (stat, qemu-img info), through a dry-run campaign in a temporary state folder.
    Writes the hosts (names, racks, the lab personality nearest to each release, CPUs and
    memory), the VMs (host, virtual CPUs, memory, disks in their formats, sizes scaled by
    --scale), Abiquo or plain libvirt as the site's [control], and a shared datastore if
    the site's storage strategy is `shared`. Needs no root.

    \b
    Then, as root on the rehearsal machine:
      rehost lab up -d lab.toml
      rehost plan -c /var/lib/rehost-lab/site.toml --evacuate
      rehost run -c /var/lib/rehost-lab/site.toml
    """
    from rehost.lab.mirror import mirror, parse_scale

    if as_json and output == "-":
        raise click.UsageError("--json prints the summary: give -o a file")
    disk_scale = parse_scale(scale)
    mem_scale = parse_scale(memory_scale, "--memory-scale")
    result = mirror(config_path, None if output == "-" else output, disk_scale, mem_scale)
    if as_json:
        emit_json({"output": output, "hosts": result.hosts, "vms": result.vms,
                   "disk_mib": result.disk_mib, "data_mib": result.data_mib,
                   "ram_mib": result.ram_mib, "notes": result.notes})
        return
    to_err = output == "-"
    if to_err:
        click.echo(result.text, nl=False)
    click.echo(f"lab description{'' if to_err else ' ' + output}: {result.hosts} host(s), "
               f"{result.vms} VM(s); disks {result.disk_mib} MiB ({result.data_mib} MiB of "
               f"data), {result.ram_mib} MiB of memory for the running VMs", err=to_err)
    for note in result.notes:
        click.echo(f"  note: {note}", err=to_err)
    if not to_err:
        click.echo(f"next, as root: rehost lab up -d {output}", err=to_err)


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
