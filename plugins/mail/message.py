"""The mails: their texts from jinja2 templates, and the messages built from them.

A template renders one mail: a first line ``Subject: ...``, then the body. Templates are
looked up in the site's folder (``templates`` in ``[plugins.mail]``) first, then among the
built-in ones (this package's ``templates/``): ``EVENT.txt.j2`` for each event, and
``base.txt.j2`` which they extend. A site template may replace a built-in one, or extend it
and override its blocks: ``{% extends "builtin/downtime_start.txt.j2" %}``.

Every value a template shows is one line of text: line breaks and other control characters in
a VM's name, a user's name or an error become spaces. So a VM named ``a\\nBcc: x@y`` cannot
add a header, and the subject is always one line. The headers are built by the standard
library's ``email`` package, which quotes display names and encodes what is not ASCII;
the addresses themselves were checked before (:func:`~.settings.valid_address`).
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import jinja2

from rehost.plugins.mail.owners import Owner
from rehost.plugins.mail.settings import MailSettings

BUILTIN = Path(__file__).parent / "templates"
#: a subject longer than this is cut (RFC 5322 lines are 998 characters at most)
SUBJECT_MAX = 200


class TemplateProblem(Exception):
    """A template that does not render a mail."""


def one_line(value: Any) -> Any:
    """A value as one line of text: control characters (line breaks included) and Unicode's
    line and paragraph separators become spaces."""
    if not isinstance(value, str):
        return value
    return "".join(" " if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c
                   for c in value)


class Templates:
    def __init__(self, folder: str | None = None) -> None:
        builtin = jinja2.FileSystemLoader(str(BUILTIN))
        loaders: list[jinja2.BaseLoader] = []
        if folder:
            loaders.append(jinja2.FileSystemLoader(folder))
        loaders += [builtin, jinja2.PrefixLoader({"builtin": builtin})]
        self.env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(loaders),
            autoescape=False,  # noqa: S701 -- text/plain: shown as text, never as markup
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            finalize=one_line,
        )

    def render(self, event: str, context: dict[str, Any]) -> tuple[str, str]:
        """The subject and body of ``event``'s mail."""
        name = f"{event}.txt.j2"
        try:
            text = self.env.get_template(name).render(**context)
        except jinja2.TemplateError as exc:
            raise TemplateProblem(f"template {name}: {exc}") from exc
        head, _, body = text.lstrip("\n").partition("\n")
        if not head.lower().startswith("subject:"):
            raise TemplateProblem(f"template {name}: its first line must be 'Subject: ...'")
        subject = one_line(head[len("subject:"):]).strip()
        if not subject:
            raise TemplateProblem(f"template {name}: the subject is empty")
        if len(subject) > SUBJECT_MAX:
            subject = subject[:SUBJECT_MAX - 1] + "…"
        return subject, body.strip("\n") + "\n"


def sample_context(settings: MailSettings, campaign: str) -> dict[str, Any]:
    """What the templates see, with made-up values: the preflight renders every template
    with it, so that a broken site template is found before any VM moves."""
    return context(settings, campaign, "announced",
                   {"name": "ABQ_0000", "label": "sample-vm", "uuid": "0000",
                    "source_host": "old-host", "target_host": "new-host"},
                   Owner("someone@example.com", "Some One", "someone", "Sample", "sample"),
                   via="start", stage="transfer", error="sample error",
                   safe_point="the user's disks are kept under their backup names")


def context(settings: MailSettings, campaign: str, event: str, vm: dict[str, Any],
            owner: Owner, **more: Any) -> dict[str, Any]:
    """The variables of a template (documented in docs/plugin-guide.md)."""
    now = dt.datetime.now(dt.UTC)
    return {
        "event": event,
        "campaign": campaign,
        "vm": vm,
        "owner": owner.to_dict(),
        "enterprise": owner.enterprise,
        "window": settings.window,
        "contact": settings.contact,
        "vars": dict(settings.vars),
        "now": now.strftime("%Y-%m-%d %H:%M UTC"),
        "via": more.get("via") or "",
        "stage": more.get("stage") or "",
        "error": more.get("error") or "",
        "safe_point": more.get("safe_point") or "",
    }


def build(settings: MailSettings, owner: Owner, subject: str, body: str, *, event: str,
          vm_uuid: str) -> EmailMessage:
    """One mail to one owner. The envelope's recipient is given to SMTP apart from the
    headers (:mod:`.smtp`): what a header says never decides where a mail goes."""
    assert settings.sender is not None
    msg = EmailMessage(policy=SMTP)
    msg["From"] = Address(display_name=one_line(settings.sender_name).strip(),
                          addr_spec=settings.sender)
    msg["To"] = Address(display_name=one_line(owner.name).strip(), addr_spec=owner.email)
    if settings.reply_to:
        msg["Reply-To"] = Address(addr_spec=settings.reply_to)
    msg["Subject"] = one_line(subject)
    msg["Date"] = format_datetime(dt.datetime.now(dt.UTC))
    msg["Message-ID"] = make_msgid("rehost", domain=settings.sender.rpartition("@")[2])
    # RFC 3834: no out-of-office answers, no loops
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Rehost-Event"] = event
    msg["X-Rehost-VM"] = one_line(vm_uuid)
    msg.set_content(body)
    return msg
