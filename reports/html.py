"""The HTML report: one self-contained page (inline CSS, an inline SVG timeline, a small inline
script that makes the tables sortable; no external asset of any kind), from the journal through
jinja2. The page's Content-Security-Policy forbids loading anything, so a template that tried
would show an error in the browser rather than quietly phone out."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rehost.hooks import hookimpl
from rehost.reports.collect import campaign_report
from rehost.reports.render import TemplateDirs, render, template_dirs, write

if TYPE_CHECKING:
    from rehost.api import Context

#: Stages grouped by what they do to the VM, one colour per group in the timeline.
PHASES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("prepare", "#94a3b8", ("locate", "backup_xml", "backup_disks", "precopy", "notify")),
    ("power off", "#fb923c", ("power_off", "undefine", "await_undeployed")),
    ("redeploy", "#a78bfa", ("deploy", "power_off_new")),
    ("disks", "#3b82f6", ("preserve_disks", "transfer", "remove_new_disks", "swap_disks")),
    ("start", "#22c55e", ("start", "verify")),
    ("cleanup", "#14b8a6", ("cleanup",)),
    ("campaign", "#64748b", ("preflight", "fence", "unfence", "report")),
)
FAILED_COLOUR = "#dc2626"
RUNNING_COLOUR = "#facc15"
_COLOUR = {stage: colour for _, colour, stages in PHASES for stage in stages}

LABEL_WIDTH = 190
PLOT_WIDTH = 900
AXIS_HEIGHT = 28
_STEPS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200,
          10800, 21600, 43200, 86400)


def _tick_label(s: float, step: float) -> str:
    if step < 1:
        return f"{s:.1f}s"
    if step < 60:
        return f"{s:.0f}s" if s < 60 else f"{int(s // 60)}:{int(s % 60):02d}"
    if step < 3600:
        return f"{int(s // 60)}m"
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}"


def _stage_title(who: str, s: dict[str, Any]) -> str:
    took = "not finished" if s["seconds"] is None else f"{s['seconds']:.1f} s"
    text = f"{who}: {s['stage']} ({s['outcome']}, {took})"
    return text + (f" — {s['error']}" if s.get("error") else "")


def timeline(report: dict[str, Any]) -> dict[str, Any]:
    """The geometry of the timeline chart: one row per VM (and one for the campaign's own
    stages), one bar per stage on a shared time axis, the downtime as a line under the bars.
    Rows get thinner as VMs get more numerous, so 100 VMs stay one readable page."""
    rows_src: list[tuple[str, str, str, list[dict[str, Any]], dict[str, Any] | None]] = [
        ("campaign", "", "campaign", report["campaign_stages"], None)]
    rows_src += [(v["label"], v["name"], v["outcome"], v["stages"], v) for v in report["vms"]]
    starts = [s["start_ts"] for _, _, _, st, _ in rows_src for s in st if s["start_ts"]]
    ends = [s["end_ts"] or s["start_ts"] for _, _, _, st, _ in rows_src for s in st
            if s["start_ts"]]
    t0 = min(starts) if starts else 0.0
    t1 = max(ends) if ends else t0
    span = max(t1 - t0, 0.001)
    step = next((s for s in _STEPS if span / s <= 10), _STEPS[-1])
    n = len(rows_src)
    row_h = 22 if n <= 30 else 16 if n <= 80 else 14
    bar_h = row_h - 6

    def x(ts: float) -> float:
        return round(LABEL_WIDTH + (ts - t0) / span * PLOT_WIDTH, 2)

    rows = []
    for i, (label, name, outcome, stages, vm) in enumerate(rows_src):
        y = AXIS_HEIGHT + i * row_h
        bars = []
        for s in stages:
            if not s["start_ts"]:
                continue
            end = s["end_ts"] if s["end_ts"] is not None else t1
            colour = {"failed": FAILED_COLOUR, "running": RUNNING_COLOUR}.get(
                s["outcome"], _COLOUR.get(s["stage"], "#64748b"))
            bars.append({"x": x(s["start_ts"]),
                         "w": round(max((end - s["start_ts"]) / span * PLOT_WIDTH, 1.5), 2),
                         "colour": colour, "failed": s["outcome"] == "failed",
                         "title": _stage_title(label, s)})
        down = None
        if vm is not None and vm["downtime_start"]:
            first = next((s for s in stages if s["stage"] == "power_off"), None)
            # the downtime ends when the VM runs again: started on its target, or rolled back
            ends_at = [s["end_ts"] for s in stages
                       if s["stage"] in ("start", "rollback") and s["outcome"] == "done"]
            if first and first["start_ts"]:
                end_ts = ends_at[-1] if ends_at and not vm["still_down"] else t1
                down = {"x": x(first["start_ts"]),
                        "w": round(max((end_ts - first["start_ts"]) / span * PLOT_WIDTH, 1), 2),
                        "still": vm["still_down"]}
        rows.append({"y": y, "label": label if len(label) <= 26 else label[:25] + "…",
                     "full": label, "anchor": f"vm-{name}" if name else "", "outcome": outcome,
                     "bars": bars, "down": down, "stripe": i % 2 == 1})
    height = AXIS_HEIGHT + n * row_h + 8
    ticks = []
    k = 0
    while k * step <= span + 1e-9:
        ticks.append({"x": x(t0 + k * step), "label": _tick_label(k * step, step)})
        k += 1
    return {"width": LABEL_WIDTH + PLOT_WIDTH + 20, "height": height, "row_h": row_h,
            "bar_h": bar_h, "label_width": LABEL_WIDTH, "plot_width": PLOT_WIDTH,
            "axis": AXIS_HEIGHT, "ticks": ticks, "rows": rows,
            "font": 12 if row_h >= 20 else 11,
            "legend": [(name, colour) for name, colour, _ in PHASES] + [
                ("failed", FAILED_COLOUR), ("did not finish", RUNNING_COLOUR)]}


def render_html(report: dict[str, Any], template_dir: TemplateDirs = None) -> str:
    return render("report.html.j2", report, template_dir, t=timeline(report))


@hookimpl
def rehost_report(ctx: Context, outdir: str, formats: list[str]) -> list[str]:
    if "html" not in formats:
        return []
    text = render_html(campaign_report(ctx), template_dirs(ctx))
    return [write(Path(outdir) / "report.html", text)]


@hookimpl
def rehost_report_formats() -> list[str]:
    return ["html"]
