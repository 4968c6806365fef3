"""``shared``: the source and target hosts see one datastore (NFS, a cluster filesystem).

Nothing is copied: ``X_BACK`` is already where the target host can see it. The transfer checks
that the target really sees the user's file (size and checksum), so a datastore that only looks
shared cannot lose a disk.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rehost.core.model import VM, Disk, StrategyRecord
from rehost.hooks import hookimpl
from rehost.plugins.storage.base import DatastoreStrategy, _target

if TYPE_CHECKING:
    from rehost.core.campaign import Campaign


class SharedDatastore(DatastoreStrategy):
    name = "shared"
    fills_holes = False

    def space_needed(self, ctx: Campaign, vm: VM, disk: Disk) -> int:
        return 0  # the disk is already on the datastore the target uses

    def transfer(self, vm: VM, ctx: Campaign) -> dict[str, Any]:
        started = time.monotonic()
        tgt = _target(vm, ctx)
        seen = []
        for disk in vm.file_disks():
            arrived = self.check_arrived(vm, ctx, tgt, disk)
            arrived["bytes"] = 0
            seen.append(arrived)
        result = self.copy_result(vm, seen, started)
        result["shared"] = True
        return result


@hookimpl(trylast=True)
def rehost_storage_strategies() -> list[StrategyRecord]:
    return [StrategyRecord("storage", "shared",
                           "the datastore is shared by source and target: move in place, no "
                           "copy", SharedDatastore)]
