"""A base for storage strategies whose disks are files on a datastore: preserve, remove the
template disks, swap, verify, clean up and roll back are written once here; a strategy says
only how ``X_BACK`` gets to the target datastore (:meth:`DatastoreStrategy.transfer`, usually
through :meth:`DatastoreStrategy.copy_disks`).

Destructive steps check their precondition first:

* ``preserve_disks`` only once the domain is gone from the source host;
* ``remove_new_disks`` only on a target host the control plane accepts
  (:meth:`~rehost.core.strategies.ControlPlane.guard_target`) where the new domain is off, and
  never before the user's disk has arrived there;
* ``swap_disks`` never overwrites a file;
* ``cleanup`` deletes ``X_BACK`` only after ``verify`` passed, and only when asked;
* a rollback puts a disk back only after it was found to be the user's.

Options (``[storage.options]``): ``checksum`` (md5, sha1, sha256; default sha1), ``verify``
(``checksum``: the whole disk at both ends; ``size``: the size and ``samples`` sampled 1 MiB
blocks).
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rehost.core.errors import ConfigError, PreconditionError, RehostError
from rehost.core.strategies import StorageStrategy
from rehost.core.types import (
    VM,
    CleanupResult,
    Context,
    Disk,
    DiskCheck,
    Host,
    PreservedDisk,
    PreserveResult,
    RemovedDisk,
    RemoveNewDisksResult,
    Sample,
    SwappedDisk,
    SwapResult,
    TransferResult,
    VerifyResult,
)

if TYPE_CHECKING:
    from rehost.core.remote import Shell

BACK_SUFFIX = "_BACK"

#: the block size of verify = "size" samples
SAMPLE_BLOCK = 1 << 20

#: Paths a remote shell reads as plain words (no quoting needed, none possible to get wrong):
#: for tools such as scp whose remote path goes through a shell on one protocol and not on
#: the other.
SHELL_SAFE_PATH = re.compile(r"^/[A-Za-z0-9._/+@%=:,-]*$")


def shell_safe(path: str) -> bool:
    """``path`` is absolute, made of characters no shell interprets, no word starts with
    ``-``."""
    return bool(SHELL_SAFE_PATH.match(path)) and "/-" not in path


def backup_path(disk: Disk) -> str:
    """Where the user's disk is kept while the VM moves: ``X`` becomes ``X_BACK``."""
    if not disk.source:
        raise PreconditionError(f"disk {disk.target} has no source path")
    return disk.source + BACK_SUFFIX


def source_host(vm: VM) -> str:
    """The VM's source host (``locate`` found it)."""
    if not vm.source_host:
        raise PreconditionError(f"{vm.name}: its source host is not known (locate first)")
    return vm.source_host


def target_host(vm: VM, ctx: Context) -> str:
    """The VM's target host, once the control plane agrees disks may be put there."""
    if not vm.target_host:
        raise PreconditionError(f"{vm.name}: not deployed on a target host yet")
    ctx.control.guard_target(ctx, vm.target_host)
    return vm.target_host


def same_datastore(one: Shell, other: Shell, path: str) -> bool:
    """Whether two hosts see one file system at ``path``'s folder (a shared datastore): a
    marker written next to it on one host is looked for from the other."""
    marker = f"{path}.rehost-probe-{secrets.token_hex(4)}"
    one.write_text(marker, "probe\n")
    try:
        return other.exists(marker)
    finally:
        one.remove(marker)


