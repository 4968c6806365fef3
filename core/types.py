"""The types of the plugin contract: what every stage returns, what ``ctx`` offers, and the
records plugins register.

Every per-VM stage hook returns one result type of this module (or a mapping with its
fields). The core checks it before journaling it (:func:`check_result`); a wrong shape is a
:class:`~rehost.core.errors.PluginError` naming the plugin, the stage and the field. The journal
keeps ``model_dump(mode="json")`` of each result and :func:`load_result` reads it back, so the
report, ``confirm``, ``rollback`` and ``resume`` read only the fields declared here.

A result may carry more facts than its type declares (a strategy's own numbers): they are kept
in the journal and shown nowhere else. A stage that does not apply to a control plane or a
storage strategy returns its result with ``skipped`` set to the reason; the report shows it
as skipped.

The hook specifications import this module only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from rehost.core.errors import PluginError
from rehost.core.model import (
    CAMPAIGN_STAGES,
    VM,
    VM_STAGES,
    Disk,
    Finding,
    Host,
    HostFacts,
    StrategyRecord,
)

if TYPE_CHECKING:
    from loguru import Logger

    from rehost.core.config import SiteConfig
    from rehost.core.hypervisor import Hypervisor
    from rehost.core.journal import Journal
    from rehost.core.remote import Shell, SshOptions

__all__ = [
    "CAMPAIGN_STAGES", "RESULT_TYPES", "VM", "VM_STAGES", "AwaitUndeployedResult",
    "BackupDisksResult", "BackupXmlResult", "CleanupResult", "Context", "DeployResult", "Disk",
    "DiskBackup", "DiskCheck", "FenceResult", "Finding", "Host", "HostFacts", "LocateResult",
    "Need", "NotifyResult", "PluginSettings", "PowerOffNewResult", "PowerOffResult",
    "PrecopyResult", "PreserveResult", "PreservedDisk", "RemoveNewDisksResult", "RemovedDisk",
    "Result", "RollbackResult", "Sample", "StagedDisk", "StartResult", "StrategyRecord",
    "SwapResult", "SwappedDisk", "TargetLoad", "TransferResult", "UndefineResult",
    "UnfenceResult", "VerifyResult", "XmlChange", "check_result", "load_result",
]


class Record(BaseModel):
    """A part of a result. Facts beyond the declared fields are kept."""

    model_config = ConfigDict(extra="allow")


class Result(Record):
    """What a stage returns. ``skipped``: the stage did not apply, and why."""

    stage: ClassVar[str] = ""
    skipped: str | None = None


# -- disks ---------------------------------------------------------------------------------


class Sample(Record):
    """Sampled blocks of a disk (``verify = "size"``): block size, block numbers, their md5."""

    block: int
    blocks: list[int]
    md5: list[str]


class PreservedDisk(Record):
    """A user's file disk as ``preserve_disks`` kept it: the fingerprint every later check
    compares against (a checksum, or a sample, or only the size)."""

    path: str
    backup: str
    size: int
    allocated: int | None = None
    virtual_size: int | None = None
    target: str | None = None
    format: str | None = None
    owner: str | None = None
    checksum: str | None = None
    algorithm: str | None = None
    sample: Sample | None = None


class DiskCheck(Record):
    """A disk found to be the user's (after a copy, at verify, after a rollback)."""

    path: str
    size: int | None = None
    allocated: int | None = None
    checksum: str | None = None
    algorithm: str | None = None
    sample_blocks: int | None = None
    bytes: int = 0
    seconds: float | None = None
    skipped: str | None = None


class RemovedDisk(Record):
    path: str
    size: int | None = None
    allocated: int | None = None


class SwappedDisk(Record):
    path: str
    owner: str | None = None
    size: int | None = None


class XmlChange(Record):
    """One change made to a domain's XML on its way to the target host."""

    what: str
    old: str | None = None
    new: str | None = None


