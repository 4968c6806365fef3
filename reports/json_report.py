"""The JSON report (for other tools): the report model as it is, with a stable, documented
schema (``reports/schema/report.schema.json``, described field by field in
``docs/report-json.md``). A field is only ever added; one removed or changed in meaning raises
``schema_version``."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rehost.hooks import hookimpl
from rehost.reports.collect import campaign_report
from rehost.reports.render import write

if TYPE_CHECKING:
    from rehost.api import Context

SCHEMA_FILE = "report.schema.json"


def schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) every JSON report validates against."""
    text = resources.files("rehost.reports").joinpath("schema", SCHEMA_FILE).read_text()
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def dumps(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, ensure_ascii=False) + "\n"


@hookimpl
def rehost_report(ctx: Context, outdir: str, formats: list[str]) -> list[str]:
    if "json" not in formats:
        return []
    return [write(Path(outdir) / "report.json", dumps(campaign_report(ctx)))]


@hookimpl
def rehost_report_formats() -> list[str]:
    return ["json"]
