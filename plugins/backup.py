"""The ``backup_disks`` stage: before the window, while the VM still runs, each file disk is
copied to a backup location and verified (the issue-12 "back up VM disks" step of the manual
procedure). The site chooses how with ``[backup] strategy`` (``rehost_backup_strategies``):

* ``none`` (the default, offered by the core itself: ``rehost.core.strategies.NoBackup``): no
  backup; the stage is skipped and says so.
* ``ssh``: ``tar --sparse`` from the source host to ``options.dir`` on ``options.host`` (a
  host of the site config, or ``"source"``: each VM's own source host), one folder per VM:
  ``DIR/<vm name>/<disk file name>`` (a disk whose file name another disk of the VM has too
  is named ``<target>-<file name>``, e.g. ``vdb-disk.img``).

What "verified" means for ``ssh``: the VM runs while it is copied. On the source host the tar
stream passes through rehost's sparse digest (``digest_argv("untar", ...)``) on its way to the
backup host, where the same digest writes the file as ``tar -xp`` would (``digest_write_argv``);
the copy is kept only when both digests and the sizes agree. So the backup holds exactly the
bytes tar read from the disk. When the VM wrote to the disk during the read (tar says "file
changed as we read it"), those bytes are a crash-consistent-at-best image, not one instant of
the disk: the result says so (``changed_while_read``). A VM that does not write meanwhile
(idle, or off) gets a byte-for-byte copy. The stage runs before ``power_off``, so a copy of the
powered-off disk is not what this stage makes; the user's disk itself stays untouched on the
source datastore through the move (``X_BACK``) until ``rehost confirm``.

A copy is unpacked into ``DIR/<vm>/.rehost-incoming`` and moved to its name only once checked:
a file at a backup's name is always a verified copy. Running the stage again (a resumed
campaign) copies again and replaces the copies. A failure stops that VM before anything of it
changed; the others go on (it is not a fault of the site that holds them).

``options.keep`` (default true): the copies outlive the campaign; false: they are deleted when
the VM's ``X_BACK`` are (its ``cleanup`` stage with delete: ``rehost confirm``).

When a VM's disks are backed up, the notifiers are told (``rehost_notify`` event
``backup_done``); its ``notify`` stage (``downtime_start``) follows.
"""

from __future__ import annotations

import os
import posixpath
import time
from collections import Counter
from typing import Any

from rehost.api import (
    VM,
    BackupDisksResult,
    BackupStrategy,
    CleanupResult,
    ConfigError,
    Context,
    DatastoreStrategy,
    DiskBackup,
    Finding,
    PreconditionError,
    RehostError,
    RemoteError,
    StrategyRecord,
    hookimpl,
    quote_argv,
)
from rehost.api.datastore import DIGEST_LINE, SPARSE, digest_argv

#: the folder of a VM's backups where copies are unpacked before they are checked
INCOMING = ".rehost-incoming"

# $1 folder, $2 file name; the rest: the command the tar stream is piped into (the source's
# digest, which runs the receiver). tar's status comes back through fd 4 (POSIX sh, no
# pipefail on bash 3.2) and is printed last on stdout: 1 is GNU tar's "file changed as we
# read it", which the caller judges from stderr.
PIPE = ('exec 3>&1; f=$1; n=$2; shift 2; '
        'st=$( { { tar -C "$f" --format=gnu --sparse -cf - "$n"; echo "$?" >&4; } '
        '| "$@" >&3; } 4>&1 ); rc=$?; '
        '[ "$rc" = 0 ] || exit "$rc"; '
        'echo "rehost-tar-status $st"; '
        '[ "$st" = 0 ] || [ "$st" = 1 ] || '
        '{ echo "rehost: tar exited with $st on the source host" >&2; exit 1; }')


