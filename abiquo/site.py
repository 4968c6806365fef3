"""The Abiquo side of a campaign, shared by the ``abiquo`` control plane and the Abiquo
allocation strategies: one client per campaign, and Abiquo's machines matched with the site
config's hosts (by the machine's ``ip`` = the host's ``address``, or its name)."""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Any

from rehost.abiquo.client import AbiquoClient
from rehost.core.errors import ConfigError, PreconditionError

if TYPE_CHECKING:
    from collections.abc import Callable

    from rehost.abiquo.settings import AbiquoSettings
    from rehost.abiquo.types import LoadLevelRule, Machine
    from rehost.core.types import Context

_clients: weakref.WeakKeyDictionary[Any, AbiquoClient] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def settings(ctx: Context) -> AbiquoSettings:
    found: AbiquoSettings | None = ctx.settings("abiquo")
    if found is None:
        raise ConfigError("this campaign needs the Abiquo API: add an [abiquo] section (url, "
                          "user, password_file or password_env) to the site config")
    return found


def client(ctx: Context) -> AbiquoClient:
    """The campaign's Abiquo client (made once, from the ``[abiquo]`` settings)."""
    with _lock:
        found = _clients.get(ctx)
        if found is None:
            a = settings(ctx)
            found = AbiquoClient(
                a.url, a.user, a.password(), version=a.version, media=a.media,
                verify_tls=(a.ca_file or True) if a.verify_tls else False,
                timeout=a.timeout, task_timeout=ctx.config.campaign.task_timeout)
            _clients[ctx] = found
        return found


def machine_host(ctx: Context, machine: Machine | None) -> str | None:
    """The site config's host for an Abiquo machine."""
    if machine is None:
        return None
    for key in (machine.ip, machine.name):
        if key:
            host = ctx.host_by_address(key)
            if host is not None:
                return host.name
    return None


def source_machines(ctx: Context) -> list[Machine]:
    """The Abiquo machines of the site config's source hosts."""
    sources = {h.name for h in ctx.config.sources()}
    found = [m for m in client(ctx).machines() if machine_host(ctx, m) in sources]
    if not found:
        raise PreconditionError("no Abiquo machine matches a source host of the site config")
    return found


def rule_record(ctx: Context, rule: LoadLevelRule) -> dict[str, Any]:
    """A load-level rule as plain data: enough to create it again."""
    c = client(ctx)
    target = rule.target
    return {"url": c.absolute(rule.url), "cpu": rule.cpuLoadPercentage,
            "ram": rule.ramLoadPercentage, "rel": target.rel if target else None,
            "target": c.absolute(target.href) if target else None}


def rules_on(ctx: Context, machines: list[Machine]) -> list[LoadLevelRule]:
    """The load-level rules that apply to these machines."""
    c = client(ctx)
    urls = {c.absolute(m.url) for m in machines}
    return [r for r in c.load_level_rules()
            if r.target is not None and r.target.rel == "machine"
            and c.absolute(r.target.href) in urls]


def set_machine_rule(ctx: Context, machine: Machine, *, cpu: int, ram: int,
                     note: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Make a ``cpu``% / ``ram``% load-level rule the only one on ``machine``; returns its
    record, with the rules it replaced (``replaced``) to create again by
    :func:`undo_machine_rule`.

    A rule the machine already has is changed, not doubled: later Abiquo documentation allows
    one rule per element and level, and 2.x may refuse a second one. Abiquo 2.x has no PUT
    for a rule (2.0: GET and DELETE only), so the rule is deleted and the new one created; if
    the creation fails, the old rule is created again before the error goes on."""
    c = client(ctx)
    old = rules_on(ctx, [machine])
    replaced = [rule_record(ctx, r) for r in old]
    if note is not None:
        # what is about to change, journaled before it does: the new rule's url is not
        # known yet (``url`` None), so an undo finds it by machine and values
        note({"url": None, "cpu": cpu, "ram": ram, "rel": "machine",
              "target": c.absolute(machine.url), "machine": machine.name,
              "replaced": replaced})
    for r, rec in zip(old, replaced, strict=True):
        ctx.log.info("{}: its load-level rule (CPU {}%, RAM {}%) is changed for the campaign "
                     "and put back after", machine.name, rec["cpu"], rec["ram"])
        c.delete_load_level_rule(r)
    try:
        rule = c.create_load_level_rule(machine, cpu=cpu, ram=ram)
    except Exception:
        for rec in replaced:
            c.create_load_level_rule(machine, cpu=rec["cpu"], ram=rec["ram"])
        raise
    return rule_record(ctx, rule) | {"machine": machine.name, "replaced": replaced}


def undo_machine_rule(ctx: Context,
                      record: dict[str, Any]) -> tuple[bool, list[dict[str, Any]]]:
    """Delete the rule :func:`set_machine_rule` made (if it is still there) and create again
    the rules it replaced, unless the machine has a rule again (an earlier, interrupted undo
    got that far). Returns whether the rule was deleted, and the rules created again."""
    c = client(ctx)
    deleted = False
    for rule in c.load_level_rules():
        if made_by(ctx, rule, record):
            c.delete_load_level_rule(rule)
            deleted = True
    replaced = record.get("replaced") or []
    if not replaced:
        return deleted, []
    machine = next((m for m in c.machines() if c.absolute(m.url) == record["target"]), None)
    if machine is None or rules_on(ctx, [machine]):
        return deleted, []
    return deleted, [rule_record(ctx, c.create_load_level_rule(machine, cpu=rec["cpu"],
                                                               ram=rec["ram"]))
                     for rec in replaced]


def made_by(ctx: Context, rule: LoadLevelRule, record: dict[str, Any]) -> bool:
    """Whether ``rule`` is the one ``record`` made: by its url, or, for a record journaled
    before the rule was created (``url`` None), by its machine and values."""
    if record.get("url"):
        return bool(client(ctx).absolute(rule.url) == record["url"])
    found = rule_record(ctx, rule)
    return bool(found["target"] == record.get("target") and found["rel"] == "machine"
                and (found["cpu"], found["ram"]) == (record.get("cpu"), record.get("ram")))
