"""Typed views of the Abiquo objects rehost reads (docs/abiquo-api.md), field names exactly as
Abiquo spells them. Every view keeps its links and the whole body as received (``raw``).

Bodies come decoded by :mod:`rehost.abiquo.media` in the JSON shape; from XML every value is
text, so :func:`parse` turns the fields typed ``int`` into integers."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from rehost.abiquo.errors import AbiquoError

#: the states of a VM that exists on its hypervisor (Abiquo's ``existsInHypervisor``):
#: CONFIGURED is defined there and was never powered on since it was (re)configured
DEPLOYED = frozenset({"ON", "OFF", "PAUSED", "CONFIGURED"})


# -- typed views of Abiquo's objects (field names exactly as Abiquo spells them) ---------------


@dataclass(frozen=True)
class Link:
    rel: str
    href: str
    type: str = ""
    title: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"rel": self.rel, "href": self.href, "type": self.type, "title": self.title}


def parse_links(data: dict[str, Any]) -> list[Link]:
    return [Link(str(x.get("rel", "")), str(x.get("href", "")), str(x.get("type") or ""),
                 str(x.get("title") or "")) for x in data.get("links") or []]


@dataclass
class Entity:
    """Any Abiquo object: its links and the whole body as received (``raw``)."""

    links: list[Link] = field(default_factory=list, repr=False)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def link(self, rel: str) -> Link | None:
        return next((x for x in self.links if x.rel == rel), None)

    def href(self, rel: str) -> str:
        found = self.link(rel)
        if found is None:
            raise AbiquoError(None, "LINK-MISSING", f"{type(self).__name__} has no link rel "
                              f"{rel!r} (it has: {', '.join(x.rel for x in self.links)})")
        return found.href

    @property
    def url(self) -> str:
        """The object's own address (rel ``edit``, else ``self``)."""
        found = self.link("edit") or self.link("self")
        return found.href if found else ""


E = TypeVar("E", bound=Entity)


def _typed(value: Any, annotation: Any, what: str) -> Any:
    """A field as its annotation says: XML gives text, so a field typed ``int`` gets an
    integer from its text. An answer whose field is not what it must be (a CPU count that
    is not a number, a name that is an object) is refused here, naming the field, rather
    than failing later inside arithmetic or a comparison."""
    if value is None:
        return None
    kind = str(annotation)
    if kind.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise _bad(what, value, "a number")
        try:
            return int(value)
        except ValueError:
            raise _bad(what, value, "a number") from None
    if kind.startswith("str"):
        if isinstance(value, dict | list):
            raise _bad(what, value, "text")
        return str(value)
    return value


def _bad(what: str, value: Any, wanted: str) -> AbiquoError:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:80] + "..."
    return AbiquoError(None, "BAD-ANSWER", f"Abiquo answered {what} = {shown}: not {wanted} "
                       "(is this an Abiquo 2.4/2.6 API?)")


def parse(cls: type[E], data: dict[str, Any]) -> E:
    """Build a typed view from an Abiquo body; unknown fields stay in ``raw``."""
    if not isinstance(data, dict):
        raise _bad(f"a {cls.__name__.lower()}", data, "an object")
    kwargs: dict[str, Any] = {
        f.name: _typed(data.get(f.name), f.type, f"a {cls.__name__.lower()}'s {f.name}")
        for f in fields(cls) if f.name not in ("links", "raw")}
    links = data.get("links") or []
    if not isinstance(links, list) or not all(isinstance(x, dict) for x in links):
        raise _bad(f"a {cls.__name__.lower()}'s links", links, "a list of links")
    return cls(links=parse_links(data), raw=dict(data), **kwargs)


@dataclass
class Datacenter(Entity):
    id: int | None = None
    name: str | None = None
    location: str | None = None


@dataclass
class Rack(Entity):
    id: int | None = None
    name: str | None = None


@dataclass
class Machine(Entity):
    id: int | None = None
    name: str | None = None
    description: str | None = None
    state: str | None = None
    ip: str | None = None
    type: str | None = None
    cpu: int | None = None
    cpuUsed: int | None = None
    ram: int | None = None
    ramUsed: int | None = None


