"""Commands on hosts, over ssh or locally, built from argument lists.

Every argument is quoted for the remote shell (``shlex.quote``), so a VM name like
``a'b; touch /tmp/x`` or a path with spaces or newlines is data, never code. Paths are passed
after ``--`` wherever the tool accepts it, so a leading ``-`` is not an option.

The file primitives use only tools a CentOS 5 host has (coreutils 5.97, openssl 0.9.8).
"""

from __future__ import annotations

import posixpath
import queue
import re
import secrets
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sh
from loguru import logger

from rehost.core.errors import RemoteError

DEFAULT_TIMEOUT = 120.0


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    exit_code: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class FileStat:
    path: str
    size: int
    allocated: int
    uid: int
    gid: int
    owner: str
    group: str


@dataclass(frozen=True)
class SshOptions:
    """How to reach hosts over ssh. ``config`` is an ssh_config file (``ssh -F``).

    ``control_dir`` (a short path: sockets have a length limit) makes the commands to one host
    share one ssh connection: a master connection that rehost starts itself and that dies with
    it (:class:`_Masters`), so nothing rehost started on a host outlives rehost, even a
    SIGKILL. :meth:`Shell.close` ends it at once.
    """

    config: str | None = None
    key: str | None = None
    known_hosts: str | None = None
    strict_host_keys: bool = True
    connect_timeout: int = 10
    control_dir: str | None = None

    def argv(self) -> list[str]:
        args: list[str] = []
        if self.config:
            args += ["-F", self.config]
        if self.key:
            args += ["-i", self.key, "-o", "IdentitiesOnly=yes"]
        if self.known_hosts:
            args += ["-o", f"UserKnownHostsFile={self.known_hosts}"]
        args += ["-o", "StrictHostKeyChecking=" + ("yes" if self.strict_host_keys else "no")]
        args += ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout}"]
        if self.control_dir:
            # use the master when it is there, connect directly when it is not; never
            # become a master that would linger in the background
            args += ["-o", "ControlMaster=no", "-o", f"ControlPath={self.control_dir}/%C"]
        return args