class SshBackup(BackupStrategy):
    """``tar --sparse`` over ssh to a folder of a host, each copy checked from the stream at
    both ends (see the module)."""

    name = "ssh"

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        host = self.options.pop("host", "source")
        if not isinstance(host, str) or not host:
            raise ConfigError(f'backup.options.host must name a host of [hosts] or be "source",'
                              f" not {host!r}")
        self.host = host
        folder = self.options.pop("dir", None)
        if folder is None:
            raise ConfigError("missing key backup.options.dir (the folder the copies go to) "
                              "for strategy 'ssh'")
        if (not isinstance(folder, str) or not folder.startswith("/") or "\n" in folder
                or "\0" in folder):
            raise ConfigError(f"backup.options.dir must be an absolute path, not {folder!r}")
        self.dir = posixpath.normpath(folder)
        if self.dir == "/":
            raise ConfigError("backup.options.dir must not be /")
        keep = self.options.pop("keep", True)
        if not isinstance(keep, bool):
            raise ConfigError(f"backup.options.keep must be true or false, not {keep!r}")
        self.keep = keep
        checksum = self.options.pop("checksum", "sha1")
        if checksum not in ("md5", "sha1"):
            raise ConfigError(f"backup.options.checksum: choose md5 or sha1, not {checksum!r}")
        self.algorithm = SPARSE + checksum
        timeout = self.options.pop("timeout", 6 * 3600)
        if (not isinstance(timeout, int | float) or isinstance(timeout, bool)
                or not 0 < timeout <= 7 * 24 * 3600):
            raise ConfigError(f"backup.options.timeout must be a number of seconds (more than "
                              f"0, at most a week), not {timeout!r}")
        self.timeout = float(timeout)
        self.reject_unknown_options()

    # -- where ----------------------------------------------------------------------------------

    def where(self) -> str:
        host = "each VM's source host" if self.host == "source" else self.host
        return f"{host}:{self.dir}"

    def backup_host(self, ctx: Context, vm: VM) -> str:
        """The host the copies of ``vm`` go to."""
        if self.host in ctx.config.hosts:
            return self.host
        if self.host == "source":
            if not vm.source_host:
                raise PreconditionError(f"{vm.name}: its source host is not known")
            return vm.source_host
        raise PreconditionError(f"backup.options.host {self.host!r} is not a host of the site "
                                f"config (known: {', '.join(sorted(ctx.config.hosts))})")

    def vm_folder(self, vm: VM) -> str:
        name = vm.name
        if (not name or "/" in name or name in (".", "..") or name == INCOMING
                or "\n" in name or "\0" in name):
            raise PreconditionError(f"the VM name {name!r} cannot name a folder of the backup "
                                    "location: nothing was changed")
        return posixpath.join(self.dir, name)

    def names(self, vm: VM) -> dict[str, str]:
        """Each file disk's path -> its backup's file name in the VM's folder."""
        disks = vm.file_disks()
        count = Counter(posixpath.basename(d.source or "") for d in disks)
        out = {}
        for d in disks:
            base = posixpath.basename(d.source or "")
            if not base or base.startswith("-") or "\n" in base:
                raise PreconditionError(f"{vm.name}: tar will not carry the disk "
                                        f"{d.source!r}: nothing was changed")
            out[d.source or ""] = f"{d.target}-{base}" if count[base] > 1 else base
        return out

    # -- preflight ------------------------------------------------------------------------------

    def preflight(self, ctx: Context) -> list[Finding]:
        """The backup location of every VM is reachable, writable, and has room for the data
        of the disks it will hold."""
        if self.host != "source" and self.host not in ctx.config.hosts:
            return [Finding("critical", "backup-host",
                            f"backup.options.host {self.host!r} is not a host of the site "
                            f"config (known: {', '.join(sorted(ctx.config.hosts))})")]
        need: dict[str, int] = {}
        out: list[Finding] = []
        for vm in ctx.vms:
            if vm.fact(BackupDisksResult) is not None or not vm.source_host:
                continue  # backed up in an earlier run, or not located (preflight says so)
            try:
                host = self.backup_host(ctx, vm)
                need[host] = need.get(host, 0) + self._allocated(ctx, vm)
            except RehostError as exc:
                out.append(Finding("warning", "backup-size", f"the size of its disks is not "
                                   f"known: {exc}", vm=vm.label or vm.name))
        hosts = list(need) or ([self.host] if self.host in ctx.config.hosts else [])
        for host in hosts:
            out += self._check_location(ctx, host, need.get(host, 0))
        return out

    @staticmethod
    def _allocated(ctx: Context, vm: VM) -> int:
        src = vm.source_host or ""
        disks = vm.disks or ctx.hypervisor(src).disks(vm.name)
        sh = ctx.shell(src)
        return sum(sh.stat(d.source or "").allocated for d in disks
                   if d.is_file and sh.exists(d.source or ""))

    def _check_location(self, ctx: Context, host: str, need: int) -> list[Finding]:
        sh = ctx.shell(host)
        where = f"{host}:{self.dir}"
        try:
            sh.run(["mkdir", "-p", "--", self.dir], timeout=60)
            probe = posixpath.join(self.dir, f".rehost-probe-{os.getpid()}")
            sh.write_text(probe, "probe\n")
            sh.remove(probe)
            sh.run(digest_argv("probe", self.algorithm[len(SPARSE):]), timeout=60)
        except RemoteError as exc:
            why = (exc.stderr or "").strip().splitlines()[-1:] or [str(exc)]
            return [Finding("critical", "backup-location", f"the backup location {where} is "
                            f"not usable (writable, with a python for the digest): {why[0]}",
                            host=host)]
        try:
            free = sh.free_space(self.dir)
        except RemoteError as exc:
            return [Finding("critical", "backup-location",
                            f"the free space of {where} cannot be read: {exc}", host=host)]
        if free < need:
            return [Finding("critical", "backup-space",
                            f"the backup location {where} has {free >> 20} MiB free; the "
                            f"disks to back up hold {need >> 20} MiB", host=host)]
        return [Finding("info", "backup-location",
                        f"backups go to {where} ({need >> 20} MiB of {free >> 20} MiB free; "
                        f"{'kept' if self.keep else 'deleted with X_BACK'})", host=host)]

    # -- the stage ------------------------------------------------------------------------------

    def backup(self, vm: VM, ctx: Context) -> BackupDisksResult:
        host = self.backup_host(ctx, vm)
        folder = self.vm_folder(vm)
        names = self.names(vm)
        src = vm.source_host or ""
        source, dest = ctx.shell(src), ctx.shell(host)
        incoming = posixpath.join(folder, INCOMING)
        sizes = {}
        for path in names:
            if not source.exists(path):
                raise PreconditionError(f"{vm.name}: its disk {path} is not on {src}: "
                                        "nothing was changed")
            sizes[path] = source.stat(path)
        try:
            # a copy an earlier run left half-way is removed; copies of it are replaced
            dest.run(["rm", "-rf", "--", incoming], timeout=600)
            dest.run(["mkdir", "-p", "--", incoming], timeout=60)
            free = dest.free_space(incoming)
        except RemoteError as exc:
            raise self._failed(vm, host, folder, exc) from exc
        need = sum(st.allocated for st in sizes.values())
        if free < need:
            raise PreconditionError(f"{vm.name}: the backup location {host}:{folder} has "
                                    f"{free >> 20} MiB free, its disks hold {need >> 20} MiB: "
                                    "nothing was changed")
        started = time.monotonic()
        backups = []
        for path, name in names.items():
            t0 = time.monotonic()
            try:
                digest, size, changed = self.copy(ctx, src, path, host, incoming)
            except RemoteError as exc:
                raise self._failed(vm, host, folder, exc, path) from exc
            location = posixpath.join(folder, name)
            arrived = dest.stat(posixpath.join(incoming, posixpath.basename(path)))
            if arrived.size != size:
                raise PreconditionError(f"{vm.name}: the backup of {path} on {host} is "
                                        f"{arrived.size} bytes, {size} were sent: nothing was "
                                        "changed")
            dest.run(["mv", "-f", "--", posixpath.join(incoming, posixpath.basename(path)),
                      location], timeout=600)
            rec = DiskBackup(path=path, host=host, location=location, size=arrived.size,
                             allocated=arrived.allocated, checksum=digest,
                             algorithm=self.algorithm, bytes=arrived.allocated,
                             seconds=round(time.monotonic() - t0, 3))
            if changed:
                rec.changed_while_read = True  # type: ignore[attr-defined]  # an extra field
            backups.append(rec)
        dest.run(["rm", "-rf", "--", incoming], timeout=600)
        result = BackupDisksResult(strategy=self.name, backups=backups)
        result.kept = self.keep  # type: ignore[attr-defined]  # an extra field
        result.seconds = round(time.monotonic() - started, 3)  # type: ignore[attr-defined]
        return result

    @staticmethod
    def _failed(vm: VM, host: str, folder: str, exc: RemoteError,
                path: str | None = None) -> PreconditionError:
        # the VM's own stop, not a fault of the site that holds the other VMs
        lines = [ln for ln in (exc.stderr or "").strip().splitlines() if ln.strip()]
        why = "; ".join(lines[-2:]) or str(exc)
        what = f"the backup of {path}" if path else "the backup"
        return PreconditionError(f"{vm.name}: {what} to {host}:{folder} failed: {why}: "
                                 "nothing was changed")

    def copy(self, ctx: Context, src: str, path: str, host: str,
             incoming: str) -> tuple[str, int, bool]:
        """Stream ``path`` from ``src`` into ``incoming`` on ``host``, through the digest at
        both ends. Returns the digest, the size, and whether tar saw the file change."""
        folder, name = posixpath.split(path)
        algorithm = self.algorithm[len(SPARSE):]
        unpack = DatastoreStrategy.digest_write_argv(incoming, name, self.algorithm)
        if host == src:
            receiver = unpack
        else:
            target = ctx.host(host)
            receiver = ["ssh", "-o", "BatchMode=yes", "-p", str(target.ssh_port), "--",
                        f"{target.ssh_user}@{target.address}", quote_argv(unpack)]
        out = ctx.shell(src).run(["sh", "-c", PIPE, "rehost-backup", folder, name,
                                  *digest_argv("untar", algorithm, name, *receiver)],
                                 timeout=self.timeout)
        lines = [ln.strip() for ln in out.stdout.splitlines() if ln.strip()]
        digests = [m.groups() for m in map(DIGEST_LINE.match, lines) if m]
        status = [ln.split()[-1] for ln in lines if ln.startswith("rehost-tar-status ")]
        if len(digests) != 2 or not status:
            raise PreconditionError(f"the backup of {path} to {host}: no digests came back "
                                    f"({out.stdout[-300:]!r})")
        (arrived, arrived_size), (sent, sent_size) = digests
        if (arrived, arrived_size) != (sent, sent_size):
            raise PreconditionError(f"the backup of {path} to {host}: the bytes that arrived "
                                    f"have {self.algorithm} {arrived} ({arrived_size} bytes), "
                                    f"those sent {sent} ({sent_size} bytes): nothing was "
                                    "changed")
        changed = status[-1] == "1"
        if changed and "changed as we read" not in out.stderr:
            raise PreconditionError(f"the backup of {path}: tar exited with 1 on {src}: "
                                    f"{out.stderr.strip()[-300:]}")
        return sent, int(sent_size), changed

    def cleanup(self, vm: VM, ctx: Context, made: BackupDisksResult) -> list[str]:
        if self.keep:
            return []
        steps = []
        for rec in made.backups:
            sh = ctx.shell(rec.host)
            if sh.exists(rec.location):
                sh.remove(rec.location)
                steps.append(f"removed the backup {rec.host}:{rec.location}")
        if made.backups:
            folder = posixpath.dirname(made.backups[0].location)
            ctx.shell(made.backups[0].host).run(["rmdir", "--", folder], check=False)
        return steps


