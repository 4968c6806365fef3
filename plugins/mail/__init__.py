"""``mail``: tell each VM's owners by e-mail when their VM's move is announced, when it goes
down, when it runs again, and when its move stops.

The events (``events`` in ``[plugins.mail]`` chooses among them), and what sends each:

- ``announced``: the campaign starts moving VMs (``rehost_campaign_start``), for each VM not
  yet taken down;
- ``downtime_start``: the VM's ``power_off`` stage starts (after the ``notify`` stage told
  every notifier the downtime starts);
- ``downtime_end``: its ``start`` stage, or a ``rollback``, finished;
- ``failed``: one of its stages failed, the VM stopped at a safe point (an interrupt is no
  failure).

These are the moments the ``notify`` plugin tells notifiers of (``rehost_notify``); the mail
plugin watches the stages itself, so that it works beside any other notifier and blocking
``notify`` does not change what it sends.

Each owner gets a mail of his own (its only recipient), from the templates of
:mod:`.message`; the owners are found by :mod:`.owners`. A mail that was sent is remembered in
the campaign journal (meta key ``mail:[vm, round, event, detail, address]``), so that no event
of a VM is mailed twice to one address: not when ``rehost resume`` runs a stage again, not when
the campaign starts again. A VM rolled back and moved again starts a new round, and its users
are told again. The mail is sent before it is remembered: only a kill between the server's
answer and the journal's write (microseconds) would send it twice.

Mail never stops a VM: whatever goes wrong (the SMTP server, a template, Abiquo's user list)
is logged, and recorded in the journal as an error of the campaign stage ``mail``, which the
reports list under the campaign's errors; the move goes on. The preflight says beforehand
what it can see: a server that takes no session, a template that does not render, a VM nobody
would be told about (warnings).
"""

from __future__ import annotations

import json
import threading
import time
import weakref
from typing import Any

from rehost.api import VM, Context, Finding, PluginSettings, hookimpl
from rehost.plugins.mail.message import (
    TemplateProblem,
    Templates,
    build,
    context,
    sample_context,
)
from rehost.plugins.mail.owners import Owner, Owners, OwnersUnknown
from rehost.plugins.mail.settings import SETTINGS, MailSettings
from rehost.plugins.mail.smtp import Mailer

#: the campaign stage mail failures are journaled under
STAGE = "mail"