def _die_with_parent() -> None:  # pragma: no cover - runs in the child, before exec
    """Linux: this process gets SIGTERM when the thread that started it ends, so a master
    connection never outlives rehost (PR_SET_PDEATHSIG)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


class _Masters:
    """Starts ssh master connections from one thread that lives as long as rehost: the
    parent-death signal is sent when the *thread* that started a process ends."""

    def __init__(self) -> None:
        self._requests: queue.Queue[tuple[list[str], list[Any], threading.Event]] = \
            queue.Queue()
        threading.Thread(target=self._serve, name="ssh-masters", daemon=True).start()

    def _serve(self) -> None:
        while True:
            argv, box, done = self._requests.get()
            try:
                box.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL,
                                            preexec_fn=_die_with_parent))
            except Exception as exc:
                box.append(exc)
            done.set()

    def start(self, argv: list[str]) -> subprocess.Popen[bytes]:
        box: list[Any] = []
        done = threading.Event()
        self._requests.put((argv, box, done))
        done.wait()
        if isinstance(box[0], Exception):
            raise box[0]
        proc: subprocess.Popen[bytes] = box[0]
        return proc


#: what ssh prints when its ControlPath has a socket nobody listens on (it then connects on
#: its own)
_STALE_MASTER = re.compile(r"^Control socket connect\([^\n]*\): [^\n]*\n", re.M)

_masters: _Masters | None = None
_masters_lock = threading.Lock()


def quote_argv(argv: Sequence[str]) -> str:
    """One command line for a POSIX shell in which every argument stays one word, verbatim."""
    return " ".join(shlex.quote(str(a)) for a in argv)


class Shell:
    """Runs argument lists on one host: locally (``address=None``) or over ssh."""

    def __init__(
        self,
        address: str | None = None,
        *,
        user: str = "root",
        port: int = 22,
        ssh: SshOptions | None = None,
        name: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.address = address
        self.user = user
        self.port = port
        self.ssh = ssh or SshOptions()
        self.name = name or address or "localhost"
        self.timeout = timeout
        self._master: subprocess.Popen[bytes] | None = None
        self._master_lock = threading.Lock()
        self._master_failed = 0.0  # when a master last could not connect

    @property
    def is_local(self) -> bool:
        return self.address is None

    def ssh_argv(self) -> list[str]:
        """The ssh command (without the remote command) that reaches this host."""
        if self.address is None:
            raise ValueError("a local shell has no ssh command")
        return ["ssh", *self.ssh.argv(), "-p", str(self.port), "-T", f"{self.user}@{self.address}"]

    def close(self) -> None:
        """End the shared ssh connection, if there is one (nothing to do otherwise)."""
        with self._master_lock:
            master, self._master = self._master, None
        if master is None:
            return
        master.terminate()
        try:
            master.wait(10)
        except subprocess.TimeoutExpired:
            master.kill()
            master.wait()

    def _ensure_master(self) -> None:
        """The shared connection to this host, started on first use (and again if it died).
        When it cannot be had, commands connect directly: slower, never wrong."""
        if self.is_local or not self.ssh.control_dir:
            return
        with self._master_lock:
            if self._master is not None and self._master.poll() is None:
                return
            if time.monotonic() - self._master_failed < 60:
                return  # it could not connect a moment ago: do not wait for it again
            global _masters
            with _masters_lock:
                if _masters is None:
                    _masters = _Masters()
            argv = self.ssh_argv()
            # ssh takes the first value of an option: this one before ControlMaster=no
            argv = [argv[0], "-o", "ControlMaster=yes", *argv[1:-1], "-N", argv[-1]]
            self._master = _masters.start(argv)
            # ready when the socket answers; a master that cannot connect exits
            deadline = time.monotonic() + self.ssh.connect_timeout + 5
            check = [*self.ssh_argv()[:-1], "-O", "check", self.ssh_argv()[-1]]
            while time.monotonic() < deadline and self._master.poll() is None:
                if subprocess.run(check, stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=30, check=False).returncode == 0:
                    return
                time.sleep(0.05)
            self._master_failed = time.monotonic()
            logger.debug("ssh to {}: no shared connection, each command connects", self.name)

    def command_argv(self, argv: Sequence[str]) -> list[str]:
        """The local argument list that runs ``argv`` on this host."""
        if self.is_local:
            return [str(a) for a in argv]
        # ssh joins its remaining arguments with spaces and hands them to the remote shell:
        # give it exactly one word, already quoted.
        return [*self.ssh_argv(), "--", quote_argv(argv)]

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        check: bool = True,
        input: str | bytes | None = None,
    ) -> CommandResult:
        """Run ``argv`` on the host. Raises :class:`RemoteError` on failure (when ``check``)
        or timeout; the error names the host and the command."""
        argv = [str(a) for a in argv]
        if not argv:
            raise ValueError("empty command")
        self._ensure_master()
        full = self.command_argv(argv)
        limit = self.timeout if timeout is None else timeout
        logger.debug("run on {}: {}", self.name, quote_argv(argv))
        # coreutils `timeout` bounds the local process (ssh, or the command itself); it is
        # cheaper than sh's own _timeout, which polls.
        bounded = ["timeout", "--kill-after=5", f"{limit:g}", *full]
        started = time.monotonic()
        try:
            proc = sh.Command(bounded[0])(
                *bounded[1:],
                _in=input,
                _ok_code=list(range(256)),
                _return_cmd=True,
                _tty_out=False,
                _tty_in=False,
                _decode_errors="replace",
            )
        except sh.CommandNotFound as exc:
            raise RemoteError(self.name, argv, f"cannot run {bounded[0]!r}: not found") from exc
        stderr = _text(proc.stderr)
        if not self.is_local:
            # ssh's own word that the shared connection is gone and it connected directly
            # (a master that died): not the command's output, and not a failure
            stderr = _STALE_MASTER.sub("", stderr)
        result = CommandResult(
            tuple(argv),
            int(proc.exit_code),
            _text(proc.stdout),
            stderr,
        )
        # `timeout` says 124 (or 137 after KILL); a command that exits 124 by itself, early,
        # is not a timeout
        if result.exit_code in (124, 137) and time.monotonic() - started >= limit:
            raise RemoteError(self.name, argv, f"timed out after {limit:g} s", result.exit_code,
                              result.stdout, result.stderr)
        if result.exit_code == 127 and self.is_local and "timeout:" in result.stderr:
            raise RemoteError(self.name, argv, f"cannot run {argv[0]!r}: not found")
        if not self.is_local and result.exit_code == 255:
            raise RemoteError(
                self.name, argv, "failed: ssh could not reach the host", 255, result.stdout,
                result.stderr,
            )
        if check and result.exit_code != 0:
            raise RemoteError(
                self.name, argv, f"exited with {result.exit_code}", result.exit_code,
                result.stdout, result.stderr,
            )
        return result

    # -- file primitives (CentOS 5 safe) ------------------------------------------------------

    def exists(self, path: str) -> bool:
        return self.run(["test", "-e", path], check=False).exit_code == 0

    def stat(self, path: str) -> FileStat:
        """Size, allocated bytes and owner of a file."""
        out = self.run(["stat", "-L", "-c", "%s %b %B %u %g %U %G", "--", path]).stdout
        size, blocks, bsize, uid, gid, owner, group = out.split()
        return FileStat(path, int(size), int(blocks) * int(bsize), int(uid), int(gid), owner, group)

    def rename(self, src: str, dst: str) -> None:
        """Rename ``src`` to ``dst`` without ever overwriting ``dst``.

        ``ln`` (without ``-f``) refuses an existing target and is atomic; the old name is
        removed only once the new one exists. Running it again after a crash between the two
        steps finishes the job. (coreutils 5.97 has no ``mv -n``.)
        """
        if posixpath.normpath(src) == posixpath.normpath(dst):
            raise RemoteError(self.name, ["mv", src, dst], "refused: source and target are the "
                              "same path")
        if not self.exists(src):
            if self.exists(dst):
                return  # done before
            raise RemoteError(self.name, ["mv", src, dst], f"failed: {src!r} does not exist")
        if self.exists(dst):
            links = self._same_file(src, dst)
            if links >= 2:
                # a rename interrupted between `ln` and `rm`: both names are the same file
                self.remove(src)
                return
            if links == 1:
                # one directory entry reached by two spellings (symlinked folders): removing
                # "the old name" would remove the only one
                raise RemoteError(self.name, ["mv", src, dst], "refused: source and target "
                                  "are the same directory entry")
            raise RemoteError(
                self.name, ["mv", src, dst], f"refused: {dst!r} exists and would be overwritten"
            )
        self.run(["ln", "--", src, dst])
        self.run(["rm", "-f", "--", src])

    def _same_file(self, a: str, b: str) -> int:
        """The link count of ``a`` when ``a`` and ``b`` are one file (0 when they are not)."""
        out = self.run(["stat", "-c", "%d:%i %h", "--", a, b]).stdout.split()
        if len(out) == 4 and out[0] == out[2]:
            return int(out[1])
        return 0

    def remove(self, path: str) -> None:
        self.run(["rm", "-f", "--", path])

    def free_space(self, path: str) -> int:
        """Bytes available to root's files on the filesystem holding ``path``."""
        out = self.run(["df", "-P", "-k", "--", path]).stdout.splitlines()
        # line 1, not the last: a mount point may hold a newline
        fields = out[1].split() if len(out) > 1 else []
        if len(fields) < 4 or not fields[3].isdigit():
            raise RemoteError(self.name, ["df", "-P", "-k", "--", path],
                              f"gave an answer rehost cannot read: {out!r}")
        return int(fields[3]) * 1024

    def checksum(self, path: str, algorithm: str = "sha1", *, timeout: float = 3600) -> str:
        """Hex digest of a file: ``md5``/``sha1`` with coreutils, ``sha256`` with openssl
        (CentOS 5 has no sha256sum)."""
        if algorithm in ("md5", "sha1"):
            out = self.run([f"{algorithm}sum", "--", path], timeout=timeout).stdout
            return out.split()[0].lstrip("\\")
        if algorithm == "sha256":
            # openssl 0.9.8 takes no `--`: keep a leading "-" from reading as an option
            out = self.run(["openssl", "dgst", "-sha256", _operand(path)],
                           timeout=timeout).stdout.strip()
            return out.rsplit("= ", 1)[-1].strip()
        raise ValueError(f"unknown checksum algorithm {algorithm!r}: choose md5, sha1 or sha256")

    def sample_digests(self, path: str, block: int, blocks: list[int], *,
                       timeout: float = 600) -> list[str]:
        """The md5 of each of ``blocks`` (block numbers, ``block`` bytes each) of a file,
        read with dd (CentOS 5's coreutils has it). The path and the numbers are the fixed
        script's positional parameters: data, never code."""
        script = ('f=$1; bs=$2; shift 2; for n in "$@"; do '
                  'dd if="$f" bs="$bs" skip="$n" count=1 2>/dev/null | md5sum || exit 1; done')
        out = self.run(["sh", "-c", script, "rehost-sample", path, str(block),
                        *(str(int(n)) for n in blocks)], timeout=timeout).stdout
        digests = [line.split()[0] for line in out.splitlines() if line.strip()]
        if len(digests) != len(blocks):
            raise RemoteError(self.name, ["dd", path], f"gave {len(digests)} sample digests "
                              f"for {len(blocks)} blocks")
        return digests

    def probe_paths(self, paths: Sequence[str], *,
                    timeout: float | None = None) -> dict[str, FileStat | None]:
        """What :meth:`exists` and :meth:`stat` would say of many paths, in one command:
        each path that exists maps to its :class:`FileStat`, each that does not to ``None``.
        A path that exists but cannot be stat'ed is left out (ask :meth:`stat` for its
        error). The paths are the fixed script's positional parameters: data, never code."""
        paths = [str(p) for p in paths]
        if not paths:
            return {}
        token = secrets.token_hex(8)
        out = self.run(["sh", "-c", _PROBE_PATHS, "rehost-probe", token, *paths],
                       timeout=timeout).stdout
        answers = [line.split(" ", 2)[1:] for line in out.splitlines()
                   if line.startswith(token + " ")]
        if len(answers) != len(paths):
            raise RemoteError(self.name, ["stat", *paths[:3]], f"gave {len(answers)} answers "
                              f"for {len(paths)} paths")
        found: dict[str, FileStat | None] = {}
        for path, answer in zip(paths, answers, strict=True):
            if answer == ["no"]:
                found[path] = None
            elif answer[0] == "ok" and len(answer) == 2 and len(answer[1].split()) == 7:
                size, blocks, bsize, uid, gid, owner, group = answer[1].split()
                found[path] = FileStat(path, int(size), int(blocks) * int(bsize), int(uid),
                                       int(gid), owner, group)
        return found

    def chown(self, path: str, owner: str) -> None:
        self.run(["chown", "--", owner, path])

    def read_text(self, path: str) -> str:
        return self.run(["cat", "--", path]).stdout

    def write_text(self, path: str, text: str) -> None:
        # the path is the shell's $1: data, not code
        self.run(["sh", "-c", 'cat > "$1"', "sh", path], input=text)


#: ``probe_paths``: $1 a token that marks the answer lines, then the paths. Per path one line:
#: "TOKEN no" (``test -e`` fails), "TOKEN ok SIZE BLOCKS BSIZE UID GID OWNER GROUP" (the
#: format of :meth:`Shell.stat`), or "TOKEN err" (it exists, stat failed).
_PROBE_PATHS = (
    't=$1; shift; for p in "$@"; do '
    'if test -e "$p"; then '
    's=$(stat -L -c "%s %b %B %u %g %U %G" -- "$p" 2>/dev/null) '
    '&& printf "%s ok %s\\n" "$t" "$s" || printf "%s err\\n" "$t"; '
    'else printf "%s no\\n" "$t"; fi; done'
)


def _operand(path: str) -> str:
    """``path`` spelled so that a tool without ``--`` cannot take it for an option."""
    return f"./{path}" if path.startswith("-") else path


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return data
