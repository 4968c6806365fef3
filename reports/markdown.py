"""The Markdown report (pastes into a ticket), from the journal through jinja2."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rehost.hooks import hookimpl
from rehost.reports.collect import campaign_report
from rehost.reports.render import render, write

if TYPE_CHECKING:
    from rehost.core.campaign import Campaign

__all__ = ["campaign_report", "rehost_report"]


@hookimpl
def rehost_report(ctx: Campaign, outdir: str, formats: list[str]) -> list[str]:
    if "md" not in formats:
        return []
    text = render("report.md.j2", campaign_report(ctx), ctx.config.report.template_dir)
    return [write(Path(outdir) / "report.md", text)]
