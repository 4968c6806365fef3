"""Reports rendered from journals filled here, stage by stage, as the pipeline would fill them:
what an operator reads after the downtime window (every VM, where it went, how long it was down,
what moved, what failed and how it was kept safe), in HTML, Markdown and JSON.

The HTML page is also opened in a real headless browser (Debian's chromium): no console error,
the inline script ran, a screenshot is taken (also at 100 VMs)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import markupsafe
import pytest

from rehost.core import journal as journal_mod
from rehost.core.journal import Journal
from rehost.core.model import VM as VMRecord
from rehost.core.model import VM_STAGES, Disk
from rehost.core.pipeline import SAFE_POINTS
from rehost.reports.html import render_html
from rehost.reports.json_report import dumps, schema
from rehost.reports.markdown import render_markdown
from rehost.reports.model import REDACTED, build_report

REPO = Path(__file__).resolve().parent.parent
REPORTS_OUT = REPO / "reports-out"
MIB = 2**20
T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z
SECRET = "s3cr3t-Abiquo-pw"

# -- a journal filled as a campaign fills it ------------------------------------------------


class Clock:
    """time.time() for the journal: every stage takes a known number of seconds."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(journal_mod.time, "time", c)
    return c


STAGE_SECONDS = {"power_off": 5.0, "await_undeployed": 3.0, "deploy": 20.0, "transfer": 30.0,
                 "start": 10.0, "verify": 2.0}


def vm_record(i: int, label: str, source: str = "c5-a") -> VMRecord:
    uuid = f"00000000-0000-4000-8000-{i:012d}"
    return VMRecord(name=f"ABQ_{uuid}", uuid=uuid, label=label, source_host=source,
                    disks=[Disk(target="vda", source=f"/var/lib/virt/{label}.img",
                                format="raw")])


def stage_result(vm: VMRecord, stage: str, data_mib: int, target: str) -> dict[str, Any]:
    path = vm.disks[0].source or ""
    back = path + "_BACK"
    size, allocated, moved = 1024 * MIB, data_mib * MIB, data_mib * MIB
    if stage == "deploy":
        vm.target_host = target
        return {"host": target, "how": "abiquo"}
    if stage == "preserve_disks":
        return {"disks": [{"path": path, "backup": back, "size": size, "virtual_size": size,
                           "allocated": allocated,
                           "format": "raw", "checksum": f"sha1-of-{vm.label}",
                           "algorithm": "sha1"}], "untouched": []}
    if stage == "transfer":
        secs = STAGE_SECONDS["transfer"]
        return {"disks": [{"path": back, "bytes": moved, "size": size}], "bytes": moved,
                "seconds": secs, "rate_mib_s": round(moved / secs / MIB, 1), "strategy": "scp"}
    if stage == "verify":
        return {"ok": True, "host": target, "state": "running", "method": "checksum",
                "disks": [{"path": path, "size": size, "checksum": f"sha1-of-{vm.label}"}]}
    if stage == "cleanup":
        return {"deleted": [], "pending": [back], "host": vm.source_host}
    return {"stage": stage}


def run_vm(j: Journal, clock: Clock, vm: VMRecord, *, data_mib: int = 100,
           target: str = "c6-a", fail: str | None = None, error: str = "") -> None:
    done: list[str] = []
    for stage in VM_STAGES:
        j.record(vm, stage, "start")
        clock.tick(STAGE_SECONDS.get(stage, 0.5))
        if stage == fail:
            j.record(vm, stage, "error", {
                "error": error, "type": "RuntimeError", "done": done,
                "safe_point": SAFE_POINTS[done[-1]], "traceback": "Traceback ..."})
            j.set_status(vm.name, "failed", f"{stage}: {error}")
            return
        result = stage_result(vm, stage, data_mib, target)
        vm.facts[stage] = result
        j.record(vm, stage, "finish", result)
        done.append(stage)
    j.set_status(vm.name, "done")


