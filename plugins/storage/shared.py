"""``shared``: the source and target hosts see one datastore (NFS, a cluster filesystem).

Nothing is copied of a disk on the shared datastore: ``X_BACK`` is already where the target
host can see it. The transfer checks that the target really sees the user's file (size and
checksum), so a datastore that only looks shared cannot lose a disk. A disk's backing files
must be on the target host already, the same as on the source host: the preflight refuses a VM
whose backing file a target lacks, and the transfer compares their digests.

**The datastore check, per disk.** A VM may have been deployed to another datastore than the
shared one (a host's local disk): the manual says such disks must be copied even on a
shared-storage site. At the transfer, before anything is moved, each disk is looked at:

* the path the target's new domain gives the disk (Abiquo deployed it there) must be the
  disk's own path; a disk deployed to another path is refused (rehost moves a disk to the same
  path only), before anything changes;
* the datastore holding ``X_BACK`` is the one the target sees at that path only when a marker
  file written next to ``X_BACK`` on the source host is seen there from the target host (the
  preflight's probe, per folder): the identity of a file system is proved by a file, not
  guessed from a path or from device numbers, which differ between the clients of one NFS
  export and may agree between two hosts' local disks.

A disk the target sees is shared (nothing copied, the target's view checked); any other disk
is copied by the copy strategy ``copy_with`` (``tar``, the default, or ``scp``, or any copying
storage strategy a plugin offers), which checks what arrived as it always does. Each
``DiskCheck`` of the transfer says ``shared`` (true or false) and ``why``. Everything after the
transfer is per disk already: a copied disk's ``X_BACK`` stays on the source host until
cleanup; a shared one is renamed in place.

Options (``[storage.options]``): ``copy_with`` (default ``tar``), with the checks' options of
every datastore strategy (``checksum``, ``verify``, ``digest``, ``samples``), which the copy
strategy gets too.
"""

from __future__ import annotations

import posixpath
import threading
import time
from typing import Any

from rehost.api import (
    VM,
    ConfigError,
    Context,
    DatastoreStrategy,
    Disk,
    DiskCheck,
    Finding,
    PreconditionError,
    RehostError,
    StrategyRecord,
    TransferResult,
    backup_path,
    hookimpl,
    same_datastore,
    source_host,
    target_host,
)

SEEN = "the target host sees the datastore that holds X_BACK"


