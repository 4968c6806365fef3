"""``tar``: a sparse-aware copy, source host to target host: ``tar --sparse`` piped over ssh.

GNU tar (1.15 on CentOS 5) finds the holes of a thin disk and sends only its data, so a 2 GiB
disk holding 100 MiB moves about 100 MiB over the network and stays thin on the target — where
scp and rsync send every zero. The data never passes through the machine running rehost. It is
the default strategy where the datastore is not shared.

The copy is checked from what flowed through it, not read again: on the target host rehost's
digest (``DatastoreStrategy.digest_write_argv``) reads the stream, writes the disk as ``tar
-xp`` would (holes kept, owner, mode and time from the stream) and computes the sparse digest
of the disk as it arrives; the transfer compares it with the fingerprint taken when the disk
was preserved. (With ``verify = "size"`` or
``digest = "whole"`` the arrived copy is checked as with any other copy.)

A disk's backing files are copied the same way, to the same path, where the target lacks them
(``DatastoreStrategy.carry_backing``).

On the source host rehost runs one ``sh -c`` whose script is fixed; the disk's folder, its name
and the ssh destination are the script's positional parameters (data, never code), and the
command the target's shell runs is quoted word by word.
"""

from __future__ import annotations

import os

from rehost.api import (
    DIGEST_PY,
    PY_LAUNCH,
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

# $1 folder, $2 file name, $3 user@host, $4 the target's command (already quoted for its shell).
# A plain pipe's status is ssh's alone: tar's status on the source comes back through fd 4
# (POSIX sh; bash 3.2 has no pipefail to lean on). What the target prints goes to stdout (fd 3).
PIPE = ('exec 3>&1; '
        'st=$( { { tar -C "$1" --format=gnu --sparse -cf - "$2"; echo "$?" >&4; } '
        '| ssh -o BatchMode=yes -- "$3" "$4" >&3; } 4>&1 ); rc=$?; '
        '[ "$rc" = 0 ] || exit "$rc"; '
        '[ "$st" = 0 ] || { echo "rehost: tar exited with $st on the source host" >&2; exit 1; }')

# The same with a bandwidth cap (CentOS 5 has no pv): the stream passes through the digest
# script's ``throttle`` on the source host; $5 PY_LAUNCH, $6 the script, $7 MiB a second.
PIPE_CAPPED = PIPE.replace('echo "$?" >&4; } ',
                           'echo "$?" >&4; } | sh -c "$5" rehost-digest "$6" throttle "$7" ')


class TarSparseCopy(DatastoreStrategy):
    name = "tar"
    fills_holes = False
    backing_files = "copy"
    precopies = True
    precopy_auto = True

    def take_options(self) -> None:
        self.timeout = float(self.options.pop("timeout", 6 * 3600))

    def cannot_carry(self, path: str) -> str | None:
        if os.path.basename(path).startswith("-"):
            return "tar will not carry a file whose name starts with '-'"
        return None

    def _unsafe(self, vm: VM) -> list[Finding]:
        return [Finding("critical", "unsafe-path",
                        f"tar will not carry {backup_path(d)!r} (a leading '-')",
                        vm=vm.label or vm.name)
                for d in vm.file_disks() if os.path.basename(backup_path(d)).startswith("-")]

    def check_vm(self, vm: VM, ctx: Context) -> list[Finding]:
        return self._unsafe(vm) + super().check_vm(vm, ctx)

    def transfer(self, vm: VM, ctx: Context) -> TransferResult:
        refused = self._unsafe(vm)
        if refused:
            raise PreconditionError(f"{refused[0].message}; nothing was copied")
        return self.copy_disks(
            vm, ctx,
            lambda source, path, target: self.copy_file(source, path, target,
                                                        self.stream_algorithm(vm, path)),
            measure="allocated")

    def copy_one(self, source: Shell, path: str, target: Host) -> None:
        """Copy ``path`` to the same path on ``target`` without the stream's digest (what
        arrived is then read to be checked). Kept for subclasses written against it."""
        self.copy_file(source, path, target)

    def copy_file(self, source: Shell, path: str, target: Host,
                  algorithm: str | None = None) -> str | None:
        folder, name = os.path.split(path)
        # the target unpacks into the same folder, holes restored: rehost's digest writes the
        # file itself as it checks the stream (one process and pipe fewer than into tar -x)
        if algorithm:
            unpack = self.digest_write_argv(folder, name, algorithm)
        else:
            unpack = ["tar", "-C", folder, "--sparse", "-xpf", "-"]
        argv = ["sh", "-c", PIPE, "rehost-tar", folder, name,
                f"{target.ssh_user}@{target.address}", quote_argv(unpack)]
        if self.bwlimit:
            argv = ["sh", "-c", PIPE_CAPPED, *argv[3:], PY_LAUNCH, DIGEST_PY,
                    f"{self.bwlimit:g}"]
        out = source.run(argv, timeout=self.timeout)
        return self.read_digest(out.stdout, target.name, path) if algorithm else None


@hookimpl(trylast=True)
def rehost_storage_strategies() -> list[StrategyRecord]:
    return [StrategyRecord("storage", "tar",
                           "tar --sparse piped over ssh, source host -> target host: moves "
                           "only the data of thin disks, which stay thin; checked as it "
                           "arrives", TarSparseCopy)]
