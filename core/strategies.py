"""The kinds of strategy a site chooses in its config, as base classes.

A plugin offers a strategy through a registry hook (``rehost_storage_strategies``,
``rehost_allocation_strategies``, ``rehost_control_planes``, ``rehost_backup_strategies``) as a
:class:`~rehost.core.model.StrategyRecord` whose ``factory(options)`` builds an instance of
the kind's base class here; the plugin manager checks that it does. Every method that changes
something checks its precondition first and is safe to run twice; every stage method returns
its result type from :mod:`rehost.core.types`.

* :class:`StorageStrategy`: how the user's disks get from the source to the target host.
* :class:`AllocationStrategy`: how the control plane is made to place new deploys on targets.
* :class:`ControlPlane`: which VMs move, where they are, how they are undefined, deployed,
  powered and put back (Abiquo; a site's own manager).
* :class:`BackupStrategy`: how each disk is copied to a backup location before the window
  (optional: ``none`` by default).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from rehost.core.disks import parse_disks
from rehost.core.errors import ConfigError, PreconditionError
from rehost.core.types import (
    BackupDisksResult,
    BackupXmlResult,
    CleanupResult,
    Context,
    DeployResult,
    Disk,
    DiskCheck,
    FenceResult,
    Finding,
    Host,
    LocateResult,
    Need,
    PowerOffNewResult,
    PowerOffResult,
    PrecopyResult,
    PreserveResult,
    RemoveNewDisksResult,
    RollbackResult,
    StartResult,
    SwapResult,
    TargetLoad,
    TransferResult,
    UndefineResult,
    UnfenceResult,
    VerifyResult,
)

if TYPE_CHECKING:
    from rehost.core.types import VM, AwaitUndeployedResult


class Strategy(ABC):  # noqa: B024 (a common base; each kind has abstract methods)
    """What every strategy has: a name, its options from the site config
    (``[storage.options]`` ...), and preflight checks of its own."""

    kind: ClassVar[str] = ""
    name: str = ""

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        self.options = dict(options or {})

    def reject_unknown_options(self) -> None:
        """Call once the known options were popped from ``self.options``."""
        if self.options:
            key = sorted(self.options)[0]
            raise ConfigError(f"unknown key {self.kind}.options.{key} for strategy "
                              f"{self.name!r}")

    def preflight(self, ctx: Context) -> list[Finding]:
        """Findings about this strategy's readiness (``critical`` stops the run)."""
        return []


class StorageStrategy(Strategy):
    """Moves the user's disks: preserves them under backup names before the control plane
    deploys at their paths, brings them to the target, swaps them in, verifies them, and
    deletes the backups only when asked. It also knows how to put them back (rollback)."""

    kind = "storage"

    def space_needed(self, ctx: Context, vm: VM, disk: Disk) -> int:
        """Bytes ``disk`` takes on the target datastore once moved (0: nothing copied)."""
        return 0

    def check_vm(self, vm: VM, ctx: Context) -> list[Finding]:
        """What would stop this VM's disks from moving, said before the VM is powered off
        (preflight, and ``backup_xml``): e.g. a path the strategy cannot carry safely."""
        return []

    def precopy(self, vm: VM, ctx: Context) -> PrecopyResult:
        """While the VM still runs: stage its disks on the host it is expected to land on, so
        that :meth:`transfer` sends only the blocks that changed. Must change nothing the user
        sees (no disk of the VM is touched); a staging file left behind is the strategy's to
        remove. The default does not pre-copy."""
        return PrecopyResult(skipped=f"the storage strategy {self.name!r} does not pre-copy")

    @abstractmethod
    def preserve_disks(self, vm: VM, ctx: Context) -> PreserveResult: ...

    @abstractmethod
    def transfer(self, vm: VM, ctx: Context) -> TransferResult: ...

    @abstractmethod
    def remove_new_disks(self, vm: VM, ctx: Context) -> RemoveNewDisksResult: ...

    @abstractmethod
    def swap_disks(self, vm: VM, ctx: Context) -> SwapResult: ...

    @abstractmethod
    def verify(self, vm: VM, ctx: Context) -> VerifyResult: ...

    @abstractmethod
    def cleanup(self, vm: VM, ctx: Context, delete: bool) -> CleanupResult:
        """Delete the backups of a verified VM when ``delete``; else list them as pending."""

    # -- rollback: the control plane calls these, in this order --------------------------------

    @abstractmethod
    def secure_disks(self, vm: VM, ctx: Context, deployed_on: str | None) -> list[str]:
        """Make sure the user's disks are safe under their backup names on the source host
        before the control plane removes the VM from ``deployed_on`` (where it is deployed
        now, if anywhere). Returns the steps taken."""

    @abstractmethod
    def restore_disks(self, vm: VM, ctx: Context) -> list[str]:
        """On the source host, with the VM defined there and off: check each backup is the
        user's disk, remove what the control plane put at the disk's path, and put the backup
        back at its path."""

    @abstractmethod
    def check_restored(self, vm: VM, ctx: Context) -> list[DiskCheck]:
        """The disks at their paths on the source host are the user's."""

    def discard_copies(self, vm: VM, ctx: Context, host: str) -> list[str]:
        """After a rollback whose disks were checked on the source: remove what the move left
        on ``host`` (copies, a partial copy). Never the only copy. Returns the steps taken."""
        return []

    def discard_staging(self, vm: VM, ctx: Context) -> list[str]:
        """After a rollback: remove what :meth:`precopy` staged (never a disk of the user's).
        Returns the steps taken."""
        return []


