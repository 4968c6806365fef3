"""Reports of real campaigns in the rehearsal lab, through the real command line: one where
every VM moves, one where a site plugin breaks the transfer of one VM. What the operator reads
afterwards, in all three formats: every VM, its hosts, its downtime, the bytes moved, the
failure and its stage, the hosts ready to reinstall; the HTML page opened in a real browser;
the JSON checked against its schema; the Abiquo password nowhere."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from rehost.lab.lab import LabState
from rehost.reports.json_report import schema
from tests.campaign_helpers import SMALL_LAB, add_to_site_config, rehost
from tests.test_campaign_lab import FAILING_PLUGIN
from tests.test_reports import chromium_or_skip, keep_screenshot, open_in_browser, png_size

pytestmark = [pytest.mark.lab, pytest.mark.slow]

MIB = 2**20

TWO_HOSTS_LAB = """
[lab]
name = "reports"

[[hosts]]
name = "c5-a"
os = "centos-5.11"

[[hosts]]
name = "c5-b"
os = "centos-5.11"

[[hosts]]
name = "c6-a"
os = "centos-6.4"

[[vms]]
name = "web01"
host = "c5-a"
disks = [{ size_mib = 64, format = "raw", data_mib = 4 },
         { size_mib = 32, format = "qcow2", data_mib = 2 }]

