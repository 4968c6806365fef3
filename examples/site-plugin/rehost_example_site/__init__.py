"""An example site plugin for rehost, installed as a package with a ``rehost`` entry point.

It offers the storage strategy ``site-rsync``: ``rsync --sparse`` from the source host to the
target host (host to host, like ``scp``), so a thin disk stays thin on the target. A site
chooses it in its site config::

    [storage]
    strategy = "site-rsync"

Everything else (preserving, swapping, verifying, rolling back) comes from rehost's public
datastore base, :class:`rehost.api.DatastoreStrategy`. It imports nothing but ``rehost.api``.
"""

from __future__ import annotations

from rehost.api import (
    VM,
    Context,
    DatastoreStrategy,
    Host,
    PreconditionError,
    Shell,
    StrategyRecord,
    TransferResult,
    backup_path,
    hookimpl,
    shell_safe,
)


class SiteRsync(DatastoreStrategy):
    name = "site-rsync"
    fills_holes = False

    def transfer(self, vm: VM, ctx: Context) -> TransferResult:
        for disk in vm.file_disks():
            if not shell_safe(backup_path(disk)):
                raise PreconditionError(f"site-rsync will not carry {backup_path(disk)!r}")
        result = self.copy_disks(vm, ctx, self.copy_one)
        result.site_plugin = "rehost-example-site"  # type: ignore[attr-defined]
        return result

    def copy_one(self, source: Shell, path: str, target: Host) -> None:
        # rehost runs this on the source host: the data goes host to host
        source.run(["rsync", "--sparse", "--times", "--", path,
                    f"{target.ssh_user}@{target.address}:{path}"], timeout=6 * 3600)


@hookimpl
def rehost_storage_strategies() -> list[StrategyRecord]:
    return [StrategyRecord("storage", "site-rsync",
                           "rsync --sparse host to host (example site plugin; keeps disks thin)",
                           SiteRsync)]