class AllocationStrategy(Strategy):
    """Makes the control plane place new deploys on the target hosts only, and puts that
    back afterwards (also after a failed or interrupted campaign)."""

    kind = "allocation"

    @abstractmethod
    def fence(self, ctx: Context) -> FenceResult:
        """Change the rules; return a record of what was there before."""

    @abstractmethod
    def unfence(self, ctx: Context, fenced: FenceResult) -> UnfenceResult:
        """Restore what ``fence`` recorded."""

    def choose_target(self, vm: VM, ctx: Context, need: Need,
                      targets: list[TargetLoad]) -> str | None:
        """For a control plane that lets rehost place VMs (``places_vms = False``): the
        target host for ``vm``, or None when none fits. A strategy that only fences says so."""
        raise ConfigError(f"allocation strategy {self.name!r} cannot place VMs itself: the "
                          f"control plane {ctx.config.control.strategy!r} needs one that does")

    @classmethod
    def places(cls) -> bool:
        """Whether this strategy can choose targets itself (:meth:`choose_target`)."""
        return cls.choose_target is not AllocationStrategy.choose_target


class ControlPlane(Strategy):
    """The system that owns the VMs (Abiquo, a site's manager): which VMs move, where they
    run, and the stages that happen there. ``backup_xml``, ``power_off`` and ``undefine``
    have libvirt defaults here."""

    kind = "control"
    #: the control plane chooses where a VM is deployed (the allocation strategy fences it);
    #: False: rehost chooses, with the allocation strategy's ``choose_target``
    places_vms: ClassVar[bool] = True
    #: the deploy creates new (template) disks at the VM's disk paths, which
    #: ``remove_new_disks`` removes; False: the stage is skipped
    deploys_new_disks: ClassVar[bool] = True

    def discover_hosts(self, ctx: Context) -> list[Host]:
        """Hosts the control plane knows that the site config does not name."""
        return []

    @abstractmethod
    def select_vms(self, ctx: Context) -> list[VM]:
        """The campaign's VMs (the journal's, and the new ones on the source hosts)."""

    def capacity(self, ctx: Context, host: str) -> TargetLoad:
        """What ``host`` can hold and holds now (the evacuation plan's view): by default
        libvirt's — the host's CPUs times the allocation strategy's ``target_cpu`` percent
        (400 when it has none: four virtual CPUs a core), its memory, its datastore's free
        space, and the domains defined there."""
        facts = ctx.facts(host)
        hv = ctx.hypervisor(host)
        used = [hv.resources(d.name) for d in hv.domains()]
        percent = int(getattr(ctx.allocation, "target_cpu", 400) or 400)
        return TargetLoad(host=host, cpus=facts.cpus * percent // 100,
                          memory_mib=facts.memory_mib,
                          free_bytes=facts.datastore_free_bytes or 0,
                          used_cpus=sum(c for c, _ in used), used_mib=sum(m for _, m in used))

    def predict_target(self, vm: VM, ctx: Context) -> str | None:
        """Where ``vm`` is expected to be deployed, asked while it still runs (the storage
        strategy pre-copies its disks there). By default: the only target host that passes
        :meth:`guard_target`, else the allocation strategy's ``choose_target`` among them as
        libvirt shows them now (their CPUs, memory, datastore space and defined domains);
        ``None`` when the allocation strategy cannot place VMs. A control plane that places
        VMs itself may deploy elsewhere: the transfer then copies in full."""
        targets = []
        for h in ctx.config.targets():
            try:
                self.guard_target(ctx, h.name)
            except PreconditionError:
                continue
            targets.append(h.name)
        if len(targets) <= 1:
            return targets[0] if targets else None
        if not type(ctx.allocation).places():
            return None
        cpus, mib = ctx.hypervisor(_source(vm)).resources(vm.name)
        size = sum(ctx.storage.space_needed(ctx, vm, d) for d in vm.file_disks())
        loads = []
        for name in targets:
            facts = ctx.facts(name)
            hv = ctx.hypervisor(name)
            used = [hv.resources(d.name) for d in hv.domains()]
            loads.append(TargetLoad(host=name, cpus=facts.cpus, memory_mib=facts.memory_mib,
                                    free_bytes=facts.datastore_free_bytes or 0,
                                    used_cpus=sum(c for c, _ in used),
                                    used_mib=sum(m for _, m in used)))
        found: str | None = ctx.allocation.choose_target(
            vm, ctx, Need(cpus=cpus, memory_mib=mib, bytes=size), loads)
        return found

    def rejoined(self, ctx: Context, host: str) -> None:
        """A host emptied by an evacuation is back as CentOS 6 (checked by the core): tell
        the control plane, if it keeps a record of hosts. Nothing by default."""

    def guard_target(self, ctx: Context, host: str) -> None:
        """Raise :class:`PreconditionError` unless the user's disks may be put on ``host``.
        Storage strategies call it before they touch a target host."""
        if ctx.host(host).role != "target":
            raise PreconditionError(f"{host} is not a target host: will not touch its disks")

    @abstractmethod
    def locate(self, vm: VM, ctx: Context) -> LocateResult: ...

    def backup_xml(self, vm: VM, ctx: Context) -> BackupXmlResult:
        """Save the domain XML (the persistent definition, and the live one: it names
        backing chains) and list the disks. A backup an earlier run saved is kept: after
        ``undefine`` it is the only copy."""
        path = ctx.vm_dir(vm) / "domain.xml"
        live_path = ctx.vm_dir(vm) / "domain-live.xml"
        if not path.exists():
            hv = ctx.hypervisor(_source(vm))
            xml = hv.dumpxml(vm.name, inactive=True)
            live = hv.dumpxml(vm.name)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(xml)
            tmp.replace(path)
            live_path.write_text(live)
        text = live_path.read_text() if live_path.exists() else path.read_text()
        vm.disks = parse_disks(text)
        # what would stop the disks later stops the VM now, while it still runs
        src = ctx.shell(_source(vm))
        missing = [d.source for d in vm.file_disks() if not src.exists(d.source or "")
                   and not src.exists((d.source or "") + "_BACK")]
        if missing:
            raise PreconditionError(f"{vm.name}: its disk {missing[0]} is not on "
                                    f"{vm.source_host}: nothing was changed")
        refused = [f for f in ctx.storage.check_vm(vm, ctx) if f.severity == "critical"]
        if refused:
            raise PreconditionError(f"{vm.name}: {refused[0].message}: nothing was changed")
        return BackupXmlResult(xml=str(path), disks=len(vm.disks),
                               file_disks=[d.source or "" for d in vm.file_disks()],
                               other_disks=[d.source for d in vm.disks if not d.is_file])

    def power_off(self, vm: VM, ctx: Context) -> PowerOffResult:
        """Graceful within ``campaign.power_off_timeout``, then forced."""
        hv = ctx.hypervisor(_source(vm))
        if not hv.exists(vm.name):
            return PowerOffResult(how="not defined")
        how = hv.power_off(vm.name, timeout=ctx.config.campaign.power_off_timeout)
        return PowerOffResult(how=how, libvirt_state=hv.state(vm.name))

    def undefine(self, vm: VM, ctx: Context) -> UndefineResult:
        if not (ctx.state_dir / "vms" / vm.name / "domain.xml").exists():
            raise PreconditionError(f"no XML backup of {vm.name}: will not undefine it")
        hv = ctx.hypervisor(_source(vm))
        if not hv.exists(vm.name):
            return UndefineResult(undefined=False, already=True)
        if hv.state(vm.name) == "running":
            raise PreconditionError(f"{vm.name} is running on {vm.source_host}: power it off "
                                    "first")
        hv.undefine(vm.name)
        return UndefineResult(undefined=True, host=vm.source_host)

    @abstractmethod
    def await_undeployed(self, vm: VM, ctx: Context) -> AwaitUndeployedResult: ...

    @abstractmethod
    def deploy(self, vm: VM, ctx: Context) -> DeployResult:
        """Define the VM on a target host (sets ``vm.target_host``) and check it landed on
        one: the user's disks must be safe under their backup names first."""

    @abstractmethod
    def power_off_new(self, vm: VM, ctx: Context) -> PowerOffNewResult: ...

    @abstractmethod
    def start(self, vm: VM, ctx: Context) -> StartResult: ...

    @abstractmethod
    def rollback(self, vm: VM, ctx: Context) -> RollbackResult:
        """Put a VM that stopped part-way back on its source host on its own disks, through
        the storage strategy's ``secure_disks``, ``restore_disks`` and ``check_restored``."""


