"""An example site plugin for rehost, installed as a package with a ``rehost`` entry point.

It offers the storage strategy ``site-rsync``: ``rsync --sparse`` from the source host to the
target host (host to host, like ``scp``), so a thin disk stays thin on the target. A site
chooses it in its site config::

    [storage]
    strategy = "site-rsync"

Everything else (preserving, swapping, verifying) comes from rehost's datastore strategy base.
"""

from __future__ import annotations

import time
from typing import Any

from rehost.core.errors import PreconditionError
from rehost.core.model import StrategyRecord
from rehost.hooks import hookimpl
from rehost.plugins.storage.base import DatastoreStrategy, _source, _target, backup_path
from rehost.plugins.storage.scp import SAFE_PATH


class SiteRsync(DatastoreStrategy):
    name = "site-rsync"
    fills_holes = False

    def transfer(self, vm: Any, ctx: Any) -> dict[str, Any]:
        src, tgt = _source(vm), _target(vm, ctx)
        target = ctx.host(tgt)
        started = time.monotonic()
        copied = []
        for disk in vm.file_disks():
            back = backup_path(disk)
            if not SAFE_PATH.match(back):
                raise PreconditionError(f"site-rsync will not carry {back!r}")
            ctx.shell(src).run(["rsync", "--sparse", "--times", "--", back,
                                f"{target.ssh_user}@{target.address}:{back}"], timeout=6 * 3600)
            arrived = self.check_arrived(vm, ctx, tgt, disk)
            arrived["bytes"] = arrived["size"]
            copied.append(arrived)
        result = self.copy_result(vm, copied, started)
        result["site_plugin"] = "rehost-example-site"
        return result


@hookimpl
def rehost_storage_strategies() -> list[StrategyRecord]:
    return [StrategyRecord("storage", "site-rsync",
                           "rsync --sparse host to host (example site plugin; keeps disks thin)",
                           SiteRsync)]