def campaign(tmp: Path, clock: Clock, labels: list[str], *,
             fail: dict[str, tuple[str, str]] | None = None) -> Journal:
    """A whole campaign in a journal: fence, each VM (failing where ``fail`` says), unfence,
    report. VMs alternate between two source hosts when there are many."""
    j = Journal(tmp / "state")
    j.record(None, "preflight", "start")
    clock.tick(2)
    j.record(None, "preflight", "finish", {"ok": True})
    vms = [vm_record(i, label, "c5-a" if i % 2 == 0 or len(labels) < 10 else "c5-b")
           for i, label in enumerate(labels)]
    for i, vm in enumerate(vms):
        j.add_vm(vm, i)
    fenced = {"created": [{"machine": h, "cpu": 1, "ram": 1, "rel": "machine",
                           "url": f"http://abiquo.test/api/rules/{n}"}
                          for n, h in enumerate(sorted({v.source_host or "" for v in vms}))]}
    j.record(None, "fence", "start")
    clock.tick(1)
    j.record(None, "fence", "finish", fenced)
    j.set("fenced", fenced)
    for i, vm in enumerate(vms):
        stage, error = (fail or {}).get(vm.label, (None, ""))
        run_vm(j, clock, vm, data_mib=10 + i, fail=stage, error=error,
               target="c6-a" if i % 3 else "c6-b")
    j.record(None, "unfence", "start")
    clock.tick(1)
    j.record(None, "unfence", "finish", {"deleted": fenced["created"]})
    j.record(None, "report", "start")
    return j


def model(j: Journal, **kw: Any) -> dict[str, Any]:
    return build_report(j, campaign="dc1", storage="scp", allocation="loadlevel", now=T0, **kw)


@pytest.fixture
def success(tmp_path: Path, clock: Clock) -> Iterator[dict[str, Any]]:
    j = campaign(tmp_path, clock, ["web01", "db01", "mail01"])
    yield model(j, hosts={"c5-a": {"role": "source", "domains": []},
                          "c6-a": {"role": "target", "domains": None}})
    j.close()


@pytest.fixture
def with_failure(tmp_path: Path, clock: Clock) -> Iterator[dict[str, Any]]:
    j = campaign(tmp_path, clock, ["good", "bad"],
                 fail={"bad": ("transfer", f"the copy link broke (pw {SECRET})")})
    yield model(j, secrets=[SECRET], hosts={"c5-a": {"role": "source", "domains": []}})
    j.close()