class SharedDatastore(DatastoreStrategy):
    name = "shared"
    fills_holes = False
    backing_files = "check"  # they must be on the datastore the target sees: nothing is copied

    def take_options(self) -> None:
        self.copy_with = str(self.options.pop("copy_with", "tar"))
        if self.copy_with == self.name:
            raise ConfigError("storage.options.copy_with: name a copying strategy (tar, scp), "
                              "not shared")
        self._copier: DatastoreStrategy | None = None
        # (source host, folder, target host) -> whether the target sees the source's folder
        self._seen: dict[tuple[str, str, str], bool] = {}
        self._seen_lock = threading.Lock()

    # -- which disks are shared ---------------------------------------------------------------

    def copier(self, ctx: Context) -> DatastoreStrategy:
        """The strategy that copies the disks the target does not see (``copy_with``), built
        once with this strategy's check options."""
        if self._copier is None:
            records = [r for _, offered in ctx.hooks.strategy_offers("storage")
                       for r in offered if r.name == self.copy_with]
            if not records:
                names = sorted({r.name for _, offered in ctx.hooks.strategy_offers("storage")
                                for r in offered} - {self.name})
                raise ConfigError(f"storage.options.copy_with = {self.copy_with!r}: choose one "
                                  f"of {', '.join(names)}")
            options: dict[str, Any] = {"checksum": self.checksum, "verify": self.verify_mode,
                                       "samples": self.samples,
                                       "digest": "sparse" if self.content_algorithm.startswith(
                                           "sparse-") else "whole"}
            built = records[0].factory(options)
            if not isinstance(built, DatastoreStrategy) or built.backing_files != "copy":
                raise ConfigError(f"storage.options.copy_with = {self.copy_with!r}: not a "
                                  "strategy that copies file disks host to host")
            self._copier = built
        return self._copier

    def sees(self, ctx: Context, src: str, path: str, tgt: str) -> bool:
        """Whether ``tgt`` sees the file system that holds ``path``'s folder on ``src``: a
        marker written there on ``src`` is looked for from ``tgt`` (once per folder)."""
        key = (src, posixpath.dirname(path), tgt)
        with self._seen_lock:
            if key in self._seen:
                return self._seen[key]
        seen = same_datastore(ctx.shell(src), ctx.shell(tgt), path)
        with self._seen_lock:
            self._seen[key] = seen
        return seen

    def disk_shared(self, vm: VM, ctx: Context, disk: Disk, tgt: str) -> tuple[bool, str]:
        """Whether ``disk`` is on the datastore ``tgt`` sees, and why (said in the report)."""
        src = source_host(vm)
        back = backup_path(disk)
        folder = posixpath.dirname(back)
        if self.sees(ctx, src, back, tgt):
            return True, SEEN
        return False, (f"{tgt} does not see the datastore {folder} of {src} (a marker written "
                       f"there on {src} is not seen from {tgt}): the VM was deployed to "
                       "another datastore than the shared one")

    def deployed_paths(self, vm: VM, ctx: Context, tgt: str) -> None:
        """The target's new domain puts each disk at its own path: a disk Abiquo deployed to
        another path (another datastore's mount point) is refused, before anything moves."""
        hv = ctx.hypervisor(tgt)
        if not hv.exists(vm.name):
            return
        there = {d.target: d.source for d in hv.disks(vm.name, inactive=True) if d.is_file}
        for disk in vm.file_disks():
            path = there.get(disk.target)
            if path is not None and path != disk.source:
                raise PreconditionError(
                    f"{vm.name}'s disk {disk.target} was deployed on {tgt} at {path}, not at "
                    f"{disk.source} (another datastore): rehost moves a disk to the same path "
                    "only; nothing was copied or renamed")

    # -- preflight ----------------------------------------------------------------------------

    def space_needed(self, ctx: Context, vm: VM, disk: Disk) -> int:
        """Nothing for a disk every target sees; what the copy needs for one they do not."""
        src = vm.source_host
        if not src or not disk.source:
            return 0
        try:
            targets = [h.name for h in ctx.config.targets()]
            if all(self.sees(ctx, src, disk.source, t) for t in targets):
                return 0
        except RehostError:
            return 0  # a host that does not answer: the preflight says so already
        return self.copier(ctx).space_needed(ctx, vm, disk)

    def preflight(self, ctx: Context) -> list[Finding]:
        """The copy strategy ``copy_with`` exists and copies file disks."""
        out = super().preflight(ctx)
        try:
            self.copier(ctx)
        except ConfigError as exc:
            out.append(Finding("critical", "copy-with", str(exc)))
        return out

    def check_vm(self, vm: VM, ctx: Context) -> list[Finding]:
        out = super().check_vm(vm, ctx)
        src = vm.source_host
        if not src:
            return out
        targets = [h.name for h in ctx.config.targets()]
        for disk in vm.file_disks():
            try:
                blind = [t for t in targets if not self.sees(ctx, src, disk.source or "", t)]
            except RehostError:
                continue
            if blind:
                out.append(Finding("info", "not-shared",
                                   f"{disk.source} is on a datastore {', '.join(blind)} do(es) "
                                   f"not see: it is copied with {self.copy_with} there",
                                   vm=vm.label or vm.name))
        return out

    # -- transfer -----------------------------------------------------------------------------

    def transfer(self, vm: VM, ctx: Context) -> TransferResult:
        started = time.monotonic()
        tgt = target_host(vm, ctx)
        self.deployed_paths(vm, ctx, tgt)
        decided = [(disk, *self.disk_shared(vm, ctx, disk, tgt)) for disk in vm.file_disks()]
        checks: dict[str, DiskCheck] = {}
        backing: list[dict[str, object]] = []
        for disk, shared, _ in decided:
            if not shared:
                continue
            backing += self.carry_backing(vm, ctx, disk)
            arrived = self.check_arrived(vm, ctx, tgt, disk)
            arrived.bytes = 0
            checks[disk.target] = arrived
        copied = [disk for disk, shared, _ in decided if not shared]
        moved: TransferResult | None = None
        if copied:
            # the copy strategy's own transfer, for the disks the target does not see
            alone = VM(name=vm.name, uuid=vm.uuid, label=vm.label, control_ref=vm.control_ref,
                       source_host=vm.source_host, target_host=vm.target_host, disks=copied,
                       facts=vm.facts)
            moved = self.copier(ctx).transfer(alone, ctx)
            for disk, check in zip(copied, moved.disks, strict=True):
                checks[disk.target] = check
            backing += list((moved.model_extra or {}).get("backing_files") or [])
        seen = []
        for disk, shared, why in decided:
            check = checks[disk.target]
            # extra fields: whether the disk was shared, and why (the report says both)
            check.shared = shared  # type: ignore[attr-defined]
            check.why = why if shared else f"with {self.copy_with}: {why}"  # type: ignore[attr-defined]
            seen.append(check)
        result = self.copy_result(seen, started)
        result.shared = not copied
        if copied:
            result.strategy = f"{self.name}+{self.copy_with}"
        if backing:
            result.backing_files = backing  # type: ignore[attr-defined]  # an extra field
        return result


@hookimpl(trylast=True)
def rehost_storage_strategies() -> list[StrategyRecord]:
    return [StrategyRecord("storage", "shared",
                           "the datastore is shared by source and target: move in place, no "
                           "copy; a disk on a datastore the target does not see is copied "
                           "(copy_with)", SharedDatastore)]
