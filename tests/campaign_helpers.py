"""Helpers for campaign tests in the lab: run the real CLI, look at hosts and Abiquo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from rehost.abiquo.client import AbiquoClient
from rehost.core.remote import Shell, SshOptions
from rehost.lab.lab import LabState

RECORDER = '''
"""A site plugin file that records every stage event to a JSON-lines file."""
import json, os
from rehost.hooks import hookimpl

OUT = os.environ.get("REHOST_TEST_EVENTS", os.devnull)

def _w(**kw):
    with open(OUT, "a") as f:
        f.write(json.dumps(kw) + "\\n")

@hookimpl
def rehost_stage_start(stage, vm, ctx):
    _w(hook="stage_start", stage=stage, vm=vm.name if vm else None)

@hookimpl
def rehost_stage_finish(stage, vm, ctx, result):
    _w(hook="stage_finish", stage=stage, vm=vm.name if vm else None)

@hookimpl
def rehost_stage_error(stage, vm, ctx, error):
    _w(hook="stage_error", stage=stage, vm=vm.name if vm else None, error=str(error))

@hookimpl
def rehost_notify(vm, ctx, event):
    _w(hook="notify", event=event, vm=vm.name)

@hookimpl
def rehost_transfer_progress(vm, ctx, path, done, total, seconds):
    _w(hook="transfer_progress", vm=vm.name, path=path, done=done, total=total)

@hookimpl
def rehost_campaign_start(ctx, vms):
    _w(hook="campaign_start", vms=[v.name for v in vms])

@hookimpl
def rehost_campaign_finish(ctx, outcome):
    _w(hook="campaign_finish", outcome=outcome)
'''


def two_host_lab(name: str, vms: str, *, shared: bool = False) -> str:
    """A lab description: one CentOS 5 host ``c5-a``, one CentOS 6 host ``c6-a``, and ``vms``
    (``[[vms]]`` tables in TOML)."""
    return (f'[lab]\nname = "{name}"\nshared_datastore = {"true" if shared else "false"}\n\n'
            '[[hosts]]\nname = "c5-a"\nos = "centos-5.11"\n\n'
            '[[hosts]]\nname = "c6-a"\nos = "centos-6.4"\n' + vms)


#: two VMs on c5-a: "good" and "bad" (the one tests make fail)
SMALL_LAB = two_host_lab("small", """
[[vms]]
name = "good"
host = "c5-a"
disks = [{ size_mib = 128, format = "raw", data_mib = 4 }]

[[vms]]
name = "bad"
host = "c5-a"
disks = [{ size_mib = 32, format = "raw", data_mib = 2 }]
""")


def rehost(*args: str, env: dict[str, str] | None = None,
           timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run the real command line, as an operator would."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "rehost.core.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=full_env, check=False)


def add_to_site_config(st: LabState, text: str) -> None:
    """Append keys to sections of the lab's site config (TOML allows a table only once, so
    this inserts after the section header)."""
    cfg = st.site_config.read_text()
    for block in text.strip().split("\n\n"):
        header, _, body = block.partition("\n")
        if header in cfg:
            cfg = cfg.replace(header + "\n", header + "\n" + body + "\n", 1)
        else:
            cfg += "\n" + block + "\n"
    st.site_config.write_text(cfg)


def shell(st: LabState, host: str) -> Shell:
    return Shell(st.host(host)["address"], ssh=SshOptions(config=st.data["ssh_config"]),
                 name=host)


def abiquo(st: LabState) -> AbiquoClient:
    emu = st.data["emulator"]
    password = Path(emu["password_file"]).read_text().strip()
    return AbiquoClient(emu["url"], emu["user"], password, version=emu.get("version", "2.6"))


def rules_snapshot(st: LabState) -> dict[str, Any]:
    """The allocation rules and machine states in force, by content (ids may change)."""
    with abiquo(st) as c:
        loads = sorted(
            (r.target.rel if r.target else "", c.absolute(r.target.href) if r.target else "",
             r.cpuLoadPercentage, r.ramLoadPercentage) for r in c.load_level_rules())
        fits = sorted((p.datacenter or "", p.fitPolicy or "") for p in c.fit_policy_rules())
        states = sorted((m.name or "", m.state or "") for m in c.machines())
    return {"load": loads, "fit": fits, "machines": states}


def events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def journal_results(st: LabState, vm: str, stage: str) -> dict[str, Any]:
    from rehost.core.journal import Journal

    j = Journal(st.root / "state")
    try:
        return j.finished_stages(vm).get(stage, {})
    finally:
        j.close()