class DatastoreStrategy(StorageStrategy):
    """Base of storage strategies for file disks on datastores (see the module)."""

    name = "datastore"
    #: the copy writes the whole virtual size on the target (space needed is the full size)
    fills_holes = True
    #: seconds between two looks at a copy's progress on the target
    progress_interval = 2.0

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.checksum = str(self.options.pop("checksum", "sha1"))
        if self.checksum not in ("md5", "sha1", "sha256"):
            raise ConfigError(f"storage.options.checksum: choose md5, sha1 or sha256, "
                              f"not {self.checksum!r}")
        self.verify_mode = str(self.options.pop("verify", "checksum"))
        if self.verify_mode not in ("checksum", "size"):
            raise ConfigError(f"storage.options.verify: choose checksum or size, "
                              f"not {self.verify_mode!r}")
        samples = self.options.pop("samples", 16)
        if not isinstance(samples, int) or isinstance(samples, bool) or samples < 0:
            raise ConfigError(f"storage.options.samples: a whole number of blocks, 0 or more,"
                              f" not {samples!r}")
        self.samples = samples
        self.take_options()
        self.reject_unknown_options()

    def take_options(self) -> None:
        """A subclass pops its own options from ``self.options`` here."""

    # -- preflight ----------------------------------------------------------------------------

    def space_needed(self, ctx: Context, vm: VM, disk: Disk) -> int:
        """Full size when the copy fills holes, allocated size when it keeps them. (A resumed
        campaign finds the disk under its ``_BACK`` name.)"""
        sh = ctx.shell(source_host(vm))
        path = disk.source or ""
        st = sh.stat(path if sh.exists(path) else backup_path(disk))
        return st.size if self.fills_holes else st.allocated

    # -- stages -------------------------------------------------------------------------------

    def preserve_disks(self, vm: VM, ctx: Context) -> PreserveResult:
        src = source_host(vm)
        if ctx.hypervisor(src).exists(vm.name):
            raise PreconditionError(
                f"{vm.name} is still defined on {src}: will not rename its disks")
        sh = ctx.shell(src)
        out = []
        for disk in vm.file_disks():
            back = backup_path(disk)
            sh.rename(disk.source or "", back)
            out.append(self.fingerprint(sh, disk, back))
        kept = [d.source for d in vm.disks if not d.is_file and d.source]
        return PreserveResult(disks=out, untouched=kept)

    def fingerprint(self, sh: Shell, disk: Disk, back: str) -> PreservedDisk:
        """What later checks compare a copy with: the size, and the checksum or a sample."""
        st = sh.stat(back)
        rec = PreservedDisk(path=disk.source or "", backup=back, size=st.size,
                            virtual_size=virtual_size(sh, back, disk, st.size),
                            allocated=st.allocated, target=disk.target, format=disk.format,
                            owner=f"{st.uid}:{st.gid}")
        if self.verify_mode == "checksum":
            rec.checksum = sh.checksum(back, self.checksum)
            rec.algorithm = self.checksum
        elif self.samples:
            blocks = sample_blocks(st.size, SAMPLE_BLOCK, self.samples)
            rec.sample = Sample(block=SAMPLE_BLOCK, blocks=blocks,
                                md5=sh.sample_digests(back, SAMPLE_BLOCK, blocks))
        return rec

    def transfer(self, vm: VM, ctx: Context) -> TransferResult:
        raise NotImplementedError(f"storage strategy {self.name!r} has no transfer")

    def remove_new_disks(self, vm: VM, ctx: Context) -> RemoveNewDisksResult:
        tgt = target_host(vm, ctx)
        hv = ctx.hypervisor(tgt)
        if not hv.exists(vm.name):
            raise PreconditionError(f"{vm.name} is not defined on target {tgt}: the disks "
                                    "there are not the new VM's; nothing removed")
        if hv.state(vm.name) == "running":
            raise PreconditionError(f"{vm.name} is running on {tgt}: power it off first")
        sh = ctx.shell(tgt)
        removed, owner = [], None
        for disk in vm.file_disks():
            path = disk.source or ""
            back = backup_path(disk)
            if not sh.exists(back):
                raise PreconditionError(f"{back} is not on {tgt}: the user's disk has not "
                                        "arrived; the template disk stays")
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
        preserved = vm.fact(PreserveResult)
        swapped = []
        for disk in vm.file_disks():
            path = disk.source or ""
            sh.rename(backup_path(disk), path)
            # the owner of the template disk it replaces (the hypervisor's choice), else the
            # owner the disk had on the source host
            rec = preserved.disk(disk.source) if preserved else None
            owner = (removed.owner if removed else None) or (rec.owner if rec else None)
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
        checked = [self.matches_user_disk(vm, ctx, tgt, disk, disk.source or "")
                   for disk in vm.file_disks()]
        method = self.verify_mode
        if method == "size" and checked and all(d.sample_blocks for d in checked):
            method = "size+sample"
        return VerifyResult(ok=True, host=tgt, state=state, disks=checked, method=method)

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

    # -- rollback -----------------------------------------------------------------------------

    def secure_disks(self, vm: VM, ctx: Context, deployed_on: str | None) -> list[str]:
        src = source_host(vm)
        sh = ctx.shell(src)
        other = ctx.shell(deployed_on) if deployed_on and deployed_on != src else None
        swapped = vm.fact(SwapResult) is not None
        steps: list[str] = []
        for disk in vm.file_disks():
            path, back = disk.source or "", backup_path(disk)
            if sh.exists(back):
                continue  # safe on the source datastore
            if swapped and other is not None and other.exists(path):
                # after swap_disks the new VM's disk is the user's: on a shared datastore it
                # is the only copy, and taking the VM away would delete it. Keep it first.
                self.matches_user_disk(vm, ctx, deployed_on or "", disk, path)
                other.rename(path, back)
                if not sh.exists(back):
                    raise PreconditionError(f"{back} is not visible from {src}: the user's "
                                            f"disk is only on {deployed_on}; nothing changed")
                steps.append(f"kept the user's disk as {back} on the shared datastore")
            elif not swapped and sh.exists(path) and (
                    other is None or not same_datastore(sh, other, path)):
                # never preserved: the user's disk is still X on the source host
                sh.rename(path, back)
                steps.append(f"preserved {path} as {back}")
            else:
                raise PreconditionError(f"the user's disk {path} is not safe on {src}: "
                                        "nothing changed")
        if steps and vm.fact(PreserveResult) is None:
            # what preserve_disks would have recorded: the fingerprint later checks use
            vm.facts[PreserveResult.stage] = PreserveResult(
                disks=[self.fingerprint(sh, d, backup_path(d)) for d in vm.file_disks()])
        return steps

    def restore_disks(self, vm: VM, ctx: Context) -> list[str]:
        src = source_host(vm)
        sh = ctx.shell(src)
        owner = None
        for disk in vm.file_disks():
            path, back = disk.source or "", backup_path(disk)
            self.matches_user_disk(vm, ctx, src, disk, back)
            if sh.exists(path):
                st = sh.stat(path)
                owner = f"{st.uid}:{st.gid}"
                sh.remove(path)  # what the control plane put there (a template)
            sh.rename(back, path)
            if owner:
                sh.chown(path, owner)
        return ["the user's disks are back in place"]

    def check_restored(self, vm: VM, ctx: Context) -> list[DiskCheck]:
        src = source_host(vm)
        return [self.matches_user_disk(vm, ctx, src, d, d.source or "") for d in vm.file_disks()]

    def discard_copies(self, vm: VM, ctx: Context, host: str) -> list[str]:
        src = source_host(vm)
        if host == src:
            return []
        there, here = ctx.shell(host), ctx.shell(src)
        steps = []
        for disk in vm.file_disks():
            path = disk.source or ""
            # the user's disk is at its path on the source, checked: the source's own file
            # must not be what the other host sees (a shared datastore)
            if not here.exists(path) or same_datastore(here, there, path):
                continue
            for leftover in (backup_path(disk), path):
                if there.exists(leftover):
                    there.remove(leftover)
                    steps.append(f"removed the copy {leftover} on {host}")
        return steps

    # -- helpers for strategies ---------------------------------------------------------------

    def copy_disks(self, vm: VM, ctx: Context,
                   copy_one: Callable[[Shell, str, Host], None], *,
                   measure: str = "size") -> TransferResult:
        """The transfer loop every copying strategy shares: for each file disk, skip a copy an
        earlier run finished, remove a partial one, run ``copy_one(source_shell, path,
        target_host)`` (which copies ``path`` to the same path on the target host), report
        progress while it runs, and check what arrived. ``measure`` is what a byte moved
        means on the target: ``size`` for a copy that fills holes, ``allocated`` for one that
        keeps them."""
        src, tgt = source_host(vm), target_host(vm, ctx)
        target = ctx.host(tgt)
        preserved = vm.fact(PreserveResult)
        started = time.monotonic()
        copied = []
        for disk in vm.file_disks():
            back = backup_path(disk)
            if ctx.shell(tgt).exists(back):
                try:
                    done = self.check_arrived(vm, ctx, tgt, disk)
                except PreconditionError:
                    ctx.shell(tgt).remove(back)  # a partial copy of an earlier run
                else:
                    done.bytes, done.skipped = 0, "already on the target"
                    copied.append(done)
                    continue
            rec = preserved.disk(disk.source) if preserved else None
            total = int((getattr(rec, measure, None) or (rec.size if rec else 0)) or 0)
            t0 = time.monotonic()
            self._watch(vm, ctx, tgt, back, total, measure,
                        lambda path=back: copy_one(ctx.shell(src), path, target))
            arrived = self.check_arrived(vm, ctx, tgt, disk)
            arrived.bytes = int(getattr(arrived, measure) or 0)
            arrived.seconds = round(time.monotonic() - t0, 3)
            copied.append(arrived)
        return self.copy_result(copied, started)

    def _watch(self, vm: VM, ctx: Context, host: str, path: str, total: int, measure: str,
               copy: Callable[..., None]) -> None:
        """Run ``copy`` in a thread; meanwhile tell observers how much has arrived."""
        failure: list[BaseException] = []

        def work() -> None:
            try:
                copy()
            except BaseException as exc:
                failure.append(exc)

        thread = threading.Thread(target=work, name=f"copy {vm.name}", daemon=True)
        t0 = time.monotonic()
        thread.start()
        sh = ctx.shell(host)
        while True:
            thread.join(self.progress_interval)
            if not thread.is_alive():
                break
            try:
                st = sh.stat(path)
                done = st.allocated if measure == "allocated" else st.size
            except RehostError:
                done = 0  # not created yet (or written under a temporary name)
            ctx.hooks.transfer_progress(vm, ctx, path, min(done, total), total,
                                        time.monotonic() - t0)
        if failure:
            raise failure[0]
        ctx.hooks.transfer_progress(vm, ctx, path, total, total, time.monotonic() - t0)

    def copy_result(self, copied: list[DiskCheck], started: float) -> TransferResult:
        seconds = max(time.monotonic() - started, 1e-6)
        total = sum(c.bytes for c in copied)
        return TransferResult(disks=copied, bytes=total, seconds=round(seconds, 3),
                              rate_mib_s=round(total / seconds / 2**20, 1), strategy=self.name)

    def check_arrived(self, vm: VM, ctx: Context, host: str, disk: Disk) -> DiskCheck:
        """The copy of ``X_BACK`` on ``host`` is the user's disk."""
        return self.matches_user_disk(vm, ctx, host, disk, backup_path(disk))

    def matches_user_disk(self, vm: VM, ctx: Context, host: str, disk: Disk,
                          path: str) -> DiskCheck:
        """``path`` on ``host`` has the size, and the checksum or sampled blocks, that the
        user's disk had when it was preserved; raises :class:`PreconditionError` otherwise."""
        preserved = vm.fact(PreserveResult)
        rec = preserved.disk(disk.source) if preserved else None
        if rec is None:
            raise PreconditionError(f"{disk.source} has no record from preserve_disks: "
                                    "nothing to compare it with")
        sh = ctx.shell(host)
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
            sample = rec.sample
            got_md5 = sh.sample_digests(path, sample.block, sample.blocks)
            differ = [n for n, a, b in zip(sample.blocks, got_md5, sample.md5, strict=True)
                      if a != b]
            if differ:
                raise PreconditionError(
                    f"{path} on {host} differs from the user's disk in {len(differ)} of "
                    f"{len(sample.blocks)} sampled {sample.block >> 20} MiB block(s) "
                    f"(first: block {differ[0]}): the user's disk had other bytes there")
            out.sample_blocks = len(sample.blocks)
        return out


def sample_blocks(size: int, block: int, samples: int) -> list[int]:
    """Which blocks of a ``size``-byte file to sample: the first, the last and the rest evenly
    spaced between (every block of a small file)."""
    count = -(-size // block)
    if count <= 0 or samples <= 0:
        return []
    if count <= samples:
        return list(range(count))
    if samples == 1:
        return [0]
    return sorted({round(i * (count - 1) / (samples - 1)) for i in range(samples)})


VIRTUAL_SIZE = re.compile(r"virtual size:.*\((\d+) bytes\)")


def virtual_size(sh: Shell, path: str, disk: Disk, file_size: int) -> int | None:
    """The size the guest sees: the file's size for raw, ``qemu-img info`` for an image
    format (its text output, which every qemu-img since CentOS 5's prints)."""
    if disk.format in (None, "raw"):
        return file_size
    out = sh.run(["qemu-img", "info", "-f", disk.format, path], check=False).stdout
    found = VIRTUAL_SIZE.search(out)
    return int(found.group(1)) if found else None
