"""Whom to tell about a VM: its owners, from the site config or from Abiquo.

In this order:

1. ``override`` (not empty): every mail goes to these addresses instead (a rehearsal);
2. ``vm_owners``: the addresses of the first key that matches the VM's domain name, uuid or
   label (glob patterns: ``web-*``; ``*`` matches every VM), instead of Abiquo's;
3. Abiquo, when the campaign's control plane is ``abiquo``: with ``owners = "enterprise"``
   (the default) every user of the enterprise that owns the VM (the VM's link rel
   ``enterprise``, then the enterprise's rel ``users``), with ``owners = "user"`` only the VM's
   own user (its rel ``user``: who created it); ``owners = "none"`` asks Abiquo nothing.
   A user who is not active, has no valid e-mail address, or is restricted to other virtual
   datacenters than the VM's (``availableVirtualDatacenters``) is left out.

``extra`` addresses are added to every VM's. Each address appears once (compared without
case). A VM's owners are looked up once per command; an enterprise's users once too.
"""

from __future__ import annotations

import fnmatch
import re
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rehost.plugins.mail.settings import MailSettings, valid_address

if TYPE_CHECKING:
    from rehost.abiquo.types import User, VirtualMachine
    from rehost.api import VM, Context

_VDC = re.compile(r"/cloud/virtualdatacenters/(\d+)(?:/|$)")


@dataclass(frozen=True)
class Owner:
    """Someone to tell: an address, and what the templates may say about them."""

    email: str
    name: str = ""
    nick: str = ""
    enterprise: str = ""
    #: where the address came from: abiquo, vm_owners, extra, override
    source: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"email": self.email, "name": self.name, "nick": self.nick,
                "enterprise": self.enterprise, "source": self.source}


class OwnersUnknown(Exception):
    """The owners of a VM could not be found (Abiquo failed): nobody can be told."""


def vm_matches(vm: VM, pattern: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for name in (vm.name, vm.uuid, vm.label)
               if name)


def _unique(owners: list[Owner]) -> list[Owner]:
    seen: set[str] = set()
    out = []
    for o in owners:
        if o.email.lower() not in seen:
            seen.add(o.email.lower())
            out.append(o)
    return out


def vdc_of(avm: VirtualMachine) -> str | None:
    """The id of the VM's virtual datacenter (its rel ``virtualdatacenter``, else its own
    address), or None."""
    link = avm.link("virtualdatacenter")
    for href in (link.href if link else "", avm.url):
        found = _VDC.search(href)
        if found:
            return found.group(1)
    return None


def abiquo_owner(user: User, enterprise: str) -> Owner | None:
    """An Abiquo user as an owner; None for a user who cannot be told."""
    email = (user.email or "").strip()
    if not user.is_active or not valid_address(email):
        return None
    return Owner(email, user.full_name or user.nick or "", user.nick or "", enterprise,
                 "abiquo")


class Owners:
    """Finds each VM's owners, once per VM (lookups that failed are tried again)."""

    def __init__(self, settings: MailSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._vms: dict[str, list[Owner]] = {}
        self._users: dict[str, list[User]] = {}
        #: who was left out, and why (said once per VM)
        self.left_out: dict[str, list[str]] = {}

    def of(self, vm: VM, ctx: Context) -> list[Owner]:
        """The addresses to tell about ``vm`` (may be empty). Raises :class:`OwnersUnknown`
        when Abiquo, asked, could not say."""
        s = self.settings
        if s.override:
            found = [Owner(a, source="override") for a in s.override]
        else:
            with self._lock:
                cached = self._vms.get(vm.name)
            if cached is None:
                cached = self._owners(vm, ctx)
                with self._lock:
                    self._vms[vm.name] = cached
            found = list(cached)
        return _unique(found + [Owner(a, source="extra") for a in s.extra])

    def _owners(self, vm: VM, ctx: Context) -> list[Owner]:
        for pattern, addresses in self.settings.vm_owners.items():
            if vm_matches(vm, pattern):
                return [Owner(a, source="vm_owners") for a in addresses]
        if self.settings.owners == "none" or not self._abiquo(ctx):
            return []
        try:
            return self._from_abiquo(vm, ctx)
        except Exception as exc:  # the API failed, or answered what we cannot read
            raise OwnersUnknown(f"Abiquo did not say who owns it: {exc}") from exc

    @staticmethod
    def _abiquo(ctx: Context) -> bool:
        """Whether the VMs are Abiquo's: the control plane is ``abiquo``, with its
        settings."""
        try:
            return (ctx.config.control.strategy == "abiquo"
                    and ctx.settings("abiquo") is not None)
        except Exception:
            return False

    def _from_abiquo(self, vm: VM, ctx: Context) -> list[Owner]:
        from rehost.abiquo.site import client

        c = client(ctx)
        avm = c.vm(vm.control_ref) if vm.control_ref else c.find_vm(uuid=vm.uuid)
        if self.settings.owners == "user":
            user = c.vm_user(avm)
            users = [user] if user is not None else []
            enterprise = str(avm.raw.get("enterpriseName") or "")
        else:
            ent = c.vm_enterprise(avm)
            if ent is None:
                return []
            enterprise = ent.name or ""
            key = c.absolute(ent.url)
            with self._lock:
                known = self._users.get(key)
            if known is None:
                known = c.enterprise_users(ent)
                with self._lock:
                    self._users[key] = known
            users = known
        vdc = vdc_of(avm)
        out: list[Owner] = []
        skipped: list[str] = []
        for u in users:
            owner = abiquo_owner(u, enterprise)
            who = u.nick or str(u.id)
            if owner is None:
                skipped.append(f"{who} (" + ("not active" if not u.is_active
                                             else "no valid e-mail address") + ")")
            elif self.settings.owners == "enterprise" and not u.sees_vdc(vdc):
                skipped.append(f"{who} (restricted to other virtual datacenters)")
            else:
                out.append(owner)
        if skipped:
            with self._lock:
                self.left_out[vm.name] = skipped
        return out
