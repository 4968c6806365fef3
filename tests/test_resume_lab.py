"""A campaign killed with SIGKILL in the middle of a stage, then resumed: nothing is lost."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.campaign_helpers import abiquo, rehost, rules_snapshot, shell, two_host_lab

pytestmark = [pytest.mark.lab, pytest.mark.slow]

ONE_VM_LAB = two_host_lab("resume", """
[[vms]]
name = "victim"
host = "c5-a"
disks = [{ size_mib = 512, format = "raw", data_mib = 64 },
         { size_mib = 32, format = "qcow2", data_mib = 2 }]
""")


def wait_for_stage(journal: Path, stage: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        if journal.exists():
            try:
                db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=1)
                row = db.execute("SELECT 1 FROM events WHERE stage = ? AND event = 'start'",
                                 (stage,)).fetchone()
                db.close()
                if row:
                    return
            except sqlite3.OperationalError:
                pass
        time.sleep(0.02)
    raise AssertionError(f"stage {stage} never started")


@pytest.mark.parametrize("kill_at", ["deploy", "transfer", "swap_disks"])
def test_sigkill_then_resume_moves_the_vm_with_its_disks(make_lab, kill_at: str) -> None:
    st = make_lab(ONE_VM_LAB)
    before = rules_snapshot(st)
    proc = subprocess.Popen([sys.executable, "-m", "rehost.core.cli", "run", "-c",
                             str(st.site_config)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_stage(st.root / "state" / "journal.sqlite", kill_at, time.monotonic() + 300)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    status = rehost("status", "-c", str(st.site_config))
    assert "running" in status.stdout and kill_at in status.stdout
    # the killed run left no lock: status says nobody is at work, and resume may start
    assert status.stdout.startswith("interrupted: no rehost is working on this campaign now")

    res = rehost("resume", "-c", str(st.site_config))
    assert res.returncode == 0, res.stdout + res.stderr
    victim = st.vm("victim")
    target = shell(st, "c6-a")
    for disk in victim["disks"]:
        assert target.checksum(disk["path"], "sha1") == disk["sha1"]
    with abiquo(st) as client:
        avm = client.find_vm(uuid=victim["uuid"])
        assert avm.state == "ON"
        assert client.vm_machine(avm).ip == st.host("c6-a")["address"]
    assert rules_snapshot(st) == before