class Session:
    """The mail of one command on one campaign (configure to unconfigure)."""

    def __init__(self, settings: MailSettings) -> None:
        self.settings = settings
        self.templates = Templates(settings.templates)
        self.owners = Owners(settings)
        self.mailer = Mailer(settings)
        self.sent = 0
        self.failed = 0
        self._lock = threading.Lock()
        self._told_left_out: set[str] = set()
        self._told_no_owner: set[str] = set()

    # -- what the journal says about a VM ---------------------------------------------------------

    @staticmethod
    def _history(ctx: Context, vm: VM) -> dict[str, Any]:
        """The VM's round (finished rollbacks so far: a VM moved again after one is told
        again), how its last downtime ended, and its last failure."""
        events = ctx.journal.events(vm.name)
        info: dict[str, Any] = {
            "round": sum(1 for e in events if e.stage == "rollback" and e.event == "finish"),
            "via": "", "stage": "", "error": "", "safe_point": ""}
        for e in events:
            if e.event == "finish" and e.stage in ("start", "rollback"):
                info["via"] = e.stage
            elif e.event == "error" and not e.data.get("interrupted"):
                info.update(stage=e.stage, error=str(e.data.get("error") or ""),
                            safe_point=str(e.data.get("safe_point") or ""))
        return info

    @staticmethod
    def _key(vm: VM, round_: int, event: str, detail: str, address: str) -> str:
        return "mail:" + json.dumps([vm.name, round_, event, detail, address.lower()])

    # -- telling ----------------------------------------------------------------------------------

    def tell(self, ctx: Context, vms: list[VM], event: str) -> None:
        """Mail ``event`` about each VM to each of its owners not told yet; never raises."""
        if event not in self.settings.events or ctx.dry_run:
            return
        jobs: list[tuple[VM, str, Owner, str, Any]] = []  # vm, key, owner, subject, message
        for vm in vms:
            try:
                jobs += self._prepare(ctx, vm, event)
            except Exception as exc:
                self._note(ctx, vm, event, [], f"not prepared: {exc}")
        if not jobs:
            return
        try:
            results = self.mailer.send([(msg, owner.email) for _, _, owner, _, msg in jobs])
        except Exception as exc:  # never: send says what failed; but mail must not stop a VM
            results = [self.mailer.describe(exc)] * len(jobs)
        failures: dict[str, tuple[VM, list[str], str]] = {}
        for (vm, key, owner, _subject, _msg), error in zip(jobs, results, strict=True):
            if error is None:
                ctx.journal.set(key, {"ts": time.time(), "event": event})
                with self._lock:
                    self.sent += 1
                ctx.log.info("mail: {} about {} sent to {}", event, vm.label or vm.name,
                             owner.email)
            else:
                with self._lock:
                    self.failed += 1
                entry = failures.setdefault(f"{vm.name}\0{error}", (vm, [], error))
                entry[1].append(owner.email)
        for vm, addresses, error in failures.values():
            self._note(ctx, vm, event, addresses, error)

    def _prepare(self, ctx: Context, vm: VM, event: str) -> list[tuple[VM, str, Owner, str,
                                                                       Any]]:
        history = self._history(ctx, vm)
        detail = {"downtime_end": history["via"], "failed": history["stage"]}.get(event, "")
        try:
            owners = self.owners.of(vm, ctx)
        except OwnersUnknown as exc:
            self._note(ctx, vm, event, [], str(exc))
            return []
        self._say_left_out(ctx, vm)
        if not owners:
            if vm.name not in self._told_no_owner:  # said once: its other mails neither go
                self._told_no_owner.add(vm.name)
                self._note(ctx, vm, event, [], "the VM has no owner with an e-mail address, "
                           "so none of its mails goes out (add one with vm_owners or extra "
                           "under [plugins.mail])")
            return []
        vm_info = {"name": vm.name, "label": vm.label or vm.name, "uuid": vm.uuid,
                   "source_host": vm.source_host or "", "target_host": vm.target_host or ""}
        jobs = []
        for owner in owners:
            key = self._key(vm, history["round"], event, detail, owner.email)
            if ctx.journal.get(key) is not None:
                continue  # told already (an earlier run, or this one)
            values = context(self.settings, ctx.config.campaign.name, event, vm_info, owner,
                             via=history["via"], stage=history["stage"],
                             error=history["error"], safe_point=history["safe_point"])
            subject, body = self.templates.render(event, values)
            msg = build(self.settings, owner, subject, body, event=event, vm_uuid=vm.uuid)
            jobs.append((vm, key, owner, subject, msg))
        return jobs

    def _say_left_out(self, ctx: Context, vm: VM) -> None:
        left = self.owners.left_out.get(vm.name)
        if left and vm.name not in self._told_left_out:
            self._told_left_out.add(vm.name)
            ctx.log.info("mail: {}: not told: {}", vm.label or vm.name, ", ".join(left))

    def _note(self, ctx: Context, vm: VM, event: str, addresses: list[str],
              reason: str) -> None:
        """A mail not sent: in the log, and in the journal as an error of the campaign stage
        ``mail`` (the reports list it with the campaign's errors). Never raises."""
        who = (f" to {len(addresses)} owner(s) ({', '.join(addresses)})" if addresses else "")
        text = self.mailer.scrub(f"{vm.label or vm.name}: the {event} mail{who} was not sent: "
                                 f"{reason}; the move goes on")
        ctx.log.warning("mail: {}", text)
        try:
            ctx.journal.record(None, STAGE, "error",
                               {"error": text, "type": "MailNotSent", "safe_point": None,
                                "vm": vm.name, "event": event, "to": addresses})
        except Exception as exc:
            ctx.log.error("mail: cannot journal that a mail was not sent: {}", exc)

    # -- the preflight ---------------------------------------------------------------------------

    def preflight(self, ctx: Context) -> list[Finding]:
        findings = []
        sample = sample_context(self.settings, ctx.config.campaign.name)
        for event in self.settings.events:
            try:
                self.templates.render(event, dict(sample, event=event))
            except TemplateProblem as exc:
                findings.append(Finding("warning", "mail-template", f"{exc}: the {event} "
                                        "mails will not be sent"))
        problem = self.mailer.check()
        if problem is not None:
            findings.append(Finding("warning", "mail-server", f"{problem}: the VMs move, "
                                    "but their owners are not told"))
        for vm in ctx.vms:
            who = vm.label or vm.name
            try:
                if not self.owners.of(vm, ctx):
                    findings.append(Finding("warning", "mail-owners", "nobody will be told "
                                            "about this VM: it has no owner with an e-mail "
                                            "address", vm=who))
            except OwnersUnknown as exc:
                findings.append(Finding("warning", "mail-owners", str(exc), vm=who))
        return findings


