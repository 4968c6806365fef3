"""The whole datacenter in the lab: four CentOS 5 hosts in two racks and one CentOS 6 host,
where one CentOS 5 host's VMs fit on the CentOS 6 host but not two hosts'. One
`rehost run --evacuate` empties them all, wave after wave, each emptied host reinstalled as
CentOS 6 by a site plugin on rehost_host_emptied and used as a target by the next waves; killed
once inside a wave and once between waves, `rehost resume` goes on. Every VM ends on a CentOS 6
host with its bytes; the report shows the waves."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from rehost.lab.lab import LabState, load_state
from tests.campaign_helpers import add_to_site_config, rehost, shell
from tests.crash_matrix import _seen, where_is

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(1800)]

PLUGIN = Path(__file__).parent / "data" / "evacuate" / "reinstall_plugin.py"
HOSTS = [("c5-a", "r1"), ("c5-b", "r1"), ("c5-c", "r2"), ("c5-d", "r2")]
LAB = ('[lab]\nname = "evacuate"\ncontrol = "libvirt"\n\n'
       + "".join(f'[[hosts]]\nname = "{h}"\nos = "centos-5.11"\nrack = "{r}"\n\n'
                 for h, r in HOSTS)
       + '[[hosts]]\nname = "c6-a"\nos = "centos-6.4"\nrack = "r1"\n'
       + "".join(f'\n[[vms]]\nname = "{h[-1]}{i}"\nhost = "{h}"\ncpu = 2\n'
                 'disks = [{ size_mib = 24, format = "raw", data_mib = 2 }]\n'
                 for h, _ in HOSTS for i in range(3)))


def evacuation(journal: Path) -> dict[str, Any]:
    if not journal.exists():
        return {}
    try:
        db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=1)
        try:
            row = db.execute("SELECT value FROM meta WHERE key = 'evacuation'").fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return {}
    return json.loads(row[0]) if row else {}


def run_until(st: LabState, args: list[str], moment: Any) -> None:
    """Run rehost and SIGKILL its process group when ``moment(journal)`` says so."""
    journal = st.root / "state" / "journal.sqlite"
    proc = subprocess.Popen([sys.executable, "-m", "rehost.core.cli", *args, "-c",
                             str(st.site_config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while not moment(journal):
            assert proc.poll() is None, f"rehost ended first: {proc.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "the moment never came"
            time.sleep(0.02)  # polling the journal for the moment to strike
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_run_evacuate_empties_every_centos5_host_in_waves_and_survives_kills(
        make_lab) -> None:
    st = make_lab(LAB)
    vms = {v["name"]: v for v in st.data["vms"]}
    add_to_site_config(st, f'[plugins]\nfiles = ["{PLUGIN}"]\n\n'
                           # a wave's three VMs move together
                           "[campaign]\nrejoin_timeout = 120\nparallel = 3\n\n"
                           # every lab host has this machine's 2 cores: at 400%, 8 virtual
                           # CPUs hold one CentOS 5 host's VMs (6), not two hosts' (12)
                           "[allocation.options]\ntarget_cpu = 400")
    plan = rehost("plan", "--evacuate", "--json", "-c", str(st.site_config))
    assert plan.returncode == 0, plan.stdout + plan.stderr
    waves = json.loads(plan.stdout)["waves"]
    assert len(waves) == 4
    assert sorted(w["host"] for w in waves) == ["c5-a", "c5-b", "c5-c", "c5-d"]
    # rack r1's hosts first: their VMs stay in their rack
    assert {w["host"] for w in waves[:2]} == {"c5-a", "c5-b"}
    text = rehost("plan", "--evacuate", "-c", str(st.site_config))
    assert "wave 1: empty c5-a (rack r1): 3 VM(s)" in text.stdout, text.stdout

    second = waves[1]["moves"][0]["vm"]
    # killed inside wave 2, in the middle of a VM's move
    run_until(st, ["run", "--evacuate"], lambda j: _seen(j, second, "transfer", ("start",)))
    # killed between waves: wave 2 is done, its host being reinstalled
    run_until(st, ["resume"], lambda j: len(evacuation(j).get("waves", [])) >= 2
              and not evacuation(j).get("current"))
    done = rehost("resume", "-c", str(st.site_config), timeout=1800)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "the evacuation is complete" in done.stdout

    lab = load_state(st.root)
    assert lab is not None
    assert {h["name"]: h["os"] for h in lab.data["hosts"]} == {
        "c5-a": "centos-6.4", "c5-b": "centos-6.4", "c5-c": "centos-6.4", "c5-d": "centos-6.4",
        "c6-a": "centos-6.4"}
    for name, vm in vms.items():
        places = where_is(st, vm["domain"])
        assert list(places.values()) == ["running"], (name, places)
        host = next(iter(places))
        for disk in vm["disks"]:
            assert shell(st, host).checksum(disk["path"], "sha1") == disk["sha1"], name
    report = json.loads((st.root / "reports" / "report.json").read_text())
    assert [w["status"] for w in report["waves"]] == ["done"] * 4
    assert sorted(report["hosts_rejoined"]) == ["c5-a", "c5-b", "c5-c", "c5-d"]
    md = (st.root / "reports" / "report.md").read_text()
    assert "## Evacuation waves" in md
