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


def _typed(value: Any, annotation: Any) -> Any:
    """XML gives text: a field typed ``int`` gets an integer (text that is none stays)."""
    if isinstance(value, str) and str(annotation).startswith("int"):
        try:
            return int(value)
        except ValueError:
            return value
    return value


def parse(cls: type[E], data: dict[str, Any]) -> E:
    """Build a typed view from an Abiquo body; unknown fields stay in ``raw``."""
    kwargs: dict[str, Any] = {f.name: _typed(data.get(f.name), f.type) for f in fields(cls)
                              if f.name not in ("links", "raw")}
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
