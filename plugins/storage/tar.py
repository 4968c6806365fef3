"""``tar``: a sparse-aware copy, source host to target host: ``tar --sparse`` piped over ssh.

GNU tar (1.15 on CentOS 5) finds the holes of a thin disk and sends only its data, so a 2 GiB
disk holding 100 MiB moves about 100 MiB over the network and stays thin on the target — where
scp and rsync send every zero. The data never passes through the machine running rehost.

On the source host rehost runs one ``sh -c`` whose script is fixed; the disk's folder, its name
and the ssh destination are the script's positional parameters (data, never code), and the
command the target's shell runs is quoted word by word.
"""

from __future__ import annotations

import os

from rehost.api import (
    VM,
    Context,
    DatastoreStrategy,
    Finding,
    Host,
    PreconditionError,
    Shell,
    StrategyRecord,
    TransferResult,
    backup_path,
    hookimpl,
    quote_argv,
)

# $1 folder, $2 file name, $3 user@host, $4 the target's command (already quoted for its shell)
PIPE = 'tar -C "$1" --sparse -cf - "$2" | ssh -o BatchMode=yes -- "$3" "$4"'


class TarSparseCopy(DatastoreStrategy):
    name = "tar"
    fills_holes = False

    def take_options(self) -> None:
        self.timeout = float(self.options.pop("timeout", 6 * 3600))

    def check_vm(self, vm: VM, ctx: Context) -> list[Finding]:
        return [Finding("critical", "unsafe-path",
                        f"tar will not carry {backup_path(d)!r} (a leading '-')",
                        vm=vm.label or vm.name)
                for d in vm.file_disks() if os.path.basename(backup_path(d)).startswith("-")]

    def transfer(self, vm: VM, ctx: Context) -> TransferResult:
        refused = self.check_vm(vm, ctx)
        if refused:
            raise PreconditionError(f"{refused[0].message}; nothing was copied")
        return self.copy_disks(vm, ctx, self.copy_one, measure="allocated")

    def copy_one(self, source: Shell, path: str, target: Host) -> None:
        folder, name = os.path.split(path)
        # the target unpacks into the same folder; tar restores the holes it is sent
        unpack = quote_argv(["tar", "-C", folder, "--sparse", "-xpf", "-"])
        source.run(["sh", "-c", PIPE, "rehost-tar", folder, name,
                    f"{target.ssh_user}@{target.address}", unpack], timeout=self.timeout)


@hookimpl(trylast=True)
def rehost_storage_strategies() -> list[StrategyRecord]:
    return [StrategyRecord("storage", "tar",
                           "tar --sparse piped over ssh, source host -> target host: moves "
                           "only the data of thin disks, which stay thin", TarSparseCopy)]