def validate(report: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator(schema(),
                                    format_checker=jsonschema.FormatChecker()).validate(report)


# -- the model ---------------------------------------------------------------------------------


def test_a_successful_campaign_says_where_each_vm_went_and_how_long_it_was_down(
        success: dict[str, Any]) -> None:
    r = success
    assert r["outcome"] == "success"
    assert [v["label"] for v in r["vms"]] == ["web01", "db01", "mail01"]
    web = r["vms"][0]
    assert (web["source_host"], web["target_host"], web["outcome"]) == ("c5-a", "c6-b", "done")
    # power_off started .. start finished: power_off 5 s + undefine .5 + await 3 +
    # preserve .5 + deploy 20 + power_off_new .5 + transfer 30 + remove .5 + swap .5 + start 10
    assert web["downtime_seconds"] == 70.5
    assert web["still_down"] is False
    assert web["bytes_moved"] == 10 * MIB and web["rate_mib_s"] == round(10 / 30, 1)
    assert web["verified"] and web["checksum_verified"]
    assert web["disks"] == [{"path": "/var/lib/virt/web01.img",
                             "backup": "/var/lib/virt/web01.img_BACK", "format": "raw",
                             "size": 1024 * MIB, "virtual_size": 1024 * MIB,
                             "allocated": 10 * MIB,
                             "bytes_moved": 10 * MIB, "checksum": "sha1-of-web01",
                             "algorithm": "sha1", "checksum_verified": True,
                             # not the shared strategy: neither shared nor copied is said
                             "shared": None, "shared_why": None, "precopied": None,
                             "precopy_bytes": None, "precopy_note": None}]
    assert [s["stage"] for s in web["stages"]] == list(VM_STAGES)
    assert all(s["outcome"] == "done" and s["end"] for s in web["stages"])
    t = r["totals"]
    assert (t["vms"], t["done"], t["failed"], t["pending"]) == (3, 3, 0, 0)
    assert t["bytes_moved"] == (10 + 11 + 12) * MIB
    assert t["downtime_max_seconds"] == 70.5 and t["downtime_seconds"] == 211.5
    assert r["hosts_emptied"] == ["c5-a"]
    assert [b["path"] for b in r["backups_pending"]] == [
        f"/var/lib/virt/{n}.img_BACK" for n in ("web01", "db01", "mail01")]
    assert [(x["phase"], x["action"]) for x in r["rules"]] == [("fence", "created"),
                                                               ("unfence", "deleted")]
    assert "machine c5-a, cpu 1, ram 1" in r["rules"][0]["detail"]
    validate(r)


def test_a_failed_vm_says_its_stage_and_how_it_was_kept_safe(
        with_failure: dict[str, Any]) -> None:
    r = with_failure
    assert r["outcome"] == "failed"
    bad = next(v for v in r["vms"] if v["label"] == "bad")
    assert bad["outcome"] == "failed" and bad["failed_stage"] == "transfer"
    assert bad["safe_point"] == SAFE_POINTS["power_off_new"]
    assert bad["still_down"] and bad["downtime_seconds"] is None and bad["downtime_start"]
    assert bad["bytes_moved"] == 0 and not bad["verified"]
    assert bad["backups_pending"] == ["/var/lib/virt/bad.img_BACK"]
    assert [e["stage"] for e in bad["errors"]] == ["transfer"]
    assert r["failures"] == [{
        "vm": "bad", "name": bad["name"], "uuid": bad["uuid"], "stage": "transfer",
        "error": f"the copy link broke (pw {REDACTED})",
        "safe_point": SAFE_POINTS["power_off_new"], "source_host": "c5-a",
        "target_host": "c6-a"}]
    # the host still holds the failed VM's disks: not ready to reinstall
    assert r["hosts_emptied"] == []
    host = next(h for h in r["hosts"] if h["name"] == "c5-a")
    assert host["vms_left"] == ["bad"] and not host["emptied"]
    assert r["totals"]["still_down"] == 1
    validate(r)


def test_a_host_with_a_domain_left_is_not_emptied(tmp_path: Path, clock: Clock) -> None:
    j = campaign(tmp_path, clock, ["only"])
    r = model(j, hosts={"c5-a": {"role": "source", "domains": ["ABQ_not-in-campaign"]},
                        "c5-z": {"role": "source", "domains": []}})
    j.close()
    assert r["vms"][0]["outcome"] == "done"
    assert r["hosts_emptied"] == ["c5-z"]
    validate(r)


def test_an_empty_or_interrupted_campaign_still_reports(tmp_path: Path, clock: Clock) -> None:
    j = Journal(tmp_path / "empty")
    r = model(j)
    assert r["outcome"] == "incomplete" and r["vms"] == []
    validate(r)
    render_html(r)
    render_markdown(r)
    # killed in the middle of deploy: running, still down, rules not restored
    vm = vm_record(1, "cut")
    j.add_vm(vm, 0)
    for stage in VM_STAGES[:VM_STAGES.index("deploy") + 1]:
        j.record(vm, stage, "start")
        clock.tick(1)
        if stage != "deploy":
            j.record(vm, stage, "finish", stage_result(vm, stage, 1, "c6-a"))
    r = model(j)
    j.close()
    cut = r["vms"][0]
    assert cut["outcome"] == "running" and cut["still_down"]
    assert cut["stages"][-1]["outcome"] == "running" and cut["stages"][-1]["end"] is None
    assert r["outcome"] == "incomplete" and r["rules_restored"] is None
    validate(r)
    assert "not restored" in render_markdown(r)


# -- the formats -------------------------------------------------------------------------------


def test_markdown_lists_every_vm_hosts_downtime_bytes_and_the_failure(
        with_failure: dict[str, Any]) -> None:
    md = render_markdown(with_failure)
    assert "**1 of 2 VMs moved**, **1 failed**, **1 still down**" in md
    for v in with_failure["vms"]:
        assert v["label"] in md and v["uuid"] in md
    good = next(line for line in md.splitlines() if line.startswith("| good |"))
    assert "| c5-a | c6-b | done |" in good and "| 1 min 10 s |" in good
    assert "| 10.0 MiB |" in good
    bad = next(line for line in md.splitlines() if line.startswith("| bad |"))
    assert "| failed | transfer | still down since" in bad
    assert f"failed in stage `transfer`: the copy link broke (pw {REDACTED})" in md
    assert "Kept safe: " + SAFE_POINTS["power_off_new"] in md
    assert "## Hosts emptied\n\n- none" in md and "Still in use: c5-a (bad)" in md
    assert "`/var/lib/virt/bad.img_BACK`" in md
    assert SECRET not in md


def test_json_is_the_model_and_the_schema_is_documented(with_failure: dict[str, Any]) -> None:
    text = dumps(with_failure)
    assert json.loads(text) == with_failure
    validate(json.loads(text))
    # a field the schema does not know is an error: the schema and the reports stay in step
    broken = json.loads(text)
    broken["vms"][0]["surprise"] = 1
    with pytest.raises(jsonschema.ValidationError):
        validate(broken)
    # every field of the schema is described in docs/report-json.md
    docs = (REPO / "docs" / "report-json.md").read_text()
    s = schema()
    fields = set(s["properties"]) | {p for d in s["$defs"].values() for p in d["properties"]}
    missing = sorted(f for f in fields if f"`{f}`" not in docs)
    assert missing == [], f"fields not documented in docs/report-json.md: {missing}"


def test_html_is_self_contained_with_summary_timeline_and_tables(
        with_failure: dict[str, Any]) -> None:
    html = render_html(with_failure)
    # nothing loaded from anywhere: no src, no external href, no CSS url() or @import
    assert not re.search(r"\ssrc=|href=\"(?!#|data:)|url\(|@import", html)
    assert "default-src 'none'" in html
    summary = html[html.index('<section id="summary"'):html.index("</section>")]
    assert "1 of 2 VMs moved — 1 FAILED" in summary
    assert "<strong>bad</strong> failed in stage <code>transfer</code>" in summary
    assert str(markupsafe.escape(SAFE_POINTS["power_off_new"])) in summary
    svg = html[html.index("<svg"):html.index("</svg>")]
    # one bar per stage that ran: every stage for good, up to transfer for bad, 3 campaign
    # stages (the report stage writing this report is left out)
    assert svg.count("<rect x=") - svg.count('fill="#f8fafc"') - svg.count("downtime</title>") \
        - svg.count("still down</title>") == len(VM_STAGES) + VM_STAGES.index("transfer") + 1 + 3
    assert [s["stage"] for s in with_failure["campaign_stages"]] == [
        "preflight", "fence", "unfence"]
    assert "bad: transfer (failed, 30.0 s) — the copy link broke" in svg
    table = html[html.index('id="vm-table"'):]
    # failed VMs come first
    assert table.index(">bad</td>") < table.index(">good</td>")
    assert 'class="sortable"' in html and "data-sortable" in html
    assert SECRET not in html and REDACTED in html


def test_site_templates_override_or_extend_the_builtin_ones(
        tmp_path: Path, success: dict[str, Any]) -> None:
    site = tmp_path / "templates"
    site.mkdir()
    (site / "report.md.j2").write_text("Ticket for {{ r.campaign }}: {{ r.totals.done }} moved\n")
    (site / "report.html.j2").write_text(
        '{% extends "builtin/report.html.j2" %}'
        '{% block header %}<h1>ACME hosting — {{ r.campaign }}</h1>{% endblock %}')
    assert render_markdown(success, str(site)) == "Ticket for dc1: 3 moved\n"
    html = render_html(success, str(site))
    assert "<h1>ACME hosting — dc1</h1>" in html and "rehost report: dc1</h1>" not in html
    assert 'id="timeline-chart"' in html  # the rest of the built-in page is still there


def test_many_vms_keep_the_timeline_readable(tmp_path: Path, clock: Clock) -> None:
    labels = [f"vm{i:03d}" for i in range(100)]
    j = campaign(tmp_path, clock, labels, fail={"vm042": ("verify", "size differs")})
    r = model(j)
    j.close()
    validate(r)
    html = render_html(r)
    svg = html[html.index("<svg"):html.index("</svg>")]
    height = int(re.search(r'<svg[^>]* viewBox="0 0 \d+ (\d+)"', svg).group(1))  # type: ignore[union-attr]
    assert 1400 <= height <= 1600, "rows shrink to keep 100 VMs on about one screen"
    assert all(f">{label}</text>" in svg for label in labels)
    assert r["totals"]["failed"] == 1 and "vm042" in html[:html.index("<svg")]


SITE = """
[campaign]
name = "dc1"
state_dir = "state"

[abiquo]
url = "http://127.0.0.1:9/api"
user = "admin"
password_file = "abiquo.password"

[hosts.c5-a]
address = "198.18.250.10"
role = "source"
uri = "test://{empty}"

[hosts.c5-b]
address = "198.18.250.11"
role = "source"
uri = "test:///default"

[hosts.c6-a]
address = "198.18.250.12"
role = "target"

[storage]
strategy = "scp"

[allocation]
strategy = "loadlevel"
"""


def test_rehost_report_writes_every_format_from_the_journal(tmp_path: Path,
                                                            clock: Clock) -> None:
    """`rehost report` through the real command line and the built-in reporter plugins. The
    source hosts are libvirt's test driver: c5-a has no domain left, c5-b still has one."""
    from tests.campaign_helpers import rehost

    empty = tmp_path / "empty-node.xml"
    empty.write_text("<node></node>")
    (tmp_path / "site.toml").write_text(SITE.format(empty=empty))
    (tmp_path / "abiquo.password").write_text(SECRET + "\n")
    j = Journal(tmp_path / "state")
    j.record(None, "preflight", "start")  # an earlier try, refused with the password in it
    j.record(None, "preflight", "error", {"error": f"login admin:{SECRET} refused"})
    j.close()
    campaign(tmp_path, clock, ["web01", "db01"]).close()

    out = tmp_path / "out"
    res = rehost("report", "-c", str(tmp_path / "site.toml"), "-o", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    written = sorted(Path(p).name for p in res.stdout.split())
    assert written == ["report.html", "report.json", "report.md"]
    data = json.loads((out / "report.json").read_text())
    validate(data)
    assert [v["label"] for v in data["vms"]] == ["web01", "db01"]
    hosts = {h["name"]: h for h in data["hosts"]}
    assert hosts["c5-a"]["domains_left"] == [] and hosts["c5-a"]["emptied"]
    assert hosts["c5-b"]["domains_left"] == ["test"] and not hosts["c5-b"]["emptied"]
    assert data["hosts_emptied"] == ["c5-a"]
    assert data["campaign_errors"][0]["error"] == f"login admin:{REDACTED} refused"
    md = (out / "report.md").read_text()
    assert "- c5-a: no VM left to move; ready to reinstall as CentOS 6 once its 2 backup(s)" in md
    assert "Still in use: c5-b (test)" in md
    for f in out.iterdir():
        assert SECRET not in f.read_text(), f"the password is in {f.name}"

    only = tmp_path / "only-json"
    res = rehost("report", "-c", str(tmp_path / "site.toml"), "--format", "json",
                 "-o", str(only))
    assert res.returncode == 0, res.stdout + res.stderr
    assert [p.name for p in only.iterdir()] == ["report.json"]


def test_a_plugin_brings_report_templates_and_the_site_dir_still_wins(
        tmp_path: Path, clock: Clock) -> None:
    """A site plugin file (named in the site config) gives a template directory through
    rehost_report_template_dirs; `rehost report` uses it, and the site's own template_dir is
    looked up before it."""
    from tests.campaign_helpers import rehost

    empty = tmp_path / "empty-node.xml"
    empty.write_text("<node></node>")
    plugin_templates = tmp_path / "plugin-templates"
    plugin_templates.mkdir()
    (plugin_templates / "report.html.j2").write_text(
        '{% extends "builtin/report.html.j2" %}'
        '{% block header %}<h1>Plugin header for {{ r.campaign }}</h1>{% endblock %}')
    (plugin_templates / "report.md.j2").write_text("plugin markdown\n")
    plugin = tmp_path / "acme_templates.py"
    plugin.write_text(
        "from rehost.hooks import hookimpl\n\n"
        "@hookimpl\n"
        "def rehost_report_template_dirs(ctx):\n"
        f"    return [{str(plugin_templates)!r}]\n")
    site_templates = tmp_path / "site-templates"
    site_templates.mkdir()
    (site_templates / "report.md.j2").write_text(
        "Site ticket for {{ r.campaign }}: {{ r.vms | length }} VMs\n")
    (tmp_path / "site.toml").write_text(
        SITE.format(empty=empty)
        + f'\n[plugins]\nfiles = [{str(plugin)!r}]\n'
        + f'\n[report]\ntemplate_dir = {str(site_templates)!r}\n')
    (tmp_path / "abiquo.password").write_text(SECRET + "\n")
    campaign(tmp_path, clock, ["web01", "db01"]).close()

    out = tmp_path / "out"
    res = rehost("report", "-c", str(tmp_path / "site.toml"), "-o", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    html = (out / "report.html").read_text()
    assert "<h1>Plugin header for dc1</h1>" in html and 'id="timeline-chart"' in html
    assert (out / "report.md").read_text() == "Site ticket for dc1: 2 VMs\n"


# -- a real browser ----------------------------------------------------------------------------


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def open_in_browser(html: Path, screenshot: Path | None = None,
                    size: str = "1400,2000") -> tuple[str, list[str]]:
    """Open a page in headless chromium: the DOM after its scripts ran, and every console
    message (a report's page writes none: any message is an error, a blocked load included)."""
    binary = chromium_binary()
    assert binary is not None
    profile = tempfile.mkdtemp(prefix="rehost-chromium-")
    base = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}",
            "--enable-logging=stderr", "--v=0", f"--window-size={size}"]
    try:
        dom = subprocess.run([*base, "--dump-dom", html.as_uri()], capture_output=True,
                             text=True, timeout=120, check=True)
        console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
        if screenshot is not None:
            shot = subprocess.run([*base, f"--screenshot={screenshot}", html.as_uri()],
                                  capture_output=True, text=True, timeout=120, check=True)
            console += [line for line in shot.stderr.splitlines() if ":CONSOLE" in line]
        return dom.stdout, console
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def keep_screenshot(png: Path) -> None:
    """The latest screenshots also land in reports-out/ (gitignored), to look at."""
    REPORTS_OUT.mkdir(exist_ok=True)
    shutil.copy(png, REPORTS_OUT / png.name)


def png_size(png: Path) -> tuple[int, int]:
    head = png.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{png} is not a PNG"
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


NO_CHROMIUM = "chromium is not installed (dev.sh installs it: apt-get install chromium)"
needs_chromium = pytest.mark.skipif(
    chromium_binary() is None and os.environ.get("CI") is None, reason=NO_CHROMIUM)


def chromium_or_skip() -> None:
    """Skip when there is no browser to check with (never in CI, where dev.sh installs it)."""
    if chromium_binary() is None and os.environ.get("CI") is None:
        pytest.skip(NO_CHROMIUM)


@needs_chromium
def test_the_browser_check_catches_a_broken_page(tmp_path: Path) -> None:
    """The check below is not vacuous: a script error and a blocked external load show."""
    page = tmp_path / "broken.html"
    page.write_text(render_html(build_report(Journal(tmp_path / "s"), campaign="x",
                                             storage="scp", allocation="halt"))
                    .replace("</body>", '<img src="https://example.invalid/x.png">'
                                        "<script>notDefined();</script></body>"))
    _, console = open_in_browser(page)
    text = "\n".join(console)
    assert "Uncaught ReferenceError: notDefined" in text
    assert "Content Security Policy" in text


@needs_chromium
def test_html_renders_in_a_browser_at_100_vms_without_errors(
        tmp_path: Path, clock: Clock) -> None:
    labels = [f"customer-{i:03d}.example" for i in range(100)]
    j = campaign(tmp_path, clock, labels,
                 fail={"customer-042.example": ("transfer", "the copy link broke")})
    r = model(j)
    j.close()
    page = tmp_path / "report.html"
    # click the "moved" column header once the page is up: the smallest transfer comes first
    page.write_text(render_html(r).replace("</body>", """<script>
      var th = Array.prototype.filter.call(document.querySelectorAll('#vm-table th'),
        function (h) { return h.textContent.trim() === 'moved'; })[0];
      th.click();
      document.documentElement.setAttribute('data-first-row',
        document.querySelector('#vm-table tbody tr').id);
    </script></body>"""))
    png = tmp_path / "report-100-vms.png"
    dom, console = open_in_browser(page, png, "1400,2400")
    assert console == []
    assert 'data-sortable="ready"' in dom
    # the failed VM moved 0 bytes: sorted ascending, it comes first
    failed = next(v for v in r["vms"] if v["outcome"] == "failed")
    assert f'data-first-row="vm-{failed["name"]}"' in dom
    assert 'aria-sort="ascending"' in dom
    assert png_size(png) == (1400, 2400)
    assert png.stat().st_size > 50_000, "the screenshot looks blank"
    keep_screenshot(png)


def test_markdown_shows_a_hostile_name_as_text(tmp_path: Path, clock: Clock) -> None:
    """A VM named with HTML and a table separator stays text in the Markdown report (where
    raw HTML would be rendered), and keeps the table's shape."""
    hostile = "<img src=x onerror=alert(1)>|x"
    j = campaign(tmp_path, clock, [hostile], fail={hostile: ("transfer", "<b>boom</b>\nline")})
    try:
        md = render_markdown(model(j))
    finally:
        j.close()
    assert "<img" not in md and "<b>" not in md
    assert "&lt;img src=x onerror=alert(1)&gt;\\|x" in md
    row = next(line for line in md.splitlines() if line.startswith("| &lt;img"))
    assert row.count(" | ") == md.splitlines()[
        md.splitlines().index(row) - 2].count(" | ")  # as many cells as the header


def test_a_vm_killed_in_start_then_rolled_back_is_reported_up_again(tmp_path: Path,
                                                                    clock: Clock) -> None:
    """The run died while the VM started on its target (the stage never ended); the operator
    rolled it back. Its downtime ends with the rollback, in every format."""
    j = campaign(tmp_path, clock, ["web01"])
    vm = vm_record(0, "victim")
    j.add_vm(vm, 1)
    for stage in VM_STAGES[:VM_STAGES.index("start")]:
        j.record(vm, stage, "start")
        clock.tick(1)
        j.record(vm, stage, "finish", stage_result(vm, stage, 10, "c6-a"))
    j.record(vm, "start", "start")  # killed here
    clock.tick(30)
    j.record(vm, "rollback", "start")
    clock.tick(20)
    j.record(vm, "rollback", "finish", {"host": "c5-a", "steps": ["put back"]})
    j.set_status(vm.name, "rolled_back")
    try:
        report = model(j)
    finally:
        j.close()
    victim = next(v for v in report["vms"] if v["label"] == "victim")
    assert (victim["outcome"], victim["still_down"]) == ("rolled_back", False)
    assert victim["downtime_seconds"] == 59.0  # power_off started ... rollback ended
    html = render_html(report)
    assert "victim" in html