[[vms]]
name = "db01"
host = "c5-b"
disks = [{ size_mib = 32, format = "raw", data_mib = 3 }]
"""

DATA_MIB = {"web01": 6, "db01": 3}  # what the VMs' disks hold, as described above


def reports(outdir: Path) -> tuple[str, str, dict[str, Any]]:
    html = (outdir / "report.html").read_text()
    md = (outdir / "report.md").read_text()
    data = json.loads((outdir / "report.json").read_text())
    jsonschema.Draft202012Validator(schema(),
                                    format_checker=jsonschema.FormatChecker()).validate(data)
    return html, md, data


def assert_no_secret(st: LabState, *dirs: Path) -> None:
    password = Path(st.data["emulator"]["password_file"]).read_text().strip()
    assert len(password) >= 6
    files = [f for d in dirs for f in d.rglob("*") if f.is_file()]
    assert files
    for f in files:
        assert password not in f.read_text(errors="replace"), f"the password is in {f}"


def md_row(md: str, label: str) -> str:
    return next(line for line in md.splitlines() if line.startswith(f"| {label} |"))


def browser_check(page: Path, shot: Path) -> str:
    """Last in a test: the content is checked already when a missing browser skips it."""
    chromium_or_skip()
    dom, console = open_in_browser(page, shot)
    assert console == [], f"{page} logs to the browser console: {console}"
    assert 'data-sortable="ready"' in dom
    assert png_size(shot) == (1400, 2000)
    keep_screenshot(shot)
    return dom


def test_reports_of_a_campaign_where_every_vm_moved(make_lab, tmp_path: Path) -> None:
    st = make_lab(TWO_HOSTS_LAB)
    res = rehost("run", "-c", str(st.site_config))
    assert res.returncode == 0, res.stdout + res.stderr
    outdir = st.root / "reports"
    for name in ("report.html", "report.md", "report.json"):
        assert f"report: {outdir / name}" in res.stdout
    html, md, data = reports(outdir)

    assert data["outcome"] == "success" and data["totals"]["done"] == 2
    vms = {v["label"]: v for v in data["vms"]}
    assert set(vms) == {"web01", "db01"}
    for lab_vm in st.data["vms"]:
        v = vms[lab_vm["name"]]
        assert v["uuid"] == lab_vm["uuid"]
        assert (v["source_host"], v["target_host"]) == (lab_vm["host"], "c6-a")
        assert v["downtime_seconds"] > 0 and not v["still_down"]
        assert v["verified"] and v["checksum_verified"]
        assert v["bytes_moved"] >= DATA_MIB[lab_vm["name"]] * MIB
        assert [d["path"] for d in v["disks"]] == [d["path"] for d in lab_vm["disks"]]
        for got, disk in zip(v["disks"], lab_vm["disks"], strict=True):
            assert got["format"] == disk["format"] and got["allocated"] > 0
            if disk["format"] == "raw":  # a qcow2 file is smaller than its virtual size
                assert got["size"] == disk["size"]
        assert all(d["checksum_verified"] for d in v["disks"])
        assert v["backups_pending"] == [d["path"] + "_BACK" for d in lab_vm["disks"]]
        # the same facts in the ticket and on the page
        row = md_row(md, lab_vm["name"])
        assert f"| {lab_vm['host']} | c6-a | done |" in row and lab_vm["uuid"] in row
        assert f"<td>{lab_vm['name']}</td><td class=\"mono\">{lab_vm['uuid']}</td>" in html
    assert data["totals"]["bytes_moved"] == sum(v["bytes_moved"] for v in vms.values())
    # both CentOS 5 hosts hold nothing but the backups now
    assert data["hosts_emptied"] == ["c5-a", "c5-b"]
    assert all(h["checked"] and h["domains_left"] == [] for h in data["hosts"]
               if h["role"] == "source")
    assert "c5-a: no VM left to move; ready to reinstall as CentOS 6 once its 2 backup(s)" in md
    assert "All 2 VMs moved." in html
    assert {r["phase"] for r in data["rules"]} == {"fence", "unfence"}
    assert data["rules_restored"] is not None

    # `rehost report` writes the asked format again, from the journal, where it is told
    again = tmp_path / "again"
    res = rehost("report", "-c", str(st.site_config), "--format", "html", "-o", str(again))
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.split() == [str(again / "report.html")]
    assert sorted(p.name for p in again.iterdir()) == ["report.html"]
    assert "All 2 VMs moved." in (again / "report.html").read_text()
    assert_no_secret(st, outdir, again)
    browser_check(again / "report.html", tmp_path / "report-lab-success.png")


def test_reports_of_a_campaign_with_a_failed_vm(make_lab, tmp_path: Path) -> None:
    st = make_lab(SMALL_LAB)
    plugin = tmp_path / "breaker.py"
    plugin.write_text(FAILING_PLUGIN)
    add_to_site_config(st, f'[plugins]\nfiles = ["{plugin}"]')
    res = rehost("run", "-c", str(st.site_config))
    assert res.returncode == 1, res.stdout + res.stderr
    outdir = st.root / "reports"
    html, md, data = reports(outdir)  # written although a VM failed

    assert data["outcome"] == "failed"
    assert (data["totals"]["done"], data["totals"]["failed"]) == (1, 1)
    good, bad = (next(v for v in data["vms"] if v["label"] == n) for n in ("good", "bad"))
    assert good["outcome"] == "done" and good["target_host"] == "c6-a"
    assert good["downtime_seconds"] > 0 and good["bytes_moved"] >= 4 * MIB
    assert bad["outcome"] == "failed" and bad["failed_stage"] == "transfer"
    assert bad["still_down"] and bad["downtime_seconds"] is None
    assert bad["bytes_moved"] == 0
    assert bad["backups_pending"] == [st.vm("bad")["disks"][0]["path"] + "_BACK"]
    [failure] = data["failures"]
    assert failure["stage"] == "transfer"
    assert "injected: the copy link broke" in failure["error"]
    assert "kept under their backup names on the source host" in failure["safe_point"]
    stages = {s["stage"]: s for s in bad["stages"]}
    assert stages["transfer"]["outcome"] == "failed"
    assert "cleanup" not in stages, "no stage after the failure ran"
    # c5-a still holds the failed VM's only good disk: not ready to reinstall
    assert data["hosts_emptied"] == []

    assert "failed in stage `transfer`: injected: the copy link broke" in md
    assert "Kept safe: " in md and "kept under their backup names on the source host" in md
    assert "still down since" in md_row(md, "bad")
    assert "| c5-a | c6-a | done |" in md_row(md, "good")
    assert "1 of 2 VMs moved — 1 FAILED" in html
    assert "<strong>bad</strong> failed in stage <code>transfer</code>" in html
    assert_no_secret(st, outdir)
    browser_check(outdir / "report.html", tmp_path / "report-lab-failed.png")