@dataclass
class VirtualMachine(Entity):
    """A VM as ``virtualmachinewithnodeextended`` shows it (2.4/2.6). ``name`` is its domain's
    name on the hypervisor; ``nodeName`` the name users gave it (``label`` is Abiquo 3.x's)."""

    id: int | None = None
    name: str | None = None
    nodeName: str | None = None
    label: str | None = None
    description: str | None = None
    uuid: str | None = None
    state: str | None = None
    cpu: int | None = None
    ram: int | None = None
    hdInBytes: int | None = None

    @property
    def deployed(self) -> bool:
        return self.state in DEPLOYED

    @property
    def display_name(self) -> str:
        """The name users know it by: ``nodeName`` (``label`` on 3.x), else the domain's."""
        return self.nodeName or self.label or self.name or ""

    @property
    def captured(self) -> bool:
        """Captured (imported) into Abiquo rather than created by it: Abiquo names the domains
        it creates ``ABQ_<uuid>``; a captured VM keeps its hypervisor name. When a captured
        VM's domain disappears, Abiquo deletes the VM's record (it cannot deploy it again)."""
        return bool(self.name) and self.name != f"ABQ_{self.uuid}"

    @property
    def url(self) -> str:
        """The VM's own address: rel ``edit``; in a machine's list of VMs (which shows the
        infrastructure view) the link rel ``virtualmachine`` to the VM itself."""
        found = self.link("edit") or self.link("virtualmachine") or self.link("self")
        return found.href if found else ""


@dataclass
class Task(Entity):
    taskId: str | None = None
    ownerId: str | None = None
    userId: str | None = None
    type: str | None = None
    state: str | None = None
    timestamp: int | None = None
    jobs: Any = None

    @property
    def untraceable(self) -> bool:
        """Abiquo accepted the request but had nothing to do (e.g. undeploying a VM that is
        not on a hypervisor): its task link is ``.../tasks/untraceable``."""
        return self.taskId == "untraceable"

    @property
    def failed_jobs(self) -> list[dict[str, Any]]:
        jobs = self.jobs.get("collection", []) if isinstance(self.jobs, dict) else self.jobs
        return [j for j in jobs or [] if j.get("state") in ("FAILED", "ROLLBACK_DONE")]


@dataclass
class LoadLevelRule(Entity):
    id: int | None = None
    cpuLoadPercentage: int | None = None
    ramLoadPercentage: int | None = None

    @property
    def target(self) -> Link | None:
        """What the rule applies to: the link rel ``datacenter``, ``rack`` or ``machine``."""
        return next((x for x in self.links if x.rel in ("machine", "rack", "datacenter")), None)


@dataclass
class FitPolicyRule(Entity):
    id: int | None = None
    fitPolicy: str | None = None

    @property
    def datacenter(self) -> str | None:
        found = self.link("datacenter")
        return found.href if found else None


# -- who a VM belongs to: its enterprise and the enterprise's users ----------------------------


@dataclass
class Enterprise(Entity):
    """An enterprise (a tenant), ``enterprise`` media type; its link rel ``users`` lists its
    users (2.0 ``RESTBuilder.buildEnterpriseLinks``; jclouds 2.6 ``EnterpriseApi.listUsers``)."""

    id: int | None = None
    name: str | None = None


@dataclass
class User(Entity):
    """A user of an enterprise, ``user`` media type (2.0 ``UserDto``). Abiquo also sends the
    user's ``password`` (its hash): :func:`parse_user` drops it, so that no copy is kept.

    ``availableVirtualDatacenters`` restricts the user to the virtual datacenters it names
    (comma-separated ids); empty means all of the enterprise's (2.0
    ``VirtualDatacenterService.getVirtualDatacenters``)."""

    id: int | None = None
    nick: str | None = None
    name: str | None = None
    surname: str | None = None
    email: str | None = None
    locale: str | None = None
    #: a boolean in JSON, text ("true") in XML
    active: Any = None
    availableVirtualDatacenters: str | None = None
    authType: str | None = None

    @property
    def is_active(self) -> bool:
        """Whether the user may log in (a missing ``active`` counts as active)."""
        if self.active is None:
            return True
        if isinstance(self.active, bool):
            return self.active
        return str(self.active).strip().lower() in ("true", "1")

    @property
    def full_name(self) -> str:
        return " ".join(p for p in (self.name, self.surname) if p)

    def sees_vdc(self, vdc_id: int | str | None) -> bool:
        """Whether the user sees the virtual datacenter ``vdc_id`` (None: unknown, yes)."""
        allowed = [v.strip() for v in (self.availableVirtualDatacenters or "").split(",")
                   if v.strip()]
        return not allowed or vdc_id is None or str(vdc_id) in allowed


def parse_user(data: dict[str, Any]) -> User:
    """A user as Abiquo sends it, without its password (hash)."""
    user = parse(User, data)
    user.raw.pop("password", None)
    return user