# -- the per-VM stages -----------------------------------------------------------------------


class LocateResult(Result):
    stage = "locate"
    host: str


class BackupXmlResult(Result):
    stage = "backup_xml"
    xml: str
    disks: int
    file_disks: list[str] = []
    other_disks: list[str | None] = []


class DiskBackup(Record):
    """A copy of a user's file disk made before the window (``backup_disks``), verified
    against the disk it copies."""

    path: str
    host: str
    location: str
    size: int | None = None
    allocated: int | None = None
    checksum: str | None = None
    algorithm: str | None = None
    bytes: int = 0
    seconds: float | None = None


class BackupDisksResult(Result):
    """The backups made before the VM went down: where each disk's copy is."""

    stage = "backup_disks"
    strategy: str = ""
    backups: list[DiskBackup] = []


class StagedDisk(Record):
    """A disk copied while its VM still ran (``precopy``): the staging file on the host the
    VM is expected to land on, and how much was sent."""

    path: str
    staging: str
    size: int | None = None
    bytes: int = 0
    seconds: float | None = None


class PrecopyResult(Result):
    """The disks staged before the VM went down, and on which host (the predicted target)."""

    stage = "precopy"
    host: str | None = None
    strategy: str = ""
    staged: list[StagedDisk] = []


class NotifyResult(Result):
    stage = "notify"
    event: str


class PowerOffResult(Result):
    stage = "power_off"
    how: str


class UndefineResult(Result):
    stage = "undefine"
    undefined: bool


class AwaitUndeployedResult(Result):
    stage = "await_undeployed"
    state: str | None = None


class PreserveResult(Result):
    stage = "preserve_disks"
    disks: list[PreservedDisk]
    untouched: list[str] = []

    def disk(self, path: str | None) -> PreservedDisk | None:
        return next((d for d in self.disks if d.path == path), None)


class DeployResult(Result):
    stage = "deploy"
    host: str
    how: str = ""
    xml_changes: list[XmlChange] = []


class PowerOffNewResult(Result):
    stage = "power_off_new"


class TransferResult(Result):
    stage = "transfer"
    disks: list[DiskCheck]
    bytes: int = 0
    seconds: float = 0.0
    rate_mib_s: float = 0.0
    strategy: str = ""
    shared: bool = False


class RemoveNewDisksResult(Result):
    stage = "remove_new_disks"
    removed: list[RemovedDisk] = []
    owner: str | None = None


class SwapResult(Result):
    stage = "swap_disks"
    disks: list[SwappedDisk]


class StartResult(Result):
    stage = "start"
    host: str


class VerifyResult(Result):
    stage = "verify"
    ok: bool
    host: str
    method: str
    disks: list[DiskCheck]


class CleanupResult(Result):
    stage = "cleanup"
    host: str
    deleted: list[str] = []
    pending: list[str] = []


class RollbackResult(Result):
    stage = "rollback"
    host: str
    steps: list[str] = []
    disks: list[DiskCheck] = []
    pending: list[str] = []


# -- the campaign's stages -------------------------------------------------------------------


class FenceResult(Result):
    """What the fence changed (the allocation strategy's own record, kept in the journal and
    handed back to unfence)."""

    stage = "fence"
    strategy: str = ""

    def record(self, key: str, default: Any = None) -> Any:
        """One of the strategy's own facts (``created``, ``halted`` ...)."""
        return (self.model_extra or {}).get(key, default)


class UnfenceResult(Result):
    stage = "unfence"
    strategy: str = ""


#: The result type of each stage.
RESULT_TYPES: dict[str, type[Result]] = {
    cls.stage: cls for cls in (
        LocateResult, BackupXmlResult, BackupDisksResult, PrecopyResult, NotifyResult,
        PowerOffResult, UndefineResult,
        AwaitUndeployedResult, PreserveResult, DeployResult, PowerOffNewResult, TransferResult,
        RemoveNewDisksResult, SwapResult, StartResult, VerifyResult, CleanupResult,
        RollbackResult, FenceResult, UnfenceResult)
}

