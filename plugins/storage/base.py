"""What every datastore strategy shares: preserve, remove the template disks, swap, verify,
clean up. A strategy only says how ``X_BACK`` gets to the target datastore (``transfer``).

Destructive steps check their precondition first:

* ``preserve_disks`` only once the domain is gone from the source host;
* ``remove_new_disks`` only on a target (CentOS 6) host where the redeployed domain is off, and
  never on a file that is the user's backup;
* ``swap_disks`` never overwrites a file;
* ``cleanup`` deletes ``X_BACK`` only after ``verify`` passed, and only when asked.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rehost.core.errors import PreconditionError, RehostError
from rehost.core.model import VM, Disk, Finding, Host

if TYPE_CHECKING:
    from rehost.core.campaign import Campaign
    from rehost.core.remote import Shell

BACK_SUFFIX = "_BACK"


def backup_path(disk: Disk) -> str:
    assert disk.source
    return disk.source + BACK_SUFFIX


class DatastoreStrategy:
    """Base of the built-in storage strategies. Options: ``checksum`` (md5, sha1, sha256;
    default sha1) and ``verify`` (``checksum`` or ``size``)."""

    name = "base"
    fills_holes = True  # the copy writes the whole virtual size on the target

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        options = dict(options or {})
        self.checksum = str(options.pop("checksum", "sha1"))
        if self.checksum not in ("md5", "sha1", "sha256"):
            from rehost.core.errors import ConfigError

            raise ConfigError(f"storage.options.checksum: choose md5, sha1 or sha256, "
                              f"not {self.checksum!r}")
        self.verify_mode = str(options.pop("verify", "checksum"))
        if self.verify_mode not in ("checksum", "size"):
            from rehost.core.errors import ConfigError

            raise ConfigError(f"storage.options.verify: choose checksum or size, "
                              f"not {self.verify_mode!r}")
        # verify = "size": the size, and the bytes of a sample of 1 MiB blocks (first, last,
        # evenly spaced between) read on both ends
        self.samples = options.pop("samples", 16)
        if not isinstance(self.samples, int) or isinstance(self.samples, bool) \
                or self.samples < 0:
            from rehost.core.errors import ConfigError

            raise ConfigError(f"storage.options.samples: a whole number of blocks, 0 or more,"
                              f" not {self.samples!r}")
        self.options = options
        self._check_options()

    def _check_options(self) -> None:
        if self.options:
            from rehost.core.errors import ConfigError

            key = sorted(self.options)[0]
            raise ConfigError(f"unknown key storage.options.{key} for strategy {self.name!r}")

    # -- preflight ----------------------------------------------------------------------------

    def preflight(self, ctx: Campaign) -> list[Finding]:
        return []

    def space_needed(self, ctx: Campaign, vm: VM, disk: Disk) -> int:
        """Full size when the copy fills holes, allocated size when it keeps them. (A resumed
        campaign finds the disk under its ``_BACK`` name.)"""
        sh = ctx.shell(_source(vm))
        path = disk.source or ""
        st = sh.stat(path if sh.exists(path) else backup_path(disk))
        return st.size if self.fills_holes else st.allocated

    # -- stages -------------------------------------------------------------------------------

    def preserve_disks(self, vm: VM, ctx: Campaign) -> dict[str, Any]:
        src = _source(vm)
        if ctx.hypervisor(src).exists(vm.name):
            raise PreconditionError(
                f"{vm.name} is still defined on {src}: will not rename its disks")
        sh = ctx.shell(src)
        out = []
        for disk in vm.file_disks():
            back = backup_path(disk)
            sh.rename(disk.source or "", back)
            st = sh.stat(back)
            entry: dict[str, Any] = {"path": disk.source, "backup": back, "size": st.size,
                                     "virtual_size": virtual_size(sh, back, disk, st.size),
                                     "allocated": st.allocated, "target": disk.target,
                                     "format": disk.format}
            if self.verify_mode == "checksum":
                entry["checksum"] = sh.checksum(back, self.checksum)
                entry["algorithm"] = self.checksum
            elif self.samples:
                blocks = sample_blocks(st.size, SAMPLE_BLOCK, self.samples)
                entry["sample"] = {"block": SAMPLE_BLOCK, "blocks": blocks,
                                   "md5": sh.sample_digests(back, SAMPLE_BLOCK, blocks)}
            out.append(entry)
        kept = [d.source for d in vm.disks if not d.is_file and d.source]
        return {"disks": out, "untouched": kept}

    def transfer(self, vm: VM, ctx: Campaign) -> dict[str, Any]:
        raise NotImplementedError

    def remove_new_disks(self, vm: VM, ctx: Campaign) -> dict[str, Any]:
        tgt = _target(vm, ctx)
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
                removed.append({"path": path, "size": st.size, "allocated": st.allocated})
        previous = (vm.facts.get("remove_new_disks") or {}).get("owner")
        return {"removed": removed, "owner": owner or previous}

    def swap_disks(self, vm: VM, ctx: Campaign) -> dict[str, Any]:
        tgt = _target(vm, ctx)
        sh = ctx.shell(tgt)
        owner = (vm.facts.get("remove_new_disks") or {}).get("owner")
        swapped = []
        for disk in vm.file_disks():
            path = disk.source or ""
            sh.rename(backup_path(disk), path)
            if owner:
                sh.chown(path, owner)
            st = sh.stat(path)
            swapped.append({"path": path, "owner": f"{st.owner}:{st.group}", "size": st.size})
        return {"disks": swapped}

    def verify(self, vm: VM, ctx: Campaign) -> dict[str, Any]:
        tgt = _target(vm, ctx)
        state = ctx.hypervisor(tgt).state(vm.name)
        if state != "running":
            raise PreconditionError(f"{vm.name} is {state} on {tgt}, not running")
        checked = [self.matches_user_disk(vm, ctx, tgt, disk, disk.source or "")
                   for disk in vm.file_disks()]
        method = self.verify_mode
        if method == "size" and checked and all("sample_blocks" in d for d in checked):
            method = "size+sample"
        return {"ok": True, "host": tgt, "state": state, "disks": checked, "method": method}

    def cleanup(self, vm: VM, ctx: Campaign) -> dict[str, Any]:
        if not (vm.facts.get("verify") or {}).get("ok"):
            raise PreconditionError(f"{vm.name} is not verified: its backups stay")
        src = _source(vm)
        sh = ctx.shell(src)
        backups = [backup_path(d) for d in vm.file_disks()]
        present = [b for b in backups if sh.exists(b)]
        if not ctx.config.campaign.delete_backups:
            return {"deleted": [], "pending": present, "host": src}
        for b in present:
            sh.remove(b)
        return {"deleted": present, "pending": [], "host": src}

    # -- helpers for strategies ---------------------------------------------------------------

    #: seconds between two looks at a copy's progress on the target
    progress_interval = 2.0

    def copy_disks(self, vm: VM, ctx: Campaign,
                   copy_one: Callable[[Shell, str, Host], None], *,
                   measure: str = "size") -> dict[str, Any]:
        """The transfer loop every copying strategy shares: for each file disk, skip a copy an
        earlier run finished, remove a partial one, run ``copy_one(source_shell, path,
        target_host)`` (which copies ``path`` to the same path on the target host), report
        progress while it runs, and check what arrived. ``measure`` is what a byte moved
        means on the target: ``size`` for a copy that fills holes, ``allocated`` for one that
        keeps them."""
        src, tgt = _source(vm), _target(vm, ctx)
        target = ctx.host(tgt)
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
                    done.update(bytes=0, skipped="already on the target")
                    copied.append(done)
                    continue
            rec: dict[str, Any] = next(
                (d for d in (vm.facts.get("preserve_disks") or {}).get("disks", [])
                 if d["path"] == disk.source), {})
            total = int(rec.get(measure) or rec.get("size") or 0)
            t0 = time.monotonic()
            self._watch(vm, ctx, tgt, back, total, measure,
                        lambda path=back: copy_one(ctx.shell(src), path, target))
            arrived = self.check_arrived(vm, ctx, tgt, disk)
            arrived["bytes"] = arrived[measure]
            arrived["seconds"] = round(time.monotonic() - t0, 3)
            copied.append(arrived)
        return self.copy_result(vm, copied, started)

    def _watch(self, vm: VM, ctx: Campaign, host: str, path: str, total: int, measure: str,
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

    def copy_result(self, vm: VM, copied: list[dict[str, Any]], started: float) -> dict[str, Any]:
        seconds = max(time.monotonic() - started, 1e-6)
        total = sum(int(c.get("bytes", 0)) for c in copied)
        return {"disks": copied, "bytes": total, "seconds": round(seconds, 3),
                "rate_mib_s": round(total / seconds / 2**20, 1), "strategy": self.name}

    def check_arrived(self, vm: VM, ctx: Campaign, host: str, disk: Disk) -> dict[str, Any]:
        """The copy of ``X_BACK`` on ``host`` has the user's size (and checksum)."""
        return self.matches_user_disk(vm, ctx, host, disk, backup_path(disk))

    def matches_user_disk(self, vm: VM, ctx: Campaign, host: str, disk: Disk,
                          path: str) -> dict[str, Any]:
        """``path`` on ``host`` has the size (and checksum) the user's disk had when it was
        preserved; raises :class:`PreconditionError` otherwise."""
        preserved = (vm.facts.get("preserve_disks") or {}).get("disks", [])
        rec = next((d for d in preserved if d["path"] == disk.source), None)
        if rec is None:
            raise PreconditionError(f"{disk.source} has no record from preserve_disks: "
                                    "nothing to compare it with")
        sh = ctx.shell(host)
        st = sh.stat(path)
        if st.size != rec["size"]:
            raise PreconditionError(f"{path} on {host} is {st.size} bytes, the user's disk "
                                    f"was {rec['size']}")
        out: dict[str, Any] = {"path": path, "size": st.size, "allocated": st.allocated}
        if "checksum" in rec:
            got = sh.checksum(path, rec["algorithm"])
            if got != rec["checksum"]:
                raise PreconditionError(f"{path} on {host} has {rec['algorithm']} {got}, the "
                                        f"user's disk had {rec['checksum']}")
            out["checksum"] = got
            out["algorithm"] = rec["algorithm"]
        sample = rec.get("sample")
        if sample:
            got_md5 = sh.sample_digests(path, sample["block"], sample["blocks"])
            differ = [n for n, a, b in zip(sample["blocks"], got_md5, sample["md5"], strict=True)
                      if a != b]
            if differ:
                raise PreconditionError(
                    f"{path} on {host} differs from the user's disk in {len(differ)} of "
                    f"{len(sample['blocks'])} sampled {sample['block'] >> 20} MiB block(s) "
                    f"(first: block {differ[0]}): the user's disk had other bytes there")
            out["sample_blocks"] = len(sample["blocks"])
        return out


#: the block size of verify = "size" samples
SAMPLE_BLOCK = 1 << 20


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


def _source(vm: VM) -> str:
    if not vm.source_host:
        raise PreconditionError(f"{vm.name}: its source host is not known (locate first)")
    return vm.source_host


def _target(vm: VM, ctx: Campaign) -> str:
    """The VM's target host, after checking it is a target (CentOS 6) host."""
    if not vm.target_host:
        raise PreconditionError(f"{vm.name}: not deployed on a target host yet")
    host = ctx.host(vm.target_host)
    if host.role != "target":
        raise PreconditionError(f"{vm.name} is on {host.name}, which is not a target host")
    facts = ctx.facts(host.name)
    if facts.centos_major != 6:  # unknown is not CentOS 6 either
        raise PreconditionError(f"{vm.name} is on {host.name}, which runs "
                                f"{facts.os_release}: will not touch its disks")
    return host.name
