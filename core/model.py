"""The things rehost moves and talks about: hosts, disks, VMs, findings and strategy records.

Plain dataclasses, free of I/O, so that plugins, the journal and the reports can share them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

if TYPE_CHECKING:
    from rehost.core.types import Result

    R = TypeVar("R", bound=Result)

#: The campaign's own stages, around the per-VM protocol.
CAMPAIGN_STAGES: tuple[str, ...] = ("preflight", "fence", "unfence", "report")

#: The per-VM protocol, in the order it runs (docs/design.md).
VM_STAGES: tuple[str, ...] = (
    "locate",
    "backup_xml",
    "backup_disks",
    "precopy",
    "notify",
    "power_off",
    "undefine",
    "await_undeployed",
    "preserve_disks",
    "deploy",
    "power_off_new",
    "transfer",
    "remove_new_disks",
    "swap_disks",
    "start",
    "verify",
    "cleanup",
)

Severity = Literal["critical", "warning", "info"]


@dataclass
class Host:
    """A hypervisor host as rehost reaches it."""

    name: str
    address: str
    uri: str = ""
    ssh_user: str = "root"
    ssh_port: int = 22
    ssh_key: str | None = None
    known_hosts: str | None = None
    role: Literal["source", "target", "unknown"] = "unknown"
    datastore: str = "/var/lib/virt"
    #: the rack it stands in ("" unknown): a VM's networks bind it to its rack (Abiquo's VLANs
    #: are a rack's), so an evacuation keeps VMs in their rack where racks are given
    rack: str = ""

    def libvirt_uri(self) -> str:
        if self.uri:
            return self.uri
        # host keys are checked (no no_verify); no_tty: never stop to ask for a password
        key = f"&keyfile={self.ssh_key}" if self.ssh_key else ""
        port = f":{self.ssh_port}" if self.ssh_port != 22 else ""
        return f"qemu+ssh://{self.ssh_user}@{self.address}{port}/system?no_tty=1{key}"


@dataclass
class Disk:
    """One disk of a domain, as its XML describes it (see :mod:`rehost.core.disks`)."""

    target: str
    device: str = "disk"
    type: str = "file"
    source: str | None = None
    driver: str | None = None
    format: str | None = None
    bus: str | None = None
    readonly: bool = False
    shareable: bool = False
    protocol: str | None = None
    hosts: list[str] = field(default_factory=list)
    pool: str | None = None
    volume: str | None = None
    backing: list[dict[str, Any]] = field(default_factory=list)

    @property
    def is_file(self) -> bool:
        """A file on a datastore: the kind of disk rehost preserves, copies and swaps."""
        return self.type == "file" and self.device == "disk" and bool(self.source)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class HostFacts:
    """What a host says about itself."""

    hostname: str
    os_release: str
    centos_major: int | None
    centos_version: str | None
    libvirt_version: str
    qemu_version: str
    cpus: int
    memory_mib: int
    datastore: str | None = None
    datastore_free_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Finding:
    """A preflight finding. ``critical`` findings stop a run before anything changes."""

    severity: Severity
    code: str
    message: str
    vm: str | None = None
    host: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StrategyRecord:
    """A strategy a plugin offers, registered through a registry hook.

    ``factory`` builds the strategy from its options (a mapping from the site config).
    ``plugin`` is filled by the plugin manager with the name of the plugin that offered it.
    """

    kind: Literal["storage", "allocation", "control", "backup"]
    name: str
    description: str
    factory: Callable[..., Any]
    plugin: str = ""


@dataclass
class VM:
    """One VM of a campaign and what rehost learns about it on the way.

    ``name`` is the domain name on the hypervisor; ``uuid`` is the control plane's id of the
    VM; ``label`` the name people know it by. ``control_ref`` is the control plane's own
    reference (Abiquo: the VM's URL). ``facts`` holds each finished stage's result
    (:mod:`rehost.core.types`), keyed by stage; the journal keeps it. Read one with
    :meth:`fact`.
    """

    name: str
    uuid: str
    label: str = ""
    control_ref: str | None = None
    source_host: str | None = None
    target_host: str | None = None
    disks: list[Disk] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def file_disks(self) -> list[Disk]:
        return [d for d in self.disks if d.is_file]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "uuid": self.uuid,
            "label": self.label,
            "control_ref": self.control_ref,
            "source_host": self.source_host,
            "target_host": self.target_host,
            "disks": [d.to_dict() for d in self.disks],
            "facts": {stage: r.model_dump(mode="json") if hasattr(r, "model_dump") else r
                      for stage, r in self.facts.items()},
        }

    def fact(self, cls: type[R]) -> R | None:
        """The result of the stage ``cls`` belongs to, if that stage has finished."""
        found = self.facts.get(cls.stage)
        return found if isinstance(found, cls) else None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VM:
        from rehost.core.types import load_result

        return cls(
            name=data["name"],
            uuid=data["uuid"],
            label=data.get("label", ""),
            control_ref=data.get("control_ref") or data.get("abiquo_href"),
            source_host=data.get("source_host"),
            target_host=data.get("target_host"),
            disks=[Disk(**d) for d in data.get("disks", [])],
            facts={stage: load_result(stage, r) for stage, r in data.get("facts", {}).items()},
        )
