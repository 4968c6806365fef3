"""Faults of an Abiquo site, injected in the lab (not simulated in-process):

- the Abiquo API goes away in the middle of a campaign (its server stops) and comes back with
  its database (the emulator keeps its state across a restart, as Abiquo's MySQL does);
- the fence is lost (an operator deletes the 1% rule) and a deploy lands on the CentOS 5 host.

In each, the VM in flight stops at a safe point with its disks under their _BACK names, the
VMs not yet taken down are held running where they were, the message names what failed, and
`rehost resume` finishes the campaign: every VM on the CentOS 6 host with its bytes, Abiquo's
rules as before the campaign."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from rehost.lab.emulator.process import restart_emulator, stop_emulator
from rehost.lab.lab import LabState
from tests.campaign_helpers import abiquo, rehost, rules_snapshot, shell, two_host_lab
from tests.crash_matrix import _seen, where_is

pytestmark = [pytest.mark.lab, pytest.mark.slow]

THREE_VMS = two_host_lab("abq-faults", "".join(
    f'\n[[vms]]\nname = "v{i}"\nhost = "c5-a"\n'
    'disks = [{ size_mib = 32, format = "raw", data_mib = 2 },\n'
    '         { size_mib = 16, format = "qcow2", data_mib = 1 }]\n' for i in range(3)))


def run_until(st: LabState, vm: str, stage: str, event: str,
              fault: Callable[[], None]) -> subprocess.CompletedProcess[str]:
    """Run the campaign (one VM at a time); when ``vm``'s ``stage`` is journaled ``event``,
    freeze rehost (SIGSTOP), inject the fault, let it go on (SIGCONT) and wait for its end."""
    journal = st.root / "state" / "journal.sqlite"
    domain = st.vm(vm)["domain"]
    proc = subprocess.Popen([sys.executable, "-m", "rehost.core.cli", "run", "-c",
                             str(st.site_config), "--parallel", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not _seen(journal, domain, stage, (event,)):
            assert proc.poll() is None, f"rehost ended before {vm} {stage}: {proc.stderr}"
            assert time.monotonic() < deadline, f"{vm} never reached {stage}"
            time.sleep(0.02)  # polling the journal for the moment to strike
        os.killpg(proc.pid, signal.SIGSTOP)
        try:
            fault()
        finally:
            os.killpg(proc.pid, signal.SIGCONT)
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def statuses(st: LabState) -> dict[str, Any]:
    status = json.loads(rehost("status", "-c", str(st.site_config), "--json").stdout)
    return {r["label"]: r for r in status["vms"]}


def assert_safe_then_resume(st: LabState, before: dict[str, Any], failed_stage: str) -> None:
    """v0 failed at a safe point with its disks as _BACK on c5-a, v1 and v2 held running
    there; then `rehost resume` moves all three with their bytes, rules back as before."""
    rows = statuses(st)
    assert (rows["v0"]["status"], rows["v0"]["stage"]) == ("failed", failed_stage)
    c5 = shell(st, "c5-a")
    for disk in st.vm("v0")["disks"]:
        assert c5.checksum(disk["path"] + "_BACK", "sha1") == disk["sha1"]
    for name in ("v1", "v2"):
        assert rows[name]["status"] == "held"
        assert where_is(st, st.vm(name)["domain"]) == {"c5-a": "running"}
        for disk in st.vm(name)["disks"]:
            assert c5.checksum(disk["path"], "sha1") == disk["sha1"]

    res = rehost("resume", "-c", str(st.site_config))
    assert res.returncode == 0, res.stdout + res.stderr
    c6 = shell(st, "c6-a")
    with abiquo(st) as client:
        for name in ("v0", "v1", "v2"):
            vm = st.vm(name)
            assert where_is(st, vm["domain"]) == {"c6-a": "running"}
            for disk in vm["disks"]:
                assert c6.checksum(disk["path"], "sha1") == disk["sha1"]
            avm = client.find_vm(uuid=vm["uuid"])
            assert avm.state == "ON"
            assert client.vm_machine(avm).ip == st.host("c6-a")["address"]
    assert rules_snapshot(st) == before


def test_the_abiquo_api_goes_away_mid_campaign_and_comes_back(make_lab) -> None:
    st = make_lab(THREE_VMS)
    before = rules_snapshot(st)

    # the API dies while v0 is off with its disks renamed, just before its deploy
    done = run_until(st, "v0", "preserve_disks", "start", lambda: stop_emulator(st.root))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "the control plane failed while moving v0 (deploy)" in done.stderr
    assert "held the VMs not yet powered off" in done.stderr, done.stderr
    # what it could not reach, in words
    assert f"cannot reach the Abiquo API at {st.data['emulator']['url']} " \
           "(connection refused" in done.stderr
    assert "the fence is still up" in done.stderr  # the unfence could not reach it either

    # Abiquo comes back with its database: the campaign's 1% rule is still there
    restart_emulator(st.root)
    with abiquo(st) as client:
        c5 = next(m for m in client.machines() if m.name == "c5-a")
        fence = [(r.cpuLoadPercentage, r.ramLoadPercentage) for r in client.load_level_rules()
                 if r.target is not None and client.absolute(r.target.href)
                 == client.absolute(c5.url)]
    assert fence == [(1, 1)]
    assert_safe_then_resume(st, before, "deploy")


def test_a_deploy_that_lands_on_the_centos5_host_is_undone_and_resume_finishes(
        make_lab) -> None:
    st = make_lab(THREE_VMS)
    before = rules_snapshot(st)

    def lose_the_fence() -> None:  # an operator deletes the campaign's 1% rule
        with abiquo(st) as client:
            for rule in client.load_level_rules():
                client.delete_load_level_rule(rule)

    done = run_until(st, "v0", "locate", "start", lose_the_fence)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "was deployed on c5-a, not on a target host" in done.stderr
    assert "it was undeployed again" in done.stderr
    assert "held the VMs not yet powered off" in done.stderr
    # no template VM left running on the CentOS 5 host: the deploy was undone
    assert where_is(st, st.vm("v0")["domain"]) == {}
    # resume puts the fence up again before any deploy
    assert_safe_then_resume(st, before, "deploy")