R = TypeVar("R", bound=Result)


def _field_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(the result)"
    return f"field {where!r}: {first['msg']}"


def check_result(stage: str, value: object, plugin: str) -> Result:
    """``value`` as the result type of ``stage``; a :class:`PluginError` naming the plugin,
    the stage and the field when it does not fit."""
    cls = RESULT_TYPES[stage]
    if isinstance(value, cls):
        data: object = value.model_dump()
    elif isinstance(value, Result):
        raise PluginError(f"plugin {plugin!r} returned a {type(value).__name__} for stage "
                          f"{stage!r}, which returns a {cls.__name__}")
    else:
        data = value
    if not isinstance(data, dict):
        raise PluginError(f"plugin {plugin!r} returned {type(value).__name__} for stage "
                          f"{stage!r}: it must return a {cls.__name__} (rehost.api)")
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise PluginError(f"plugin {plugin!r} returned a bad {cls.__name__} for stage "
                          f"{stage!r}: {_field_error(exc)}") from None


def load_result(stage: str, data: Any) -> Result | Any:
    """A journaled result read back as its type (a stage without a type: as it was)."""
    cls = RESULT_TYPES.get(stage)
    if cls is None or not isinstance(data, dict):
        return data
    try:
        return cls.model_validate(data)
    except ValidationError:
        return data  # a journal from before the typed contract: keep what it says


# -- placement -------------------------------------------------------------------------------


class TargetLoad(Record):
    """A target host as a placement sees it: its capacity and what is defined there now."""

    host: str
    cpus: int
    memory_mib: int
    free_bytes: int
    used_cpus: int = 0
    used_mib: int = 0


class Need(Record):
    """What a VM needs on its target host."""

    cpus: int
    memory_mib: int
    bytes: int = 0


# -- plugin settings -----------------------------------------------------------------------


class PluginSettings:
    """A plugin's settings: the pydantic model of its ``[plugins.<plugin>]`` table in the site
    config. ``section`` names a top-level table the plugin reads instead (``[abiquo]``).
    ``secrets(settings)`` lists values never to show (reports redact them)."""

    def __init__(self, plugin: str, model: type[BaseModel], *, section: str | None = None,
                 help: str = "",
                 secrets: Callable[[Any], list[str]] | None = None) -> None:
        self.plugin = plugin
        self.model = model
        self.section = section
        self.help = help
        self.secrets = secrets

    @property
    def where(self) -> str:
        return self.section or f"plugins.{self.plugin}"


# -- what every hook receives as ``ctx`` -----------------------------------------------------


class Context(Protocol):
    """The campaign, as plugins see it (:class:`rehost.core.campaign.Campaign`)."""

    config: SiteConfig
    journal: Journal
    log: Logger
    vms: list[VM]
    dry_run: bool

    @property
    def hooks(self) -> Any: ...

    @property
    def state_dir(self) -> Path: ...

    @property
    def ssh(self) -> SshOptions: ...

    @property
    def storage(self) -> Any: ...

    @property
    def allocation(self) -> Any: ...

    @property
    def control(self) -> Any: ...

    @property
    def backup(self) -> Any: ...

    def settings(self, plugin: str) -> Any: ...

    def secrets(self) -> list[str]: ...

    def host(self, name: str) -> Host: ...

    def host_by_address(self, address: str) -> Host | None: ...

    def add_host(self, host: Host) -> None: ...

    def forget_host(self, name: str) -> None: ...

    def shell(self, host: str) -> Shell: ...

    def hypervisor(self, host: str) -> Hypervisor: ...

    def facts(self, host: str, refresh: bool = False) -> HostFacts: ...

    def vm_dir(self, vm: VM) -> Path: ...

    def note_fence(self, record: FenceResult) -> None: ...


Severity = Literal["critical", "warning", "info"]
