"""``contract-copy``: a site storage strategy written against ``rehost.api`` only.

It subclasses :class:`rehost.api.StorageStrategy` directly (no built-in strategy under it)
and implements every stage itself, as a site would from the plugin guide: the user's disk
``X`` is kept as ``X_BACK`` (:func:`rehost.api.backup_path`: the Abiquo control plane looks for
that name before it deploys), copied host to host with ``scp`` run on the source host, and
checked at every step against the fingerprint taken when it was preserved.

Options (``[storage.options]``): ``verify`` = ``"checksum"`` (the whole disk's sha1, both
ends) or ``"size"`` (the size and the md5 of sampled 1 MiB blocks).

The tests copy this file to ``contract-copy.py`` and load it with ``[plugins] files``: the
plugin is named after the file.
"""

from __future__ import annotations

import time
from typing import Any

from rehost.api import (
    VM,
    CleanupResult,
    ConfigError,
    Context,
    Disk,
    DiskCheck,
    PreconditionError,
    PreservedDisk,
    PreserveResult,
    RemovedDisk,
    RemoveNewDisksResult,
    Sample,
    Shell,
    StorageStrategy,
    StrategyRecord,
    SwappedDisk,
    SwapResult,
    TransferResult,
    VerifyResult,
    backup_path,
    hookimpl,
    shell_safe,
    source_host,
    target_host,
)

ALGORITHM = "sha1"
BLOCK = 1 << 20
SAMPLES = 8