class BackupStrategy(Strategy):
    """Copies each file disk of a VM to a backup location before the window: the
    ``backup_disks`` stage, after ``backup_xml`` and before the power-off, while the VM still
    runs. A failure stops that VM there, before anything changes; the others go on.

    ``backup`` must be safe to run twice (a campaign killed inside the stage runs it again)
    and must not touch the VM's disks; the result names each copy
    (:class:`~rehost.core.types.DiskBackup`). ``cleanup`` runs after the VM's own ``cleanup``
    stage deleted its ``X_BACK`` (``rehost confirm``, ``--delete-backups``): it deletes the
    copies unless the site keeps them (:attr:`keep`)."""

    kind = "backup"
    #: the copies outlive the campaign (``rehost confirm`` leaves them): reports say so
    keep: bool = True

    def where(self) -> str:
        """Where the copies go, in words, for reports and ``rehost status`` ("" for none)."""
        return ""

    @abstractmethod
    def backup(self, vm: VM, ctx: Context) -> BackupDisksResult:
        """Copy every file disk of ``vm`` (``vm.file_disks()``, listed by ``backup_xml``)
        to the backup location and verify each copy; raise (a :class:`PreconditionError`
        saying what failed) when one cannot be made. The VM runs: nothing of it may change."""

    def cleanup(self, vm: VM, ctx: Context, made: BackupDisksResult) -> list[str]:
        """The VM is verified on its new host and its ``X_BACK`` were deleted: delete the
        copies ``made`` unless they are kept. Returns the steps taken."""
        return []


class NoBackup(BackupStrategy):
    """No backup before the window: ``[backup] strategy = "none"``, the default. The core
    offers it itself (a campaign needs no backup plugin to run)."""

    name = "none"

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.reject_unknown_options()

    def backup(self, vm: VM, ctx: Context) -> BackupDisksResult:
        return BackupDisksResult(skipped="no backup before the window is configured "
                                         '([backup] strategy = "none")')


#: The base class each kind's factory must build.
KINDS: dict[str, type[Strategy]] = {
    "storage": StorageStrategy, "allocation": AllocationStrategy, "control": ControlPlane,
    "backup": BackupStrategy,
}


def _source(vm: VM) -> str:
    if not vm.source_host:
        raise PreconditionError(f"{vm.name}: its source host is not known (locate first)")
    return vm.source_host