_sessions: weakref.WeakKeyDictionary[Any, Session] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def session(ctx: Context) -> Session | None:
    """The campaign's mail session, made from its settings on first use; None when no mail
    is to be sent."""
    with _lock:
        found = _sessions.get(ctx)
        if found is None:
            settings: MailSettings | None = ctx.settings("mail")
            if settings is None or not settings.active:
                return None
            found = _sessions[ctx] = Session(settings)
        return found


def _guarded(ctx: Context, what: str, fn: Any, *args: Any) -> Any:
    """Mail must never stop a command: anything that escapes is logged."""
    try:
        return fn(*args)
    except Exception as exc:
        ctx.log.error("mail: {} failed: {}", what, exc)
        return None


# -- hooks -------------------------------------------------------------------------------------


@hookimpl
def rehost_plugin_settings() -> list[PluginSettings]:
    return [SETTINGS]


@hookimpl
def rehost_configure(ctx: Context) -> None:
    s = _guarded(ctx, "configure", session, ctx)
    if s is not None:
        ctx.log.debug("mail: owners are told through {}:{} ({})", s.settings.host,
                      s.settings.port_number, s.settings.tls)


@hookimpl
def rehost_unconfigure(ctx: Context) -> None:
    with _lock:
        _sessions.pop(ctx, None)


@hookimpl
def rehost_preflight(ctx: Context) -> list[Finding]:
    s = _guarded(ctx, "preflight", session, ctx)
    if s is None:
        return []
    found: list[Finding] | None = _guarded(ctx, "preflight", s.preflight, ctx)
    return found or []


@hookimpl
def rehost_campaign_start(ctx: Context, vms: list[VM]) -> None:
    s = _guarded(ctx, "announce", session, ctx)
    if s is None:
        return
    # a VM already taken down (a resumed campaign) is past its announcement
    fresh = [vm for vm in vms if "notify" not in ctx.journal.finished_stages(vm.name)]
    _guarded(ctx, "announce", s.tell, ctx, fresh, "announced")


def _tell(ctx: Context, vm: VM, event: str) -> None:
    s = _guarded(ctx, event, session, ctx)
    if s is not None:
        _guarded(ctx, event, s.tell, ctx, [vm], event)


@hookimpl
def rehost_stage_start(stage: str, vm: VM | None, ctx: Context) -> None:
    # at the start of the power-off, not in the notify stage: a run killed between the two
    # still mails on resume (the journal keeps it from going out twice)
    if vm is not None and stage == "power_off":
        _tell(ctx, vm, "downtime_start")


@hookimpl
def rehost_stage_finish(stage: str, vm: VM | None, ctx: Context, result: object) -> None:
    if vm is not None and stage in ("start", "rollback"):
        _tell(ctx, vm, "downtime_end")


@hookimpl
def rehost_stage_error(stage: str, vm: VM | None, ctx: Context, error: BaseException) -> None:
    # an interrupt is not a failure: the VM goes on at resume
    if vm is not None and isinstance(error, Exception) and not getattr(error, "interrupted",
                                                                         False):
        _tell(ctx, vm, "failed")


@hookimpl
def rehost_campaign_finish(ctx: Context, outcome: dict[str, str]) -> None:
    s = _guarded(ctx, "summary", session, ctx)
    if s is not None and (s.sent or s.failed):
        ctx.log.info("mail: {} sent, {} not sent", s.sent, s.failed)