@hookimpl(trylast=True)
def rehost_backup_strategies() -> list[StrategyRecord]:
    return [
        StrategyRecord("backup", "ssh", "tar --sparse over ssh to DIR/<vm>/ on a host, "
                       "checked from the stream at both ends, before the power-off", SshBackup),
    ]


@hookimpl(trylast=True)
def rehost_vm_backup_disks(vm: VM, ctx: Context) -> BackupDisksResult:
    result: BackupDisksResult = ctx.backup.backup(vm, ctx)
    if not result.skipped:
        try:
            ctx.hooks.notify(vm, ctx, "backup_done")
        except Exception as exc:  # a broken notifier must not stop the VM
            ctx.log.error("{}: notify backup_done failed: {}", vm.label or vm.name, exc)
    return result


@hookimpl
def rehost_preflight(ctx: Context) -> list[Finding]:
    findings: list[Finding] = ctx.backup.preflight(ctx)
    return findings


@hookimpl
def rehost_stage_finish(stage: str, vm: VM | None, ctx: Context, result: object) -> None:
    # the VM's X_BACK were deleted (rehost confirm): its copies go too unless they are kept
    if (vm is None or stage != "cleanup" or not isinstance(result, CleanupResult)
            or not result.deleted):
        return
    made = vm.fact(BackupDisksResult)
    if made is None or made.skipped or not made.backups:
        return
    try:
        steps = ctx.backup.cleanup(vm, ctx, made)
        for step in steps:
            ctx.log.info("{}: {}", vm.label or vm.name, step)
        if steps:
            ctx.journal.set(f"backup-deleted:{vm.name}", steps)
    except Exception as exc:  # the VM is moved and verified: say it, do not undo it
        ctx.log.error("{}: its backups were not deleted: {}", vm.label or vm.name, exc)
