"""``shared``: the source and target hosts see one datastore (NFS, a cluster filesystem).

Nothing is copied: ``X_BACK`` is already where the target host can see it. The transfer checks
that the target really sees the user's file (size and checksum), so a datastore that only looks
shared cannot lose a disk. A disk's backing files must be on the target host already, the same
as on the source host: the preflight refuses a VM whose backing file a target lacks, and the
transfer compares their digests.
"""

from __future__ import annotations

import time

from rehost.api import (
    VM,
    Context,
    DatastoreStrategy,
    Disk,
    StrategyRecord,
    TransferResult,
    hookimpl,
    target_host,
)


class SharedDatastore(DatastoreStrategy):
    name = "shared"
    fills_holes = False
    backing_files = "check"  # they must be on the datastore the target sees: nothing is copied

    def space_needed(self, ctx: Context, vm: VM, disk: Disk) -> int:
        return 0  # the disk is already on the datastore the target uses

    def transfer(self, vm: VM, ctx: Context) -> TransferResult:
        started = time.monotonic()
        tgt = target_host(vm, ctx)
        seen = []
        backing: list[dict[str, object]] = []
        for disk in vm.file_disks():
            backing += self.carry_backing(vm, ctx, disk)
            arrived = self.check_arrived(vm, ctx, tgt, disk)
            arrived.bytes = 0
            seen.append(arrived)
        result = self.copy_result(seen, started)
        result.shared = True
        if backing:
            result.backing_files = backing  # type: ignore[attr-defined]  # an extra field
        return result


@hookimpl(trylast=True)
def rehost_storage_strategies() -> list[StrategyRecord]:
    return [StrategyRecord("storage", "shared",
                           "the datastore is shared by source and target: move in place, no "
                           "copy", SharedDatastore)]