def sample_blocks(size: int) -> list[int]:
    """The first block, the last, and the rest evenly spaced (every block of a small disk)."""
    count = -(-size // BLOCK)
    if count <= SAMPLES:
        return list(range(count))
    return sorted({round(i * (count - 1) / (SAMPLES - 1)) for i in range(SAMPLES)})


class ContractCopy(StorageStrategy):
    name = "contract-copy"

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.verify_mode = str(self.options.pop("verify", "checksum"))
        if self.verify_mode not in ("checksum", "size"):
            raise ConfigError(f"storage.options.verify: checksum or size, not "
                              f"{self.verify_mode!r}")
        self.reject_unknown_options()

    # -- fingerprints ---------------------------------------------------------------------------

    def fingerprint(self, sh: Shell, disk: Disk, back: str) -> PreservedDisk:
        st = sh.stat(back)
        rec = PreservedDisk(path=disk.source or "", backup=back, size=st.size,
                            allocated=st.allocated, target=disk.target, format=disk.format)
        if self.verify_mode == "checksum":
            rec.checksum, rec.algorithm = sh.checksum(back, ALGORITHM), ALGORITHM
        else:
            blocks = sample_blocks(st.size)
            rec.sample = Sample(block=BLOCK, blocks=blocks,
                                md5=sh.sample_digests(back, BLOCK, blocks))
        return rec

    def check(self, vm: VM, ctx: Context, host: str, disk: Disk, path: str) -> DiskCheck:
        """``path`` on ``host`` is the user's disk, as preserved; PreconditionError if not."""
        preserved = vm.fact(PreserveResult)
        rec = preserved.disk(disk.source) if preserved else None
        if rec is None:
            raise PreconditionError(f"{disk.source}: no fingerprint from preserve_disks")
        sh = ctx.shell(host)
        if not sh.exists(path):
            raise PreconditionError(f"{path} is not on {host}")
        st = sh.stat(path)
        if st.size != rec.size:
            raise PreconditionError(f"{path} on {host} is {st.size} bytes, the user's disk "
                                    f"was {rec.size}")
        out = DiskCheck(path=path, size=st.size, allocated=st.allocated)
        if rec.checksum and rec.algorithm:
            got = sh.checksum(path, rec.algorithm)
            if got != rec.checksum:
                raise PreconditionError(f"{path} on {host} has {rec.algorithm} {got}, the "
                                        f"user's disk had {rec.checksum}")
            out.checksum, out.algorithm = got, rec.algorithm
        if rec.sample and rec.sample.blocks:
            md5 = sh.sample_digests(path, rec.sample.block, rec.sample.blocks)
            if md5 != rec.sample.md5:
                raise PreconditionError(f"{path} on {host} differs from the user's disk in "
                                        "its sampled blocks")
            out.sample_blocks = len(rec.sample.blocks)
        return out

    # -- stages ---------------------------------------------------------------------------------

    def space_needed(self, ctx: Context, vm: VM, disk: Disk) -> int:
        sh = ctx.shell(source_host(vm))
        path = disk.source or ""
        return sh.stat(path if sh.exists(path) else backup_path(disk)).size

    def preserve_disks(self, vm: VM, ctx: Context) -> PreserveResult:
        src = source_host(vm)
        if ctx.hypervisor(src).exists(vm.name):
            raise PreconditionError(f"{vm.name} is still defined on {src}")
        sh = ctx.shell(src)
        disks = []
        for disk in vm.file_disks():
            back = backup_path(disk)
            sh.rename(disk.source or "", back)  # never overwrites; done before: nothing to do
            disks.append(self.fingerprint(sh, disk, back))
        return PreserveResult(disks=disks,
                              untouched=[d.source for d in vm.disks if not d.is_file and d.source])

    def transfer(self, vm: VM, ctx: Context) -> TransferResult:
        src, tgt = source_host(vm), target_host(vm, ctx)
        source, target = ctx.shell(src), ctx.shell(tgt)
        to = ctx.host(tgt)
        started = time.monotonic()
        copied = []
        for disk in vm.file_disks():
            back = backup_path(disk)
            if not shell_safe(back):
                raise PreconditionError(f"scp cannot carry {back!r} safely")
            if target.exists(back):
                try:
                    done = self.check(vm, ctx, tgt, disk, back)
                except PreconditionError:
                    target.remove(back)  # a partial copy of an earlier run
                else:
                    done.skipped = "already on the target"
                    copied.append(done)
                    continue
            t0 = time.monotonic()
            source.run(["scp", "-p", "-q", "-B", back, f"{to.ssh_user}@{to.address}:{back}"],
                       timeout=3600)
            arrived = self.check(vm, ctx, tgt, disk, back)
            arrived.bytes = arrived.size or 0
            arrived.seconds = round(time.monotonic() - t0, 3)
            ctx.hooks.transfer_progress(vm, ctx, back, arrived.bytes, arrived.bytes,
                                        arrived.seconds)
            copied.append(arrived)
        seconds = max(time.monotonic() - started, 1e-6)
        total = sum(c.bytes for c in copied)
        return TransferResult(disks=copied, bytes=total, seconds=round(seconds, 3),
                              rate_mib_s=round(total / seconds / 2**20, 1), strategy=self.name)

    def remove_new_disks(self, vm: VM, ctx: Context) -> RemoveNewDisksResult:
        tgt = target_host(vm, ctx)
        hv = ctx.hypervisor(tgt)
        if not hv.exists(vm.name):
            raise PreconditionError(f"{vm.name} is not defined on {tgt}")
        if hv.state(vm.name) == "running":
            raise PreconditionError(f"{vm.name} is running on {tgt}")
        sh = ctx.shell(tgt)
        for disk in vm.file_disks():  # every copy first: a template goes only then
            if not sh.exists(backup_path(disk)):
                raise PreconditionError(f"{backup_path(disk)} has not arrived on {tgt}")
        removed, owner = [], None
        for disk in vm.file_disks():
            path = disk.source or ""
            if sh.exists(path):
                st = sh.stat(path)
                owner = owner or f"{st.uid}:{st.gid}"
                sh.remove(path)
                removed.append(RemovedDisk(path=path, size=st.size, allocated=st.allocated))
        before = vm.fact(RemoveNewDisksResult)
        return RemoveNewDisksResult(removed=removed,
                                    owner=owner or (before.owner if before else None))

    def swap_disks(self, vm: VM, ctx: Context) -> SwapResult:
        tgt = target_host(vm, ctx)
        sh = ctx.shell(tgt)
        removed = vm.fact(RemoveNewDisksResult)
        owner = removed.owner if removed else None
        swapped = []
        for disk in vm.file_disks():
            path = disk.source or ""
            sh.rename(backup_path(disk), path)
            if owner:
                sh.chown(path, owner)
            st = sh.stat(path)
            swapped.append(SwappedDisk(path=path, owner=f"{st.owner}:{st.group}", size=st.size))
        return SwapResult(disks=swapped)

    def verify(self, vm: VM, ctx: Context) -> VerifyResult:
        tgt = target_host(vm, ctx)
        state = ctx.hypervisor(tgt).state(vm.name)
        if state != "running":
            raise PreconditionError(f"{vm.name} is {state} on {tgt}, not running")
        disks = [self.check(vm, ctx, tgt, d, d.source or "") for d in vm.file_disks()]
        method = "checksum" if all(d.checksum for d in disks) else "size+sample"
        return VerifyResult(ok=True, host=tgt, method=method, disks=disks)

    def cleanup(self, vm: VM, ctx: Context, delete: bool) -> CleanupResult:
        verified = vm.fact(VerifyResult)
        if not (verified and verified.ok):
            raise PreconditionError(f"{vm.name} is not verified: its backups stay")
        src = source_host(vm)
        sh = ctx.shell(src)
        present = [b for b in (backup_path(d) for d in vm.file_disks()) if sh.exists(b)]
        if not delete:
            return CleanupResult(host=src, pending=present)
        for b in present:
            sh.remove(b)
        return CleanupResult(host=src, deleted=present)

    # -- rollback ------------------------------------------------------------------------------
    # The copy is never shared: until cleanup, the user's disk is X_BACK on the source host,
    # whatever happened on the target (the template there, or the swapped-in copy).

    def secure_disks(self, vm: VM, ctx: Context, deployed_on: str | None) -> list[str]:
        src = source_host(vm)
        sh = ctx.shell(src)
        preserved = vm.fact(PreserveResult) is not None
        todo = []
        for disk in vm.file_disks():
            path, back = disk.source or "", backup_path(disk)
            if sh.exists(back):
                continue
            if not preserved and sh.exists(path):
                todo.append(disk)  # undefined, never preserved: X is still the user's disk
                continue
            raise PreconditionError(f"the user's disk {path} is not on {src} as {back}: "
                                    "nothing changed")
        steps = []
        for disk in todo:
            sh.rename(disk.source or "", backup_path(disk))
            steps.append(f"preserved {disk.source} as {backup_path(disk)}")
        if todo:
            vm.facts[PreserveResult.stage] = PreserveResult(
                disks=[self.fingerprint(sh, d, backup_path(d)) for d in vm.file_disks()])
        return steps

    def restore_disks(self, vm: VM, ctx: Context) -> list[str]:
        src = source_host(vm)
        hv = ctx.hypervisor(src)
        if not hv.exists(vm.name) or hv.state(vm.name) == "running":
            raise PreconditionError(f"{vm.name} must be defined and off on {src}")
        sh = ctx.shell(src)
        for disk in vm.file_disks():  # every backup is the user's disk, before any change
            if sh.exists(backup_path(disk)):
                self.check(vm, ctx, src, disk, backup_path(disk))
        steps = []
        for disk in vm.file_disks():
            path, back = disk.source or "", backup_path(disk)
            if not sh.exists(back):
                self.check(vm, ctx, src, disk, path)  # put back by an earlier run
                continue
            owner = None
            if sh.exists(path):
                st = sh.stat(path)
                owner = f"{st.uid}:{st.gid}"
                sh.remove(path)  # what the control plane deployed there: a template
            sh.rename(back, path)
            if owner:
                sh.chown(path, owner)
            steps.append(f"put {back} back at {path}")
        return steps

    def check_restored(self, vm: VM, ctx: Context) -> list[DiskCheck]:
        src = source_host(vm)
        return [self.check(vm, ctx, src, d, d.source or "") for d in vm.file_disks()]


@hookimpl
def rehost_storage_strategies() -> list[StrategyRecord]:
    return [StrategyRecord("storage", "contract-copy",
                           "scp host to host, written against rehost.api only", ContractCopy)]
