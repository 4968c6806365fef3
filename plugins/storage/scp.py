"""``scp``: copy ``X_BACK`` from the source host to the target host with scp, host to host.

The data never passes through the machine running rehost: rehost runs ``scp`` *on the source
host*, which needs ssh access to the target (keys and known_hosts set up by the operator, as
for the manual procedure). scp writes the whole virtual size: a thin disk arrives thick
(preflight counts full sizes).

scp's remote path goes through the target's shell (legacy protocol) or not (SFTP protocol,
OpenSSH 9); no quoting is right for both, so this strategy refuses paths with characters a
shell would interpret, instead of guessing. Abiquo's datastore paths never have them.

A disk's backing files are copied too, to the same path, where the target lacks them, and
checked (``DatastoreStrategy.carry_backing``).
"""

from __future__ import annotations

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
    shell_safe,
)


class ScpCopy(DatastoreStrategy):
    name = "scp"
    fills_holes = True
    backing_files = "copy"
    precopies = True  # with storage.options.precopy = true (not by default)

    def take_options(self) -> None:
        self.timeout = float(self.options.pop("timeout", 6 * 3600))
        self.cipher = self.options.pop("cipher", None)

    def cannot_carry(self, path: str) -> str | None:
        if shell_safe(path):
            return None
        return "scp cannot carry it safely (characters a shell would interpret)"

    def _unsafe(self, vm: VM) -> list[Finding]:
        return [Finding("critical", "unsafe-path",
                        f"scp cannot carry {backup_path(d)!r} safely (characters a shell would "
                        "interpret)", vm=vm.label or vm.name)
                for d in vm.file_disks() if not shell_safe(backup_path(d))]

    def check_vm(self, vm: VM, ctx: Context) -> list[Finding]:
        return self._unsafe(vm) + super().check_vm(vm, ctx)

    def transfer(self, vm: VM, ctx: Context) -> TransferResult:
        refused = self._unsafe(vm)
        if refused:
            raise PreconditionError(f"{refused[0].message}; nothing was copied")
        return self.copy_disks(vm, ctx, self.copy_one)

    def copy_one(self, source: Shell, path: str, target: Host) -> None:
        self.copy_file(source, path, target)

    def copy_file(self, source: Shell, path: str, target: Host,
                  algorithm: str | None = None) -> str | None:
        # scp reads and writes every byte: what arrived is read again to be checked
        argv = ["scp", "-p", "-q", "-B"]
        if self.cipher:
            argv += ["-c", str(self.cipher)]
        if self.bwlimit:
            argv += ["-l", str(max(1, int(self.bwlimit * 8192)))]  # Kbit/s
        source.run([*argv, path, f"{target.ssh_user}@{target.address}:{path}"],
                   timeout=self.timeout)
        return None


@hookimpl(trylast=True)
def rehost_storage_strategies() -> list[StrategyRecord]:
    return [StrategyRecord("storage", "scp",
                           "copy X_BACK source host -> target host with scp (fills holes)",
                           ScpCopy)]
