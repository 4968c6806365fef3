"""The Markdown report (pastes into a ticket), from the journal through jinja2."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rehost.hooks import hookimpl
from rehost.reports.collect import campaign_report
from rehost.reports.render import TemplateDirs, render, template_dirs, write

if TYPE_CHECKING:
    from rehost.api import Context

__all__ = ["campaign_report", "rehost_report", "render_markdown"]


def render_markdown(report: dict[str, Any], template_dir: TemplateDirs = None) -> str:
    """The Markdown text, blank lines left by the template's conditionals folded away."""
    text = render("report.md.j2", report, template_dir)
    return re.sub(r"\n{3,}", "\n\n", text).rstrip("\n") + "\n"


@hookimpl
def rehost_report(ctx: Context, outdir: str, formats: list[str]) -> list[str]:
    if "md" not in formats:
        return []
    text = render_markdown(campaign_report(ctx), template_dirs(ctx))
    return [write(Path(outdir) / "report.md", text)]


@hookimpl
def rehost_report_formats() -> list[str]:
    return ["md"]
