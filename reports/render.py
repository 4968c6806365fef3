"""Rendering reports with jinja2: the templates under reports/templates, or a site's own
(``report.template_dir`` in the site config, looked up first, then the directories plugins
give through ``rehost_report_template_dirs``).

A site template may replace a built-in one outright (same name), or extend it and override
its blocks: ``{% extends "builtin/report.html.j2" %}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2

if TYPE_CHECKING:
    from rehost.api import Context


def filesize(n: Any) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def seconds(n: Any) -> str:
    if n is None:
        return "-"
    s = float(n)
    if s < 60:
        return f"{s:.1f} s"
    m, s = divmod(round(s), 60)
    if m < 60:
        return f"{m} min {s:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


def rate(n: Any) -> str:
    return "-" if n is None else f"{float(n):.1f} MiB/s"


def clock(iso: Any) -> str:
    """The time of day of an ISO timestamp (``2024-05-01T10:02:03+00:00`` -> ``10:02:03``)."""
    if not iso:
        return "-"
    text = str(iso)
    return text[11:19] if len(text) >= 19 else text


TemplateDirs = str | Sequence[str] | None


def template_dirs(ctx: Context) -> list[str]:
    """Where a campaign's report templates are looked up before the built-in ones: the site
    config's ``report.template_dir``, then every plugin's ``rehost_report_template_dirs``."""
    dirs = [ctx.config.report.template_dir] if ctx.config.report.template_dir else []
    for answer in ctx.hooks.report_template_dirs(ctx):
        dirs.extend(str(d) for d in answer or [])
    return dirs


def markdown_text(value: Any) -> Any:
    """A value as Markdown text: data, never markup. A VM's name or an error message may hold
    ``<script>`` or ``|``; Markdown would pass the one through as HTML and break a table on
    the other. Newlines would end a table row."""
    if not isinstance(value, str):
        return value
    text = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def environment(template_dir: TemplateDirs = None, *, markdown: bool = False
                ) -> jinja2.Environment:
    builtin = jinja2.PackageLoader("rehost.reports", "templates")
    loaders: list[jinja2.BaseLoader] = []
    dirs = [template_dir] if isinstance(template_dir, str) else list(template_dir or [])
    if dirs:
        loaders.append(jinja2.FileSystemLoader(dirs))
    loaders += [builtin, jinja2.PrefixLoader({"builtin": builtin})]
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=jinja2.select_autoescape(["html", "html.j2"]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        finalize=markdown_text if markdown else None,
    )
    env.filters["filesize"] = filesize
    env.filters["seconds"] = seconds
    env.filters["rate"] = rate
    env.filters["clock"] = clock
    return env


def render(name: str, report: dict[str, Any], template_dir: TemplateDirs = None,
           **extra: Any) -> str:
    env = environment(template_dir, markdown=name.endswith(".md.j2"))
    return env.get_template(name).render(r=report, **extra)


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return str(path)
