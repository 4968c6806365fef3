"""Ctrl-C in a parallel campaign, in the lab: the operator presses it (twice) while three VMs
move at once. No new stage starts, the running ones end, the rules are put back, the report
and the status say where each VM is, no disk is harmed, and `rehost resume` finishes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from tests.campaign_helpers import abiquo, rehost, rules_snapshot, shell, two_host_lab
from tests.test_resume_lab import wait_for_stage

pytestmark = [pytest.mark.lab, pytest.mark.slow]

FOUR_VMS = two_host_lab("ctrlc", "".join(f"""
[[vms]]
name = "vm{i}"
host = "c5-a"
disks = [{{ size_mib = 96, format = "raw", data_mib = 8 }}]
""" for i in range(4)))


def test_ctrl_c_at_parallel_3_stops_in_order_and_resume_finishes(make_lab) -> None:
    st = make_lab(FOUR_VMS)
    before = rules_snapshot(st)
    journal = st.root / "state" / "journal.sqlite"
    proc = subprocess.Popen([sys.executable, "-m", "rehost.core.cli", "run", "-c",
                             str(st.site_config), "--parallel", "3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_stage(journal, "transfer", time.monotonic() + 300)
        proc.send_signal(signal.SIGINT)  # the operator's Ctrl-C, to rehost itself
        proc.send_signal(signal.SIGINT)  # and again, impatient
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGINT, out + err
    assert "stopped by SIGINT" in err and "`rehost resume` goes on" in err
    # the fence is undone although VMs are still on their way
    assert rules_snapshot(st) == before

    status = json.loads(rehost("status", "-c", str(st.site_config), "--json").stdout)
    rows = {r["label"]: r for r in status["vms"]}
    assert status["active"] is None
    assert {r["status"] for r in rows.values()} <= {"done", "interrupted", "pending"}
    assert any(r["status"] == "interrupted" for r in rows.values())
    report = json.loads((st.root / "reports" / "report.json").read_text())
    assert report["outcome"] == "incomplete"
    assert {v["label"]: v["outcome"] for v in report["vms"]} == {
        n: r["status"] for n, r in rows.items()}
    src, tgt = shell(st, "c5-a"), shell(st, "c6-a")
    for name, row in rows.items():
        for disk in st.vm(name)["disks"]:
            if row["status"] == "done":
                assert tgt.checksum(disk["path"], "sha1") == disk["sha1"]
            elif src.exists(disk["path"] + "_BACK"):
                assert src.checksum(disk["path"] + "_BACK", "sha1") == disk["sha1"]
            else:
                assert src.checksum(disk["path"], "sha1") == disk["sha1"]

    res = rehost("resume", "-c", str(st.site_config))
    assert res.returncode == 0, res.stdout + res.stderr
    with abiquo(st) as client:
        for name in rows:
            vm = st.vm(name)
            avm = client.find_vm(uuid=vm["uuid"])
            assert avm.state == "ON"
            assert client.vm_machine(avm).ip == st.host("c6-a")["address"]
            for disk in vm["disks"]:
                assert tgt.checksum(disk["path"], "sha1") == disk["sha1"]
    assert rules_snapshot(st) == before
